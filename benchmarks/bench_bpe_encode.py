"""BPE encoding against tiktoken with OpenAI's split patterns, at the real vocabulary sizes.

    .venv/bin/python benchmarks/bench_bpe_encode.py            # about a minute; the first run also trains the vocabularies (2 more)
    .venv/bin/python benchmarks/bench_bpe_encode.py --quick    # r50k only, 200 KB texts; under a minute

The real rank files (r50k_base, cl100k_base, o200k_base) cannot be downloaded here, so each is
stood in for by a vocabulary of (about) the same size and split pattern, trained by HF
`tokenizers` (not by llmlab; min_frequency 1) on bench_tokenizers.py's 10 MB corpus plus 100 MB of
the Python source installed in site-packages, and written as a .tiktoken rank file. Each
file is then read the way users read theirs: `load_tokenizer("<name>.tiktoken")` in llmlab (the
pattern comes from the file name; a chunk that is a token is taken whole, as tiktoken does) and
`tiktoken.Encoding` with OpenAI's pattern over the ranks (read as `tiktoken.load.load_tiktoken_bpe` reads
them, without its cache of earlier copies).

Texts: three held-out corpora unlike each other (English prose from /usr/share/doc, C headers,
and the multilingual vim tutors and GnuPG help texts), about 1 MB each.

Correctness first: llmlab's ids must equal tiktoken's on every text, single and batch, before
anything is timed. Then, one thread:
  load        reading the file into a tokenizer (llmlab: `load_tokenizer`, which also makes the C
              encoder's tables; tiktoken: reading the ranks + `Encoding`, which makes its CoreBPE);
  first pass  a freshly loaded tokenizer's first `encode_ordinary` of the text (llmlab's chunk
              cache empty; tiktoken has no cache);
  warm        the best of 3 later calls.
Batch: the text cut into ~4 KB documents, llmlab `encode_batch(num_workers=1 | 2)` (threads: the
C encoder releases the GIL) against tiktoken's `encode_ordinary_batch(num_threads=1 | 2)`; first
call of a fresh tokenizer and the best of 3 later calls. The pure-Python path (LLMLAB_PURE_PYTHON=1,
the C encoder's oracle) is timed too, for scale.

Target (issue 18): llmlab at least tiktoken's speed, first pass and warm, on every vocabulary and text.
Leaves out: special tokens (encode_ordinary only), tokenizers that are not byte-level BPE.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tokenizers import CACHE, MB, RESULTS, build_corpus, heldout_corpora
from llmlab.bench.harness import (
    describe_load,
    describe_machine,
    load_average,
    log_with_elapsed,
    machine_info,
    markdown_table,
    ratio,
    time_call,
    write_results,
)

# name -> (vocabulary size of the real file, the pattern HF trains with: Oniguruma reads cl100k_base's
# possessive {1,3}+ differently (regex_engines.py), so it trains with the older spelling of the same split)
VOCABS = {"r50k_base": 50_256, "cl100k_base": 100_256, "o200k_base": 199_998}
BATCH_DOC_CHARS = 4000
EXTRA_MB = 100


def rank_file(name: str, corpus: Path, log: Callable[[str], None]) -> Path:
    """`<name>.tiktoken` of a byte-level BPE that HF trained with `name`'s pattern (cached)."""
    from llmlab.tokenizers import pre_tokenizers as pt
    from llmlab.tokenizers.bytelevel import from_chars
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    out = CACHE / "tiktoken" / f"{name}.tiktoken"
    if out.exists():
        return out
    pattern = pt.CL100K if name == "cl100k_base" else pt.ENCODING_PATTERNS[name]
    log(f"training {name} ({VOCABS[name]:,} tokens) with HF tokenizers on {corpus.name}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=VOCABS[name], min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = corpus.read_text() + extra_training_text()
    blocks = [text[i:i + 100_000] for i in range(0, len(text), 100_000)]
    tok.train_from_iterator(blocks, trainer)
    ranks = sorted((i, from_chars(t)) for t, i in tok.get_vocab().items())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"".join(base64.b64encode(t) + b" %d\n" % i for i, t in ranks))
    return out


