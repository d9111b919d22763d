"""`llmlab pretrain`: next-token prediction on packed token files, resumable to the exact loss.

    setup     processes (torchrun) -> run folder -> tokenizer -> token files -> model, AdamW
    each step lr_at(step) -> micro-batches (forward, loss / accum, backward) -> clip -> AdamW step
    every k   log (loss, lr, grad norm, tokens/s, MFU) | eval (val loss, perplexity, bits per byte)
              | greedy samples | checkpoint (atomic, keep last N)

Exact resume: the batches, the learning rate and the dropout seed are functions of the
step, and a checkpoint holds the weights and the AdamW moments; so on the
same machine and process count, a run stopped at any checkpoint and resumed logs the same
losses as one that never stopped (tests/train/test_pretrain.py kills a run with SIGKILL).

A non-finite loss or gradient norm stops the run with one line that names the last good
checkpoint (`train.on_nan=stop`), or skips that step's update and counts it
(`train.on_nan=skip`).
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from llmlab.errors import UserError
from llmlab.model.llama import Transformer
from llmlab.runs import Run, progress_bar, start_run
from llmlab.train import distributed as D
from llmlab.train.checkpoint import find_checkpoint, load_trainer_state, save_checkpoint
from llmlab.train.config import PretrainConfig
from llmlab.train.optim import build_adamw, clip_and_step
from llmlab.train.precision import autocast_for, uses_bf16
from llmlab.train.schedule import lr_at
from llmlab.train.throughput import Throughput, measure_matmul_peak
from llmlab.train.token_data import SequenceSampler, TokenFile, prepare_token_files, shard_of_step
from llmlab.train.trackers import make_tracker

if TYPE_CHECKING:
    from llmlab.tokenizers.base import Tokenizer


class TrainingDiverged(UserError):
    """The loss or the gradient norm became NaN or infinite."""


@dataclass
class Setup:
    cfg: PretrainConfig
    info: D.DistInfo
    device: torch.device
    run: Run | None  # rank 0 only
    run_dir: Path
    tokenizer: Tokenizer
    train_file: TokenFile
    val_file: TokenFile


def pretrain(cfg: PretrainConfig, *, out: Path | None = None, quiet: bool = False) -> Path:
    """Train; return the run folder (which also holds the final model)."""
    info, device = D.init_distributed(cfg.train.device)
    try:
        return _pretrain(cfg, info, device, out=out, quiet=quiet)
    finally:
        D.shutdown(info)


def resumed_config(resume: str, overrides: tuple[str, ...] = (),
                   flags: dict[str, Any] | None = None) -> tuple[PretrainConfig, Path]:
    """The config a checkpoint was trained with, plus the flags and `overrides` given now (e.g. a
    larger train.max_steps)."""
    from llmlab.config import load_config

    checkpoint = find_checkpoint(resume)
    cfg = load_config(PretrainConfig, checkpoint / "config.yaml", overrides, flags=flags)
    return replace(cfg, resume=str(checkpoint)), checkpoint.parent.parent


def _pretrain(cfg: PretrainConfig, info: D.DistInfo, device: torch.device, *, out: Path | None,
              quiet: bool) -> Path:
    s = _setup(cfg, info, device, out=out, quiet=quiet)
    tc = cfg.train
    torch.manual_seed(tc.seed)
    model = Transformer(cfg.model).to(device)
    optimizer = build_adamw(model, lr=tc.lr, weight_decay=tc.weight_decay, betas=(tc.beta1, tc.beta2))
    start_step, counters = 0, {"tokens": 0, "nan_skips": 0}
    if cfg.resume:
        start_step, counters = _restore(Path(cfg.resume), model, optimizer, s)
    wrapped = D.wrap_model(model, info, device, fsdp=tc.fsdp)
    if tc.fsdp and info.enabled:  # FSDP2 shards the parameters in place: the optimiser must see the shards
        optimizer = _rebuild_optimizer(wrapped, optimizer, tc)
    forward = torch.compile(wrapped) if tc.compile else wrapped
    autocast = autocast_for(device, tc.dtype)
    train = SequenceSampler(s.train_file.array(), tc.seq_len, seed=tc.seed)
    val = SequenceSampler(s.val_file.array(), tc.seq_len, seed=tc.seed, shuffle=False, name="val")
    per_rank = tc.batch_size // info.world_size
    micro = tc.micro_batch_size or per_rank
    if per_rank % micro:
        raise UserError(f"train.micro_batch_size ({micro}) must divide the per-process batch ({per_rank})")
    accum = per_rank // micro
    peak = measure_matmul_peak(device, torch.bfloat16 if uses_bf16(device, tc.dtype) else torch.float32)
    meter = Throughput(cfg.model.flops_per_token(tc.seq_len), peak)
    tracker = make_tracker(tc.tracker, s.run_dir, cfg, tc.wandb_project) if info.is_main else None
    if s.run is not None:
        n_params = cfg.model.num_params()
        s.run.log(f"model: {n_params / 1e6:.2f}M parameters; {info.world_size} process(es) on {device}; global "
                  f"batch {tc.batch_size} x {tc.seq_len} tokens ({accum} micro-batch(es) of {micro} per process); "
                  f"{s.train_file.n_tokens:,} train / {s.val_file.n_tokens:,} val tokens")
    bar = progress_bar(total=tc.max_steps, desc="pretrain", unit="step", quiet=quiet or not info.is_main)
    bar.update(start_step)
    interval_loss, interval_steps = 0.0, 0
    for step in range(start_step, tc.max_steps):
        torch.manual_seed(tc.seed * 2**32 + step * 1024 + info.rank)  # dropout: a function of (step, rank)
        lr = lr_at(step, lr=tc.lr, warmup_steps=tc.warmup_steps, max_steps=tc.max_steps, min_lr_ratio=tc.min_lr_ratio)
        first, count = shard_of_step(step, batch_size=tc.batch_size, rank=info.rank, world_size=info.world_size)
        loss = torch.zeros((), device=device)
        for m in range(accum):
            x, y = (t.to(device, non_blocking=True) for t in train.batch(first + m * micro, micro))
            sync = contextlib.nullcontext() if m == accum - 1 or not hasattr(wrapped, "no_sync") else wrapped.no_sync()
            with sync, autocast:
                logits = forward(x).logits
                micro_loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten()) / accum
                micro_loss.backward()
            loss += micro_loss.detach()
        loss = D.mean_over_ranks(loss, info)
        norm = clip_and_step(wrapped, optimizer, lr=lr, grad_clip=tc.grad_clip)
        done = step + 1
        counters["tokens"] += tc.batch_size * tc.seq_len
        meter.add(count * tc.seq_len)
        if not (math.isfinite(float(loss)) and math.isfinite(norm)):
            what = f"loss {float(loss)}, grad norm {norm}"
            if tc.on_nan == "stop":
                last = _last_checkpoint(s.run_dir)
                raise TrainingDiverged(f"training diverged at step {done} ({what}); nothing was saved after it, "
                                       f"the last good checkpoint is {last}; lower train.lr or set "
                                       "train.on_nan=skip")
            counters["nan_skips"] += 1
            if s.run is not None:
                s.run.log(f"step {done}: {what}; update skipped (train.on_nan=skip)")
        else:
            interval_loss += float(loss)
            interval_steps += 1
        bar.update(1)
        if done % tc.log_every == 0 or done == tc.max_steps:
            tokens_per_s, mfu = meter.read()
            row = {"loss": interval_loss / interval_steps} if interval_steps else {}  # none if all skipped
            row |= {"lr": lr, "grad_norm": norm,
                   "tokens_per_s": round(tokens_per_s * info.world_size, 1), "mfu": round(mfu, 4),
                   "tokens": counters["tokens"], "nan_skips": counters["nan_skips"]}
            interval_loss, interval_steps = 0.0, 0
            bar.set_postfix(loss=f"{row.get('loss', float('nan')):.3f}", tok_s=f"{row['tokens_per_s']:.0f}", mfu=f"{mfu:.1%}")
            _record(s, tracker, done, row)
        if tc.eval_every and (done % tc.eval_every == 0 or done == tc.max_steps):
            row = evaluate(wrapped, val, s, micro, autocast)
            if info.is_main and not tc.fsdp and _sample_now(tc, done):
                row["samples"] = samples(model, s, val, tc.sample_tokens)
            _record(s, tracker, done, row)
            meter.restart()
        if (tc.checkpoint_every and done % tc.checkpoint_every == 0) or done == tc.max_steps:
            _checkpoint(s, done, wrapped, model, optimizer, counters)
            meter.restart()
    bar.close()
    if tracker is not None:
        tracker.close()
    if info.is_main:
        _write_final_model(s)
    D.barrier(info)
    return s.run_dir


# ---------------------------------------------------------------------- set-up


def _setup(cfg: PretrainConfig, info: D.DistInfo, device: torch.device, *, out: Path | None, quiet: bool) -> Setup:
    run_dir = Path(out) if out is not None else None
    if cfg.resume and run_dir is None:
        run_dir = Path(cfg.resume).parent.parent
    run = None
    if info.is_main:
        run = start_run("pretrain", cfg, out=run_dir, quiet=quiet)
        run_dir = run.dir
        if cfg.resume:
            _truncate_metrics(run.dir / "metrics.jsonl", load_trainer_state(Path(cfg.resume))["step"])
    run_dir = Path(_broadcast(str(run_dir), info))
    log = run.log if run is not None else (lambda message: None)
    tokenizer, tokenizer_json = _tokenizer(cfg, info, run_dir, log)
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise UserError(f"the tokenizer has {tokenizer.vocab_size} ids but model.vocab_size is "
                        f"{cfg.model.vocab_size}; set model.vocab_size={tokenizer.vocab_size} or more")
    eos_id = _eos_id(tokenizer)
    chars = progress_bar(total=None, desc="tokenizing", unit="char", quiet=quiet or not info.is_main)
    files = None
    if info.is_main:  # rank 0 tokenizes; the others then find the files in the cache
        files = prepare_token_files(cfg.data, tokenizer, tokenizer_json, eos_id=eos_id, log=log, progress=chars.update)
    chars.close()
    D.barrier(info)
    if files is None:
        files = prepare_token_files(cfg.data, tokenizer, tokenizer_json, eos_id=eos_id, log=log)
    return Setup(cfg, info, device, run, run_dir, tokenizer, *files)


def _broadcast(value: str, info: D.DistInfo) -> str:
    if not info.enabled:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _tokenizer(cfg: PretrainConfig, info: D.DistInfo, run_dir: Path, log) -> tuple[Tokenizer, bytes]:
    """The tokenizer of a resumed checkpoint, the user's, or a BPE trained on the data (by rank 0)."""
    from llmlab.tokenizers.hf_io import load_tokenizer

    if cfg.resume:
        source = Path(cfg.resume)
    elif cfg.data.tokenizer:
        source = Path(cfg.data.tokenizer)
    else:
        source = run_dir / "tokenizer"
        if info.is_main and not (source / "tokenizer.json").is_file():
            _train_tokenizer(cfg, source, log)
        D.barrier(info)
    path = source / "tokenizer.json" if source.is_dir() else source
    if not path.is_file():
        raise UserError(f"{source}: no tokenizer.json")
    return load_tokenizer(path), path.read_bytes()


