"""The `llmlab tokenizer ...` commands: thin wrappers over training, encoding, decoding and analysis."""

from __future__ import annotations

import html
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmlab.context import Context
from llmlab.data.config import GenerateConfig
from llmlab.data.corpora import pretrain_documents
from llmlab.data.loaders import require_file
from llmlab.data.multilingual import LANGUAGES, code_mixed, language_corpus, parallel_sentences
from llmlab.errors import UserError
from llmlab.plotting import new_figure, save_figure
from llmlab.runs import progress_bar, start_run
from llmlab.tokenizers.analysis import analyze, parallel_premiums, uncovered_characters
from llmlab.tokenizers.bpe import BPETokenizer
from llmlab.tokenizers.bpe_train import check_training_args, iter_file_blocks, train_bpe
from llmlab.tokenizers.bytelevel import visible
from llmlab.tokenizers.config import (
    CompareConfig,
    DecodeConfig,
    EncodeConfig,
    ExtendConfig,
    StatsConfig,
    SweepConfig,
    TrainTokenizerConfig,
    parse_size,
)
from llmlab.tokenizers.extend import extend_bpe, extension_gain, learn_domain_merges, merges_for_tokens
from llmlab.tokenizers.hf_io import load_tokenizer
from llmlab.tokenizers.sampling import balanced_corpus, language_weights
from llmlab.tokenizers.trainers import AlgorithmUnavailable, train_tokenizer
from llmlab.tokenizers.unigram import UnigramTokenizer

# Background colours for token boundaries in a terminal (ANSI 256-colour, soft tones).
_COLOURS = (153, 186, 217, 151, 223, 189)


def train(cfg: TrainTokenizerConfig, ctx: Context) -> int:
    for path in (*cfg.input, *(item.partition("=")[2] for item in cfg.language_input)):
        if require_file(path).stat().st_size == 0:
            raise UserError(f"{path}: file is empty; nothing to train on")
    num_merges = check_training_args(cfg.vocab_size, cfg.special_tokens) if cfg.algo == "bpe" else 0
    # Read (or for BPE's streamed files, check) the inputs before the run folder exists, so that a
    # bad byte leaves nothing behind.
    texts = None
    by_language = {lang: _read_text(path, cfg.errors, fix="--errors replace")
                   for lang, _, path in (i.partition("=") for i in cfg.language_input)}
    if cfg.algo != "bpe" and cfg.input:
        texts = [_read_text(path, cfg.errors, fix="--errors replace") for path in cfg.input]
    elif cfg.errors == "strict":
        for path in cfg.input:
            for _ in iter_file_blocks(path):  # the reader train_bpe uses: the same one-line error
                pass
    run = start_run("tokenizer-train", cfg, out=ctx.out, quiet=ctx.quiet)
    if by_language:
        texts = _language_texts(cfg, run, by_language)
    if cfg.algo != "bpe":
        return _train_other(cfg, run, texts)
    if texts is None and not cfg.input:
        texts = _builtin_pretrain(cfg.corpus_chars, run)
    counting = progress_bar(total=None, desc="counting words", unit="char", quiet=ctx.quiet)
    merging = progress_bar(total=num_merges, desc="merging", unit="merge", quiet=ctx.quiet)
    last_count = [0]

    def on_merge(step: int, count: int) -> None:
        merging.update(1)
        last_count[0] = count
        if step % 256 == 0:
            merging.set_postfix(pair_count=count)

    start = time.perf_counter()
    tok = train_bpe(texts, files=cfg.input, vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
                    special_tokens=cfg.special_tokens, pre_tokenizer=cfg.pre_tokenizer or "gpt2", normalizer=cfg.normalizer,
                    workers=cfg.workers or None, errors=cfg.errors, on_merge=on_merge, on_count=counting.update)
    seconds = time.perf_counter() - start
    counting.close()
    merging.close()
    tok.save(run.dir)
    merges = len(tok.merges)
    run.metrics(merges, merges=merges, vocab_size=tok.vocab_size, seconds=round(seconds, 3),
                merges_per_s=round(merges / seconds, 1) if seconds else None, last_pair_count=last_count[0])
    if merges < num_merges:
        run.log(f"stopped after {merges} of {num_merges} merges: no pair occurs {cfg.min_frequency}+ times")
    run.log(f"trained {merges} merges in {seconds:.1f} s; vocab size {tok.vocab_size}; "
            f"wrote {run.dir / 'tokenizer.json'} and vocab.txt")
    return 0


