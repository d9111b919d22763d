"""SentencePiece-family parity and encode speed: llmlab against sentencepiece and HF tokenizers, side by side.

    .venv/bin/python benchmarks/bench_sentencepiece.py --quick   # parity strings only; about a minute
    .venv/bin/python benchmarks/bench_sentencepiece.py           # plus the planes 0, 1, 14 sweep; a few minutes

For each artifact kind llmlab reads (SentencePiece BPE .model, its tokenizer.json from transformers'
LlamaTokenizer, SentencePiece Unigram .model with nmt_nfkc / nfkc / identity, and the Precompiled
tokenizer.json that AutoTokenizer converts the nmt_nfkc model to), built at run time by the
reference libraries (llmlab.tokenizers.sp_reference): strings whose ids and decoded text equal the
reference's, out of the total; the same on the code-point sweep; and encode speed (MB/s of UTF-8,
one thread, each side warmed on the same text first, best of 3) as the ratio llmlab / reference.
The exit status is 1 when a string differs. Results: benchmarks/results/sentencepiece(_quick).md.
"""

from __future__ import annotations

import argparse
import json
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
    """(name, llmlab tokenizer, reference encode, reference decode, llmlab encode)."""
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
        out.append((name, tok, sp.encode, sp.decode, tok.encode))

    def add_hf(name: str, data: dict[str, Any]) -> None:
        hf = tokenizers.Tokenizer.from_str(json.dumps(data))
        tok = from_hf_json(data)
        out.append((name, tok, lambda s: hf.encode(s, add_special_tokens=False).ids,
                    lambda ids: hf.decode(ids, skip_special_tokens=False),
                    lambda s: tok.encode(s, allowed_special="all")))

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
        n += tok_encode(s) == ids and tok.decode(ids) == ref_decode(ids)
    return n


def speed(encode: Callable[[str], list[int]], lines: Sequence[str]) -> float:
    """MB/s of encoding `lines` one by one, warm (one untimed pass), best of 3."""
    size = sum(len(s.encode("utf-8")) for s in lines) / 1e6
    timing = time_call(lambda: [encode(s) for s in lines], repeats=3, warmup=1)
    return size / timing.min


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="parity strings only, no code-point sweep")
    parser.add_argument("--output", type=Path, help="markdown file (default: results/sentencepiece[_quick].md)")
    args = parser.parse_args(argv)

    from llmlab.tokenizers import sp_reference as ref

    load_start = load_average()[0]
    strings = ref.parity_texts()
    sweep = [] if args.quick else ref.codepoint_sweep()
    lines = ref.training_texts(300_000, seed=5)  # another seed: held-out prose, seven scripts, code-mixed
    held = lines[::max(1, len(lines) // 4000)][:4000]  # spread over all of them, for speed
    rows, results, ok = [], [], True
    for name, tok, ref_encode, ref_decode, tok_encode in artifacts():
        same = equal(tok_encode, tok, ref_encode, ref_decode, strings)
        swept = equal(tok_encode, tok, ref_encode, ref_decode, sweep) if sweep else None
        ours, theirs = speed(tok_encode, held), speed(ref_encode, held)
        ok &= same == len(strings) and (swept is None or swept == len(sweep))
        rows.append([name, f"{same} / {len(strings)}", "-" if swept is None else f"{swept} / {len(sweep)}",
                     num(ours), num(theirs), ratio(ours, theirs)])
        results.append({"artifact": name, "strings_equal": same, "strings": len(strings), "sweep_equal": swept,
                        "sweep": len(sweep), "llmlab_mb_s": ours, "reference_mb_s": theirs})
        print(" | ".join(map(str, rows[-1])), flush=True)
    info = machine_info(("sentencepiece", "tokenizers", "transformers"))
    table = markdown_table(["artifact", "strings equal", "code-point sweep equal", "llmlab MB/s", "reference MB/s",
                            "llmlab / reference"], rows, align="lllrrr")
    md = (f"# SentencePiece-family parity and encode speed\n\n{table}\n\n"
          f"Speed: {len(held)} held-out lines ({sum(len(s.encode()) for s in held) / 1e6:.2f} MB), one at a time, "
          f"one thread, warm, best of 3. Reference: sentencepiece for .model, HF tokenizers for tokenizer.json.\n\n"
          f"Machine: {describe_machine(info)}; {describe_load(load_start, load_average()[0])}.\n")
    print(md)
    write_results(args.output or RESULTS / ("sentencepiece_quick.md" if args.quick else "sentencepiece.md"), md,
                  {"rows": results, "machine": info})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