def _train_tokenizer(cfg: PretrainConfig, directory: Path, log) -> None:
    from llmlab.data.chat import CHAT_SPECIALS
    from llmlab.tokenizers.bpe_train import train_bpe
    from llmlab.train.token_data import iter_documents

    budget, docs = 20_000_000, []  # characters: enough for a good vocabulary, bounded time
    for doc in iter_documents(cfg.data):
        docs.append(doc)
        budget -= len(doc)
        if budget <= 0:
            break
    log(f"no data.tokenizer: training a byte-level BPE of {cfg.model.vocab_size} ids on "
        f"{sum(map(len, docs)):,} characters")
    tok = train_bpe(docs, vocab_size=cfg.model.vocab_size, special_tokens=CHAT_SPECIALS)
    tok.save(directory)


def _eos_id(tokenizer: Tokenizer) -> int:
    for name in ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>"):
        if name in tokenizer.special_tokens:
            return tokenizer.special_tokens[name]
    raise UserError("the tokenizer has no end-of-text special token (<|endoftext|>, </s>, <|end_of_text|> or "
                    "<eos>) to separate documents")


def _rebuild_optimizer(wrapped: torch.nn.Module, optimizer: torch.optim.Optimizer, tc) -> torch.optim.Optimizer:
    state = optimizer.state_dict()
    fresh = build_adamw(wrapped, lr=tc.lr, weight_decay=tc.weight_decay, betas=(tc.beta1, tc.beta2))
    if state["state"]:
        fresh.load_state_dict(state)
    return fresh


