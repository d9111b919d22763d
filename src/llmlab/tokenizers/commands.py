"""The `llmlab tokenizer ...` commands: thin wrappers over training, encoding and decoding."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from llmlab.cli import Context
from llmlab.errors import UserError
from llmlab.runs import progress_bar, start_run
from llmlab.tokenizers.config import DecodeConfig, EncodeConfig, TrainTokenizerConfig

# Background colours for token boundaries in a terminal (ANSI 256-colour, soft tones).
_COLOURS = (153, 186, 217, 151, 223, 189)


def train(cfg: TrainTokenizerConfig, ctx: Context) -> int:
    from llmlab.tokenizers.bpe_train import check_training_args, train_bpe

    for path in cfg.input:
        if not Path(path).is_file():
            raise UserError(f"{path}: no such file")
    num_merges = check_training_args(cfg.vocab_size, cfg.special_tokens)
    run = start_run("tokenizer-train", cfg, out=ctx.out, quiet=ctx.quiet)
    texts = None
    if not cfg.input:
        from llmlab.data.config import GenerateConfig
        from llmlab.data.corpora import pretrain_documents

        run.log(f"no --input: training on {cfg.corpus_chars:,} characters of the task world's pretraining corpus")
        texts = pretrain_documents(GenerateConfig(kind="pretrain", chars=cfg.corpus_chars))
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
                    special_tokens=cfg.special_tokens, pre_tokenizer=cfg.pre_tokenizer, normalizer=cfg.normalizer,
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


def _read_text(path: str, errors: str) -> str:
    data = Path(path).read_bytes() if Path(path).is_file() else None
    if data is None:
        raise UserError(f"{path}: no such file")
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not valid UTF-8 at byte offset {e.start}; pass errors=replace") from None


def encode(cfg: EncodeConfig, ctx: Context) -> int:
    from llmlab.tokenizers import load_tokenizer
    from llmlab.tokenizers.bytelevel import visible

    tok = load_tokenizer(cfg.tokenizer)
    text = cfg.text if cfg.text is not None else _read_text(cfg.input or "", cfg.errors)
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
    from llmlab.tokenizers import load_tokenizer

    tok = load_tokenizer(cfg.tokenizer)
    raw = cfg.ids if cfg.ids is not None else _read_text(cfg.input or "", "strict")
    ids: list[int] = []
    for item in raw.replace(",", " ").split():
        if not item.lstrip("-").isdigit():
            raise UserError(f"not a token id: {item!r}")
        ids.append(int(item))
    sys.stdout.write(tok.decode(ids) + "\n")
    return 0