def extra_training_text(mb: float = EXTRA_MB) -> str:
    """About `mb` MB of the Python source installed beside llmlab (site-packages, in path order): the 10 MB
    corpus alone holds too few distinct words for 200,000 tokens."""
    import sysconfig

    parts, size = [], 0
    for path in sorted(Path(sysconfig.get_paths()["purelib"]).rglob("*.py")):
        if size >= mb * MB:
            break
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        parts.append(text)
        size += len(text.encode())
    return "".join(parts)


def tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """What `tiktoken.load.load_tiktoken_bpe(path)` returns, read here: tiktoken keeps a copy of every file
    it loads in a cache folder keyed by the path, so after a rank file is rewritten it reads the old one."""
    return {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in path.read_bytes().splitlines())}


def texts() -> dict[str, str]:
    return {name: "\n".join(lines) for name, lines in heldout_corpora().items()}


def docs(text: str) -> list[str]:
    return [text[i:i + BATCH_DOC_CHARS] for i in range(0, len(text), BATCH_DOC_CHARS)]


def measure(path: Path, text: str, *, repeats: int) -> dict[str, Any]:
    """Correctness, then the timings of one vocabulary on one text."""
    import tiktoken

    from llmlab.tokenizers import load_tokenizer
    from llmlab.tokenizers.pre_tokenizers import ENCODING_PATTERNS

    name = path.stem

    def ours() -> Any:
        return load_tokenizer(path)

    def theirs() -> Any:
        return tiktoken.Encoding(name, pat_str=ENCODING_PATTERNS[name], special_tokens={},
                                 mergeable_ranks=tiktoken_ranks(path))

    batch = docs(text)
    ref = theirs()
    expect = ref.encode_ordinary(text)
    ref_batch = ref.encode_ordinary_batch(batch, num_threads=1)
    checks = {"single": ours().encode_ordinary(text) == expect,
              "batch 1": ours().encode_batch(batch, num_workers=1) == ref_batch,
              "batch 2": ours().encode_batch(batch, num_workers=2) == ref_batch}
    r: dict[str, Any] = {"bytes": len(text.encode()), "tokens": len(expect), "checks": checks}
    r["llmlab load"] = time_call(ours).min
    r["tiktoken load"] = time_call(theirs).min
    tok, enc = ours(), theirs()
    r["llmlab first"] = time_call(lambda: tok.encode_ordinary(text)).min
    r["llmlab warm"] = time_call(lambda: tok.encode_ordinary(text), repeats=repeats).min
    r["tiktoken first"] = time_call(lambda: enc.encode_ordinary(text)).min
    r["tiktoken warm"] = time_call(lambda: enc.encode_ordinary(text), repeats=repeats).min
    for workers in (1, 2):
        tok = ours()

        def ours_batch(tok: Any = tok, workers: int = workers) -> Any:
            return tok.encode_batch(batch, num_workers=workers)

        r[f"llmlab batch {workers} first"] = time_call(ours_batch).min
        r[f"llmlab batch {workers} warm"] = time_call(ours_batch, repeats=repeats).min
        r[f"tiktoken batch {workers}"] = time_call(
            lambda workers=workers: enc.encode_ordinary_batch(batch, num_threads=workers), repeats=repeats).min
    os.environ["LLMLAB_PURE_PYTHON"] = "1"
    try:
        tok = ours()
        r["python first"] = time_call(lambda: tok.encode_ordinary(text)).min
        r["python warm"] = time_call(lambda: tok.encode_ordinary(text), repeats=repeats).min
    finally:
        del os.environ["LLMLAB_PURE_PYTHON"]
    return r


def mbs(r: dict[str, Any], key: str) -> float:
    return r["bytes"] / MB / r[key]