# ---------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model: torch.nn.Module, val: SequenceSampler, s: Setup, micro: int, autocast: Any) -> dict[str, float]:
    """Mean val loss over the first eval_batches x batch_size validation sequences (the same every
    time), perplexity, and bits per byte (loss in bits x val tokens per val byte)."""
    tc, info = s.cfg.train, s.info
    model.eval()
    total = torch.zeros((), device=s.device)
    n_batches = 0
    for b in range(tc.eval_batches):
        first, count = shard_of_step(b, batch_size=tc.batch_size, rank=info.rank, world_size=info.world_size)
        for m in range(0, count, micro):
            x, y = (t.to(s.device) for t in val.batch(first + m, min(micro, count - m)))
            with autocast:
                logits = model(x).logits
            total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
            n_batches += 1
    model.train()
    loss = float(D.mean_over_ranks(total / n_batches, info))
    tokens_per_byte = s.val_file.n_tokens / s.val_file.n_bytes
    return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0)),
            "val_bpb": loss / math.log(2) * tokens_per_byte}


def _sample_now(tc, done: int) -> bool:
    return tc.sample_tokens > 0 and (done % tc.sample_every == 0 if tc.sample_every else True)


def samples(model: Transformer, s: Setup, val: SequenceSampler, n_tokens: int, n_prompts: int = 3) -> list[dict]:
    """Greedy continuations of the openings of the first validation documents."""
    from llmlab.model.generate import Engine, SamplingConfig

    tokens = val.tokens
    eos = _eos_id(s.tokenizer)
    starts = [0] + [int(i) + 1 for i in (tokens[:200_000] == eos).nonzero()[0][: n_prompts - 1]]
    prompts = [[int(t) for t in tokens[a: a + 8]] for a in starts if a + 8 < len(tokens)]
    n_tokens = min(n_tokens, model.cfg.max_seq_len - 8)
    model.eval()
    outputs = Engine(model).generate(prompts, SamplingConfig(max_new_tokens=n_tokens, temperature=0.0,
                                                            stop_tokens=(eos,)))
    model.train()
    decode = s.tokenizer.decode
    return [{"prompt": decode(p), "completion": decode([t for t in o if t != eos])}
            for p, o in zip(prompts, outputs, strict=True)]


