"""SentencePiece-family parity and encode speed: llmlab against sentencepiece and HF tokenizers, side by side.

    .venv/bin/python benchmarks/bench_sentencepiece.py --quick   # parity strings only; about a minute
    .venv/bin/python benchmarks/bench_sentencepiece.py           # plus the planes 0, 1, 14 sweep; a few minutes

For each artifact kind llmlab reads (SentencePiece BPE .model, its tokenizer.json from transformers'
LlamaTokenizer, SentencePiece Unigram .model with nmt_nfkc / nfkc / identity, and the Precompiled
tokenizer.json that AutoTokenizer converts the nmt_nfkc model to), built at run time by the
reference libraries (llmlab.tokenizers.sp_reference): strings whose ids and decoded text equal the
reference's, out of the total; the same on the code-point sweep; and encode speed (MB/s of UTF-8,
one line at a time, one thread) as the ratio llmlab / reference, on four corpora (`corpora`):

    mix      held-out lines of the training mix: prose, seven scripts, code-mixed lines, indented code
    prose    held-out English prose (llmlab.data's pretraining documents)
    code     Python source (the standard library's argparse, textwrap, dataclasses, json.decoder)
    scripts  de, ru, el, hi, ar, ja sentences (Latin, Cyrillic, Greek, Devanagari, Arabic, kanji + kana)

"warm": each side encodes the corpus once untimed first, so llmlab's word caches hold every word
(SentencePiece and HF have no such cache); "cold": llmlab from empty caches (a fresh copy per run),
every word new the first time it occurs. Each figure is the best of 5 runs, llmlab and reference
taking turns, so that a burst of load on the shared machine hits both.
The exit status is 1 when a string differs. Results: benchmarks/results/sentencepiece(_quick).md.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llmlab.bench.harness import (
    describe_load,
    describe_machine,
    load_average,
    machine_info,
    markdown_table,
    num,
    ratio,
    time_call,
    write_results,
)

RESULTS = Path(__file__).parent / "results"


def artifacts() -> list[tuple[str, Any, Callable[[str], list[int]], Callable[[list[int]], str], Any]]:
    """(name, llmlab tokenizer, reference encode, reference decode, llmlab encode(tokenizer, text))."""
    import sentencepiece as spm

    import tokenizers
    from llmlab.tokenizers import sp_reference as ref
    from llmlab.tokenizers.hf_io import from_hf_json
    from llmlab.tokenizers.unigram_io import load_sentencepiece_model

    texts = ref.training_texts(200_000)
    out = []

    def add_sp(name: str, model: bytes) -> None:
        sp = spm.SentencePieceProcessor(model_proto=model)
        tok = load_sentencepiece_model(model)
        out.append((name, tok, sp.encode, sp.decode, lambda t, s: t.encode(s)))

    def add_hf(name: str, data: dict[str, Any]) -> None:
        hf = tokenizers.Tokenizer.from_str(json.dumps(data))
        tok = from_hf_json(data)
        out.append((name, tok, lambda s: hf.encode(s, add_special_tokens=False).ids,
                    lambda ids: hf.decode(ids, skip_special_tokens=False),
                    lambda t, s: t.encode(s, allowed_special="all")))

    bpe = ref.train_model("bpe", vocab_size=2000, texts=texts, **ref.LLAMA_OPTIONS)
    add_sp("SP BPE .model (Llama 2 settings: identity, byte fallback)", bpe)
    add_hf("SP BPE tokenizer.json (LlamaTokenizer)", ref.hf_json(bpe, "llama"))
    for rule in ("nmt_nfkc", "nfkc", "identity"):
        unigram = ref.train_model("unigram", vocab_size=2000, byte_fallback=True, normalization_rule_name=rule,
                                  texts=texts)
        add_sp(f"SP Unigram .model ({rule})", unigram)
        if rule == "nmt_nfkc":
            add_hf("HF Unigram Precompiled tokenizer.json (AutoTokenizer)", ref.hf_json(unigram, "auto"))
    return out


def equal(tok_encode: Callable, tok: Any, ref_encode: Callable, ref_decode: Callable, strings: Sequence[str]) -> int:
    n = 0
    for s in strings:
        ids = ref_encode(s)
        n += tok_encode(tok, s) == ids and tok.decode(ids) == ref_decode(ids)
    return n


def corpora() -> dict[str, list[str]]:
    """The speed corpora (see the module docstring): held-out lines, none longer than a paragraph."""
    import argparse as argparse_module
    import dataclasses
    import json.decoder
    import textwrap

    from llmlab.data.config import GenerateConfig
    from llmlab.data.corpora import pretrain_documents
    from llmlab.data.multilingual import LANGUAGES, language_corpus
    from llmlab.tokenizers import sp_reference as ref

    mix = ref.training_texts(300_000, seed=5)  # another seed than the models': held out
    docs = pretrain_documents(GenerateConfig(kind="pretrain", chars=150_000, seed=5))
    code = [line for m in (argparse_module, textwrap, dataclasses, json.decoder)
            for line in Path(m.__file__ or "").read_text(encoding="utf-8").splitlines() if line.strip()]
    return {"mix": mix[::max(1, len(mix) // 4000)][:4000],
            "prose": [line for d in docs for line in d.splitlines() if line.strip()],
            "code": code,
            "scripts": [line for lang in LANGUAGES if lang != "en" for line in
                        language_corpus(lang, 25_000, seed=5).splitlines() if line.strip()]}


def speeds(tok: Any, tok_encode: Callable[[Any, str], list[int]], ref_encode: Callable[[str], list[int]],
           lines: Sequence[str], *, repeats: int = 5) -> dict[str, float]:
    """MB/s of encoding `lines` one by one: llmlab warm and cold, and the reference; best of `repeats`,
    the three taking turns. `tok_encode(tok, s)` encodes with a given copy of the tokenizer."""
    size = sum(len(s.encode("utf-8")) for s in lines) / 1e6
    best = {"warm": math.inf, "cold": math.inf, "reference": math.inf}
    for encode in (lambda s: tok_encode(tok, s), ref_encode):  # warm-up: fills llmlab's caches
        for s in lines:
            encode(s)
    for _ in range(repeats):
        fresh = pickle.loads(pickle.dumps(tok))  # no caches: a tokenizer pickles without them
        runs = {"warm": lambda: [tok_encode(tok, s) for s in lines],
                "cold": lambda: [tok_encode(fresh, s) for s in lines],  # noqa: B023 (called in this iteration)
                "reference": lambda: [ref_encode(s) for s in lines]}
        for key, run in runs.items():
            best[key] = min(best[key], time_call(run).min)
    return {key: size / t for key, t in best.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="parity strings only, no code-point sweep")
    parser.add_argument("--output", type=Path, help="markdown file (default: results/sentencepiece[_quick].md)")
    args = parser.parse_args(argv)

    from llmlab.tokenizers import sp_reference as ref

    load_start = load_average()[0]
    strings = ref.parity_texts()
    sweep = [] if args.quick else ref.codepoint_sweep()
    texts = corpora()
    rows, corpus_rows, results, ok = [], [], [], True
    for name, tok, ref_encode, ref_decode, tok_encode in artifacts():
        same = equal(tok_encode, tok, ref_encode, ref_decode, strings)
        swept = equal(tok_encode, tok, ref_encode, ref_decode, sweep) if sweep else None
        ok &= same == len(strings) and (swept is None or swept == len(sweep))
        by_corpus = {}
        for corpus, lines in texts.items():
            fresh = pickle.loads(pickle.dumps(tok))
            by_corpus[corpus] = mb_s = speeds(fresh, tok_encode, ref_encode, lines)
            corpus_rows.append([name, corpus, num(mb_s["warm"]), num(mb_s["cold"]), num(mb_s["reference"]),
                                ratio(mb_s["warm"], mb_s["reference"]), ratio(mb_s["cold"], mb_s["reference"])])
            print(" | ".join(map(str, corpus_rows[-1])), flush=True)
        mix = by_corpus["mix"]
        rows.append([name, f"{same} / {len(strings)}", "-" if swept is None else f"{swept} / {len(sweep)}",
                     num(mix["warm"]), num(mix["reference"]), ratio(mix["warm"], mix["reference"])])
        results.append({"artifact": name, "strings_equal": same, "strings": len(strings), "sweep_equal": swept,
                        "sweep": len(sweep), "llmlab_mb_s": mix["warm"], "reference_mb_s": mix["reference"],
                        "corpora_mb_s": by_corpus})
        print(" | ".join(map(str, rows[-1])), flush=True)
    info = machine_info(("sentencepiece", "tokenizers", "transformers"))
    table = markdown_table(["artifact", "strings equal", "code-point sweep equal", "llmlab MB/s", "reference MB/s",
                            "llmlab / reference"], rows, align="lllrrr")
    per_corpus = markdown_table(["artifact", "corpus", "llmlab warm MB/s", "llmlab cold MB/s", "reference MB/s",
                                 "warm / reference", "cold / reference"], corpus_rows, align="llrrrrr")
    sizes = ", ".join(f"{c} {len(lines)} lines ({sum(len(s.encode()) for s in lines) / 1e6:.2f} MB)"
                      for c, lines in texts.items())
    md = (f"# SentencePiece-family parity and encode speed\n\n{table}\n\n"
          f"Speed in this table: the mix corpus, warm. Reference: sentencepiece for .model, HF tokenizers for "
          f"tokenizer.json.\n\n## Encode speed by corpus\n\n{per_corpus}\n\n"
          f"Corpora: {sizes}. One line at a time, one thread, best of 5 (llmlab warm, llmlab cold and the "
          f"reference taking turns). Warm: llmlab's word caches filled by an untimed pass over the same "
          f"lines; cold: a fresh tokenizer, empty caches.\n\n"
          f"Machine: {describe_machine(info)}; {describe_load(load_start, load_average()[0])}.\n")
    print(md)
    write_results(args.output or RESULTS / ("sentencepiece_quick.md" if args.quick else "sentencepiece.md"), md,
                  {"rows": results, "machine": info})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