def _language_texts(cfg: TrainTokenizerConfig, run: Any, texts: dict[str, str]) -> list[str]:
    """The per-language inputs, re-sampled with p_i ∝ n_i^alpha when language_alpha is set."""
    if cfg.language_alpha is not None:
        texts = balanced_corpus(texts, cfg.language_alpha)
    shares = language_weights({k: max(1, len(v)) for k, v in texts.items()}, 1.0)
    run.log("language shares of the training text: " + ", ".join(f"{k} {v:.1%}" for k, v in shares.items()))
    return list(texts.values())


def _train_other(cfg: TrainTokenizerConfig, run: Any, texts: list[str] | None) -> int:
    """WordPiece and Unigram, through trainers.py (BPE keeps its progress bars in `train`)."""
    if texts is None:
        texts = _builtin_pretrain(cfg.corpus_chars, run)
    start = time.perf_counter()
    kw: dict[str, Any] = {"special_tokens": cfg.resolved_special_tokens}
    if cfg.algo == "unigram":
        kw.update(byte_fallback=cfg.resolved_byte_fallback, pre_tokenizer=cfg.pre_tokenizer, workers=cfg.workers or None)
    else:  # wordpiece (the config refused the options it does not take)
        kw.update(score=cfg.score, min_frequency=cfg.min_frequency)
    tok = train_tokenizer(cfg.algo, texts, vocab_size=cfg.vocab_size, **kw)
    seconds = time.perf_counter() - start
    tok.save(run.dir)
    run.metrics(0, vocab_size=tok.vocab_size, seconds=round(seconds, 3))
    run.log(f"trained {cfg.algo} in {seconds:.1f} s; vocab size {tok.vocab_size}; wrote {run.dir / 'tokenizer.json'}")
    if isinstance(tok, UnigramTokenizer):
        _report_unknown_characters(tok, texts, run)
    return 0


def _report_unknown_characters(tok: UnigramTokenizer, texts: Sequence[str], run: Any) -> None:
    """How much of the training text maps to <unk>: printed, so a lossy tokenizer never goes unnoticed."""
    missing = uncovered_characters(tok, texts)
    n = sum(missing.values())
    examples = ", ".join(repr(c) for c, _ in missing.most_common(5))
    if tok.byte_fallback:
        bytes_note = f" ({n:,} characters, e.g. {examples}, are in no piece and become byte pieces)" if n else ""
        run.log(f"0 characters of the training text map to <unk>: byte fallback is on{bytes_note}")
    else:
        run.log(f"{n:,} characters of the training text ({len(missing)} distinct{', e.g. ' + examples if n else ''}) "
                "map to <unk>" + ("; byte_fallback=true keeps them" if n else ""))
    run.metrics(0, unknown_characters=0 if tok.byte_fallback else n, characters_without_piece=n)


def _builtin_pretrain(chars: int, run: Any) -> list[str]:
    run.log(f"no --input: training on {chars:,} characters of the task world's pretraining corpus")
    return list(pretrain_documents(GenerateConfig(kind="pretrain", chars=chars)))


def _read_text(path: str, errors: str, *, fix: str = "") -> str:
    """The file's text; a bad UTF-8 byte is a one-line error naming its offset and line (errors="strict").

    `fix` names the option that replaces bad bytes instead, for commands that have one.
    """
    data = require_file(path).read_bytes()
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        hint = f"; pass {fix} to replace bad bytes" if fix else ""
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(f"{path}: not valid UTF-8 at byte offset {e.start} (line {line}){hint}") from None