# ---------------------------------------------------------------------- records and checkpoints


def _record(s: Setup, tracker, step: int, row: dict[str, Any]) -> None:
    if s.run is None:
        return
    sample_rows = row.pop("samples", None)
    s.run.metrics(step, **row)
    if tracker is not None:
        tracker.log(step, row)
    if sample_rows:
        with open(s.run_dir / "samples.jsonl", "a", encoding="utf-8") as f:
            for sample in sample_rows:
                f.write(json.dumps({"step": step, **sample}, ensure_ascii=False) + "\n")
        s.run.log(f"step {step} sample: {sample_rows[0]['prompt']!r} -> {sample_rows[0]['completion'][:120]!r}")
    if "val_loss" in row:
        s.run.log(f"step {step}: val loss {row['val_loss']:.4f}, perplexity {row['val_ppl']:.2f}, "
                  f"bits/byte {row['val_bpb']:.3f}")


def _checkpoint(s: Setup, step: int, wrapped: torch.nn.Module, model: Transformer,
                optimizer: torch.optim.Optimizer, counters: dict[str, Any]) -> None:
    model_state, optim_state = _full_states(wrapped, model, optimizer, s)
    if s.info.is_main:
        from llmlab.model.io import save_weights

        save_checkpoint(s.run_dir / "checkpoints", step,
                        write_model=lambda d: save_weights(s.cfg.model, model_state, d, s.tokenizer),
                        optimizer_state=optim_state, cfg=s.cfg, counters=dict(counters),
                        keep=s.cfg.train.keep_checkpoints)
    D.barrier(s.info)


def _full_states(wrapped: torch.nn.Module, model: Transformer, optimizer: torch.optim.Optimizer,
                 s: Setup) -> tuple[dict, dict]:
    if not (s.cfg.train.fsdp and s.info.enabled):
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}, optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(wrapped, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _restore(checkpoint: Path, model: Transformer, optimizer: torch.optim.Optimizer, s: Setup) -> tuple[int, dict]:
    from llmlab.model.io import load_model

    state = load_trainer_state(checkpoint)
    loaded, _ = load_model(checkpoint, device=s.device)
    model.load_state_dict(loaded.state_dict())
    optimizer.load_state_dict(state["optimizer"])
    if s.run is not None:
        s.run.log(f"resumed from {checkpoint} at step {state['step']}")
    return int(state["step"]), dict(state["counters"])


def _last_checkpoint(run_dir: Path) -> str:
    from llmlab.train.checkpoint import list_checkpoints

    found = list_checkpoints(run_dir / "checkpoints")
    return str(found[-1]) if found else "none (no checkpoint was written yet)"


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric rows logged after the checkpoint being resumed: they will be logged again."""
    if not path.is_file():
        return
    from llmlab.files import write_text_atomic

    kept = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
            if line.strip() and json.loads(line).get("step", 0) <= step]
    write_text_atomic(path, "".join(kept))


def _write_final_model(s: Setup) -> None:
    """Copy the last checkpoint's model files to the run folder, so `--model RUN` works."""
    import shutil

    from llmlab.train.checkpoint import list_checkpoints

    found = list_checkpoints(s.run_dir / "checkpoints")
    if not found:
        return
    for name in ("model.yaml", "model.safetensors", "tokenizer.json", "vocab.txt"):
        if (found[-1] / name).is_file():
            shutil.copy2(found[-1] / name, s.run_dir / f".{name}.tmp")
            (s.run_dir / f".{name}.tmp").replace(s.run_dir / name)
    if s.run is not None:
        s.run.log(f"final model: {s.run_dir} (llmlab generate --model {s.run_dir})")