def report(results: dict[str, dict[str, dict[str, Any]]], *, header: str) -> str:
    single, batch = [], []
    for name, by_text in results.items():
        for corpus, r in by_text.items():
            ok = "ok" if all(r["checks"].values()) else "MISMATCH " + ", ".join(k for k, v in r["checks"].items() if not v)
            single.append([name, corpus, ok, f"{mbs(r, 'llmlab first'):.1f}", f"{mbs(r, 'llmlab warm'):.1f}",
                           f"{mbs(r, 'tiktoken first'):.1f}", f"{mbs(r, 'tiktoken warm'):.1f}",
                           ratio(mbs(r, "llmlab first"), mbs(r, "tiktoken first")),
                           ratio(mbs(r, "llmlab warm"), mbs(r, "tiktoken warm")),
                           f"{mbs(r, 'python first'):.1f} / {mbs(r, 'python warm'):.1f}",
                           f"{r['llmlab load']:.2f} / {r['tiktoken load']:.2f}"])
            batch.append([name, corpus, f"{mbs(r, 'llmlab batch 1 first'):.1f} / {mbs(r, 'llmlab batch 1 warm'):.1f}",
                          f"{mbs(r, 'llmlab batch 2 first'):.1f} / {mbs(r, 'llmlab batch 2 warm'):.1f}",
                          ratio(mbs(r, "llmlab batch 2 first"), mbs(r, "llmlab batch 1 first")) + " / "
                          + ratio(mbs(r, "llmlab batch 2 warm"), mbs(r, "llmlab batch 1 warm")),
                          f"{mbs(r, 'tiktoken batch 1'):.1f}", f"{mbs(r, 'tiktoken batch 2'):.1f}",
                          ratio(mbs(r, "llmlab batch 2 warm"), mbs(r, "tiktoken batch 2"))])
    return "\n\n".join([
        "# BPE encoding: llmlab against tiktoken (`benchmarks/bench_bpe_encode.py`)",
        header,
        "## One text, one thread (MB/s)",
        markdown_table(["vocabulary", "text", "ids == tiktoken", "llmlab first", "llmlab warm", "tiktoken first",
                        "tiktoken warm", "first llmlab/tiktoken", "warm llmlab/tiktoken",
                        "llmlab pure Python first / warm", "load s llmlab / tiktoken"], single,
                       align="lllrrrrrrrr"),
        f"## Batches of ~{BATCH_DOC_CHARS // 1000} KB documents (MB/s; llmlab: first call / warm)",
        markdown_table(["vocabulary", "text", "llmlab 1 thread", "llmlab 2 threads", "llmlab 2 / 1",
                        "tiktoken 1 thread", "tiktoken 2 threads", "llmlab 2 / tiktoken 2 (warm)"], batch,
                       align="llrrrrrr"),
    ]) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="r50k_base only, 200 KB of each text")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls for each warm figure (the best is kept)")
    parser.add_argument("--output", type=Path, default=None, help="where the markdown goes (default results/)")
    args = parser.parse_args(argv)
    log = log_with_elapsed()
    start_load = load_average()[0]
    corpus = build_corpus()
    names = ["r50k_base"] if args.quick else list(VOCABS)
    files = {name: rank_file(name, corpus.train, log) for name in names}
    bench_texts = texts()
    if args.quick:
        bench_texts = {k: v[:200_000] for k, v in bench_texts.items()}
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for name, path in files.items():
        for corpus_name, text in bench_texts.items():
            log(f"{name} on {corpus_name} ({len(text.encode()) / MB:.2f} MB)")
            results[name] = results.get(name, {})
            results[name][corpus_name] = measure(path, text, repeats=args.repeats)

    header = (f"{time.strftime('%Y-%m-%d %H:%M')}, {describe_machine(machine_info(('tiktoken', 'tokenizers')))}; "
              f"{describe_load(start_load, load_average()[0])}. Vocabularies: "
              + ", ".join(f"{n} {len(p.read_bytes().splitlines()):,} ranks" for n, p in files.items())
              + f" (trained by HF tokenizers with each encoding's pattern on the 10 MB benchmark corpus and {EXTRA_MB} MB"
              " of site-packages Python source).")
    md = report(results, header=header)
    print(md)
    out = args.output or RESULTS / ("bpe_encode_quick.md" if args.quick else "bpe_encode.md")
    write_results(out, md, results)
    log(f"wrote {out}")
    return 0 if all(all(r["checks"].values()) for by in results.values() for r in by.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