def encode(cfg: EncodeConfig, ctx: Context) -> int:
    tok = load_tokenizer(cfg.tokenizer)
    text = cfg.text if cfg.text is not None else _read_text(cfg.input or "", cfg.errors, fix="errors=replace")
    allowed = "all" if cfg.allowed_special == ("all",) else cfg.allowed_special
    ids = tok.encode(text, allowed_special=allowed)
    if cfg.ids:
        print(" ".join(map(str, ids)))
    elif sys.stdout.isatty():
        pieces = [tok.decode([i]) for i in ids]
        print("".join(f"\x1b[48;5;{_COLOURS[k % len(_COLOURS)]}m\x1b[30m{p}\x1b[0m" for k, p in enumerate(pieces)))
    else:
        tokens = (tok.id_to_token(i) for i in ids)
        print(" ".join(visible(t) if isinstance(t, bytes) else t for t in tokens))
    if not ctx.quiet:
        n_bytes = len(text.encode("utf-8", errors="surrogatepass"))
        print(f"{len(ids)} tokens, {n_bytes} bytes, {n_bytes / max(1, len(ids)):.2f} bytes/token", file=sys.stderr)
    return 0


def decode(cfg: DecodeConfig, ctx: Context) -> int:
    tok = load_tokenizer(cfg.tokenizer)
    raw = cfg.ids if cfg.ids is not None else _read_text(cfg.input or "", "strict")
    ids: list[int] = []
    for item in raw.replace(",", " ").split():
        if not item.lstrip("-").isdigit():
            raise UserError(f"not a token id: {item!r}")
        ids.append(int(item))
    sys.stdout.write(tok.decode(ids) + "\n")
    return 0


# ---------------------------------------------------------------------- analysis commands


def _load_all(paths: Sequence[str]) -> dict[str, Any]:
    names = [Path(p).name or p for p in paths]
    if len(set(names)) < len(names):  # two folders of one name: tell them apart by full path
        names = list(paths)
    return {name: load_tokenizer(path) for name, path in zip(names, paths, strict=True)}


def _builtin_eval(n: int, seed: int) -> tuple[dict[str, str], list[dict[str, str]]]:
    """({"builtin:en": text, ...}, the parallel rows) of the built-in multilingual sentences."""
    rows = parallel_sentences(n, seed)
    return {f"builtin:{lang}": "\n".join(r[lang] for r in rows) + "\n" for lang in rows[0]}, rows


def _markdown(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


_STAT_COLUMNS = ("tokens", "bytes/token", "chars/token", "fertility", "continued", "UNK rate", "partial",
                 "vocab used")


def _stat_cells(s: Any) -> list[Any]:
    return [s.n_tokens, s.bytes_per_token, s.chars_per_token, s.fertility, s.continued_words, s.unk_rate,
            s.partial_rate, s.vocab_utilisation]


def stats(cfg: StatsConfig, ctx: Context) -> int:
    toks = _load_all(cfg.tokenizer)
    if cfg.eval:
        texts = {Path(p).name: _read_text(p, "strict") for p in cfg.eval}
        parallel = None
    else:
        texts, parallel = _builtin_eval(cfg.eval_sentences, seed=1)
    run = start_run("tokenizer-stats", cfg, out=ctx.out, quiet=ctx.quiet)
    results = {name: {label: analyze(tok, text, top_n=cfg.top_n) for label, text in texts.items()}
               for name, tok in toks.items()}
    rows = [[name, label, *_stat_cells(s)] for name, per in results.items() for label, s in per.items()]
    table = _markdown(("tokenizer", "eval", *_STAT_COLUMNS), rows)
    report: dict[str, Any] = {name: {label: asdict(s) for label, s in per.items()} for name, per in results.items()}
    if parallel is not None:
        prem = {name: parallel_premiums(tok, parallel) for name, tok in toks.items()}
        langs = list(parallel[0])
        table += "\nPremium (tokens relative to the parallel English text):\n\n"
        table += _markdown(("tokenizer", *langs), [[name, *(p[lang] for lang in langs)] for name, p in prem.items()])
        report["premium"] = prem
    print(table, end="")
    (run.path("stats.md")).write_text(table, encoding="utf-8")
    (run.path("stats.json")).write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    _length_histogram(results, run.path("token_lengths.png"))
    run.log(f"wrote stats.md, stats.json and token_lengths.png to {run.dir}")
    return 0


def _length_histogram(results: dict[str, dict[str, Any]], path: Path) -> None:
    """Share of tokens by length in bytes, one bar group per tokenizer (all eval texts together)."""
    totals: dict[str, dict[int, int]] = {}
    for name, per in results.items():
        hist: dict[int, int] = {}
        for s in per.values():
            for length, n in s.length_histogram.items():
                hist[length] = hist.get(length, 0) + n
        totals[name] = hist
    lengths = sorted({k for h in totals.values() for k in h})
    fig, ax = new_figure()
    width = 0.8 / max(1, len(totals))
    for i, (name, hist) in enumerate(totals.items()):
        total = sum(hist.values()) or 1
        ax.bar([x + i * width - 0.4 + width / 2 for x in lengths], [hist.get(x, 0) / total for x in lengths],
               width=width, label=name)
    ax.set_xlabel("token length (bytes)")
    ax.set_ylabel("share of tokens")
    ax.set_title("token lengths")
    ax.legend(fontsize="small")
    save_figure(fig, path)


def compare(cfg: CompareConfig, ctx: Context) -> int:
    toks = _load_all(cfg.tokenizer)
    text = cfg.text if cfg.text is not None else _read_text(cfg.input or "", "strict")
    run = start_run("tokenizer-compare", cfg, out=ctx.out, quiet=ctx.quiet)
    results = {name: analyze(tok, text) for name, tok in toks.items()}
    table = _markdown(("tokenizer", *_STAT_COLUMNS), [[n, *_stat_cells(s)] for n, s in results.items()])
    print(table)
    tty = sys.stdout.isatty()
    sections = []
    for name, tok in toks.items():
        pieces = [_shown(tok.decode_bytes([i])) for i in tok.encode(text)]
        if tty:
            shown = "".join(f"\x1b[48;5;{_COLOURS[k % len(_COLOURS)]}m\x1b[30m{p}\x1b[0m" for k, p in enumerate(pieces))
        else:
            shown = "|".join(pieces)
        print(f"{name} ({len(pieces)} tokens):\n{shown}\n")
        spans = "".join(f'<span class="t{k % len(_COLOURS)}">{html.escape(p)}</span>' for k, p in enumerate(pieces))
        sections.append(f"<h2>{html.escape(name)} ({len(pieces)} tokens)</h2>\n<pre>{spans}</pre>")
    styles = "".join(f".t{k}{{background:{_html_colour(c)}}}" for k, c in enumerate(_COLOURS))
    page = (f"<!doctype html><meta charset='utf-8'><title>tokenizer compare</title><style>{styles}"
            "pre{white-space:pre-wrap;font-size:1.1em}</style>\n" + "\n".join(sections) + "\n")
    run.path("compare.html").write_text(page, encoding="utf-8")
    run.path("compare.md").write_text(table, encoding="utf-8")
    run.log(f"wrote compare.md and compare.html to {run.dir}")
    return 0


def _shown(piece: bytes) -> str:
    """A token's text, or <0xNN> for bytes that are part of a character."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return visible(piece)


def _html_colour(ansi: int) -> str:
    """An ANSI 256-colour cube index (16..231) as #rrggbb."""
    levels = (0, 95, 135, 175, 215, 255)
    n = ansi - 16
    return "#" + "".join(f"{levels[v]:02x}" for v in (n // 36, n // 6 % 6, n % 6))


def sweep(cfg: SweepConfig, ctx: Context) -> int:
    for path in (*cfg.input, *cfg.eval):
        require_file(path)
    sizes = [parse_size(s) or 0 for s in cfg.vocab_sizes]
    train_texts = [_read_text(p, "strict") for p in cfg.input]  # read before the run folder exists
    eval_text = "".join(_read_text(p, "strict") for p in cfg.eval)
    run = start_run("tokenizer-sweep", cfg, out=ctx.out, quiet=ctx.quiet)
    train_texts = train_texts or _builtin_sweep_corpus(cfg.corpus_chars, run)
    if not cfg.eval:
        eval_text = "".join(_builtin_eval(100, seed=1)[0].values()) + "\n".join(code_mixed(60, seed=1))
    rows: list[dict[str, Any]] = []
    for algo in cfg.algos:
        for size in sizes:
            kw: dict[str, Any] = {"pre_tokenizer": cfg.pre_tokenizer} if algo == "bpe" else {}
            start = time.perf_counter()
            try:
                tok = train_tokenizer(algo, train_texts, vocab_size=size, **kw)
            except AlgorithmUnavailable as e:
                run.log(f"skipped {algo}: {e}")
                break
            seconds = time.perf_counter() - start
            s = analyze(tok, eval_text)
            rows.append({"algo": algo, "vocab_size": size, "seconds": round(seconds, 2),
                         "bytes_per_token": s.bytes_per_token, "chars_per_token": s.chars_per_token,
                         "fertility": s.fertility, "continued_words": s.continued_words, "unk_rate": s.unk_rate,
                         "partial_rate": s.partial_rate, "vocab_utilisation": s.vocab_utilisation})
            run.metrics(len(rows), **rows[-1])
    if not rows:
        raise UserError(f"none of the algorithms {', '.join(cfg.algos)} is available")
    table = _markdown(list(rows[0]), [list(r.values()) for r in rows])
    print(table, end="")
    run.path("sweep.md").write_text(table, encoding="utf-8")
    run.path("sweep.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    _sweep_plot(rows, run.path("compression.png"))
    run.log(f"wrote sweep.md, sweep.json and compression.png to {run.dir}")
    return 0


def _builtin_sweep_corpus(chars: int, run: Any) -> list[str]:
    """The task world's English corpus plus as many characters of built-in multilingual sentences."""
    english = _builtin_pretrain(chars, run)
    run.log(f"... and {chars:,} characters of built-in multilingual sentences")
    return [*english, *(language_corpus(lang, chars // len(LANGUAGES), seed=0) for lang in LANGUAGES)]


def _sweep_plot(rows: list[dict[str, Any]], path: Path) -> None:
    fig, ax = new_figure()
    for algo in dict.fromkeys(r["algo"] for r in rows):
        mine = [r for r in rows if r["algo"] == algo]
        ax.plot([r["vocab_size"] for r in mine], [r["bytes_per_token"] for r in mine], marker="o", label=algo)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("vocabulary size")
    ax.set_ylabel("bytes / token on the eval text")
    ax.set_title("compression vs vocabulary size")
    ax.legend()
    save_figure(fig, path)


def extend(cfg: ExtendConfig, ctx: Context) -> int:
    tok = load_tokenizer(cfg.tokenizer)
    if not isinstance(tok, BPETokenizer):
        raise UserError(f"{cfg.tokenizer}: extension is implemented for byte-level BPE only")
    domain = _read_text(cfg.domain, "strict") if cfg.domain is not None else None
    run = start_run("tokenizer-extend", cfg, out=ctx.out, quiet=ctx.quiet)
    if cfg.tokens:
        merges = merges_for_tokens(tok, cfg.tokens)
    else:
        merges = learn_domain_merges(tok, domain or "", cfg.num_tokens, min_frequency=cfg.min_frequency)
    extended = extend_bpe(tok, merges)
    extended.save(run.dir)
    added = extended.vocab_size - tok.vocab_size
    run.log(f"added {added} tokens ({len(merges)} merges); ids {tok.vocab_size}.. are new, the old ones unchanged; "
            f"wrote {run.dir / 'tokenizer.json'}")
    if domain is not None:
        gain = extension_gain(tok, extended, domain)
        run.metrics(0, **asdict(gain), fewer_tokens=round(gain.fewer_tokens, 4))
        print(f"domain text: {gain.tokens_before} -> {gain.tokens_after} tokens ({gain.fewer_tokens:.1%} fewer); "
              f"bytes/token {gain.bytes_per_token_before:.3f} -> {gain.bytes_per_token_after:.3f}")
    return 0
