"""`llmlab sft`: supervised fine-tuning on chats, with the loss on the assistant's tokens only
(the SFT stage of InstructGPT, Ouyang et al. 2022, https://arxiv.org/abs/2203.02155; TRL's
SFTTrainer with `assistant_only_loss`).

    setup   policy (llmlab or HF folder, LoRA optional) -> chats (files or the task world)
            -> held-out split -> ids + assistant masks (data.encode_chats; data.pack_chats with packing)
    step    lr_at(step) -> micro-batches: cross-entropy on the masked tokens -> clip_and_step
    every   log (loss, lr, grad norm, tokens/s) | eval (held-out loss, perplexity) | checkpoint
    end     the policy is saved into the run folder, so `llmlab generate --model RUN` works

The loss is the mean over every assistant token of the global batch: each micro-batch's summed
cross-entropy is divided by the batch's token count, so gradient accumulation gives the same
gradient as one big batch, and a long answer weighs more than a short one (as TRL does).
The data order is a function of the step (data.sample_indices).

Left out: resuming a stopped run (checkpoints are written, but `--resume` is the pretrain and
dpo trainers' alone for now), FSDP (DDP under torchrun only), NEFTune noise, and attention
masks that keep packed examples apart (the loss mask does; attention crosses them).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from llmlab.align.models import LoraConfig
from llmlab.config import check
from llmlab.errors import UserError
from llmlab.train.config import TrainConfig

if TYPE_CHECKING:
    from llmlab.align.data import ChatExample
    from llmlab.cli import Context


@dataclass(frozen=True)
class ChatDataConfig:
    input: tuple[str, ...] = ()  # JSONL / JSON / parquet / HF dataset folders of {"messages": [...]}; empty: task world
    n: int = 2000  # task-world chats to draw when no input is given
    seed: int = 0
    strict: bool = True  # false: skip malformed rows (listed in log.txt) instead of stopping at the first
    eval_fraction: float = 0.05  # share of rows held out for the eval loss

    def __post_init__(self) -> None:
        check(self.n >= 2, f"data.n must be at least 2, got {self.n}")
        check(0.0 <= self.eval_fraction < 0.5, f"data.eval_fraction must be in [0, 0.5), got {self.eval_fraction}")


def _sft_train() -> TrainConfig:
    return TrainConfig(max_steps=300, batch_size=16, lr=1e-4, warmup_steps=20, weight_decay=0.0, eval_every=50,
                       eval_batches=4, log_every=10, checkpoint_every=100, sample_tokens=0)


@dataclass(frozen=True)
class SFTConfig:
    """`llmlab sft`. `train.seq_len` is not used: `max_length` bounds each chat (and each pack)."""

    model: str = ""  # the model to fine-tune: an llmlab model folder or a local HF causal-LM folder
    max_length: int = 512  # tokens per chat; longer chats keep their beginning
    packing: bool = False  # concatenate chats into sequences of max_length tokens
    gradient_checkpointing: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: ChatDataConfig = field(default_factory=ChatDataConfig)
    train: TrainConfig = field(default_factory=_sft_train)

    def __post_init__(self) -> None:
        check(bool(self.model), "model is required: --model DIR (an llmlab or HF model folder)")
        check(self.max_length >= 2, f"max_length must be at least 2, got {self.max_length}")
        check(not self.train.fsdp, "train.fsdp is not supported by sft (DDP under torchrun is)")


# ---------------------------------------------------------------------- the loop


def sft(cfg: SFTConfig, *, out: Path | None = None, quiet: bool = False) -> Path:
    """Train; return the run folder (which also holds the final model)."""
    from llmlab.train import distributed as D

    info, device = D.init_distributed(cfg.train.device)
    try:
        return _sft(cfg, info, device, out=out, quiet=quiet)
    finally:
        D.shutdown(info)


def _sft(cfg: SFTConfig, info: Any, device: torch.device, *, out: Path | None, quiet: bool) -> Path:
    from llmlab.align.data import collate_chats, sample_indices
    from llmlab.align.logprobs import model_logits, nll_loss
    from llmlab.align.models import load_policy, save_policy, save_policy_checkpoint, trainable_parameters
    from llmlab.runs import progress_bar, start_run
    from llmlab.train import distributed as D
    from llmlab.train.optim import build_adamw, clip_and_step
    from llmlab.train.precision import autocast_for
    from llmlab.train.pretrain import TrainingDiverged
    from llmlab.train.schedule import lr_at
    from llmlab.train.throughput import Throughput

    tc = cfg.train
    run = start_run("sft", cfg, out=out, quiet=quiet) if info.is_main else None
    log = run.log if run is not None else (lambda message: None)
    torch.manual_seed(tc.seed)
    model, tok = load_policy(cfg.model, device=device, lora=cfg.lora if cfg.lora.r else None,
                             gradient_checkpointing=cfg.gradient_checkpointing)
    train_set, eval_set = prepare_chats(cfg, tok, log)
    optimizer = build_adamw(model, lr=tc.lr, weight_decay=tc.weight_decay, betas=(tc.beta1, tc.beta2))
    wrapped = D.wrap_model(model, info, device, fsdp=False)
    autocast = autocast_for(device, tc.dtype)
    per_rank = tc.batch_size // info.world_size
    micro = tc.micro_batch_size or per_rank
    if tc.batch_size % info.world_size or per_rank % micro:
        raise UserError(f"train.batch_size ({tc.batch_size}) must split into processes ({info.world_size}) "
                        f"and micro-batches ({micro})")
    trainable, total = trainable_parameters(model)
    log(f"sft: {type(model).__name__} from {cfg.model}, {trainable / 1e6:.2f}M of {total / 1e6:.2f}M parameters "
        f"trained; {len(train_set)} train / {len(eval_set)} held-out sequences; {info.world_size} process(es) "
        f"on {device}")
    meter = Throughput(0.0, 1.0)  # tokens/s only: an HF model has no llmlab FLOP count
    counters = {"tokens": 0, "nan_skips": 0}
    bar = progress_bar(total=tc.max_steps, desc="sft", unit="step", quiet=quiet or not info.is_main)
    interval: list[float] = []
    model.train()
    for step in range(tc.max_steps):
        torch.manual_seed(tc.seed * 2**32 + step * 1024 + info.rank)  # dropout: a function of (step, rank)
        lr = lr_at(step, lr=tc.lr, warmup_steps=tc.warmup_steps, max_steps=tc.max_steps, min_lr_ratio=tc.min_lr_ratio)
        first = step * tc.batch_size + info.rank * per_rank
        rows = [train_set[i] for i in sample_indices(first, per_rank, len(train_set), seed=tc.seed)]
        n_targets = sum(sum(e.mask[1:]) for e in rows)  # the loss's denominator over this process's batch
        loss = torch.zeros((), device=device)
        for m in range(0, per_rank, micro):
            batch = {k: v.to(device) for k, v in collate_chats(rows[m: m + micro], tok.pad_id).items()}
            targets = int(batch["loss_mask"][:, 1:].sum())
            last = m + micro >= per_rank
            sync = contextlib.nullcontext() if last or not hasattr(wrapped, "no_sync") else wrapped.no_sync()
            with sync, autocast:
                logits = model_logits(wrapped, batch["ids"], batch["attention_mask"])
                micro_loss = nll_loss(logits, batch["ids"], batch["loss_mask"]) * (targets / n_targets)
                micro_loss.backward()
            loss += micro_loss.detach()
            meter.add(int(batch["attention_mask"].sum()))
            counters["tokens"] += int(batch["attention_mask"].sum())
        loss = D.mean_over_ranks(loss, info)
        norm = clip_and_step(wrapped, optimizer, lr=lr, grad_clip=tc.grad_clip)
        done = step + 1
        if not (math.isfinite(float(loss)) and math.isfinite(norm)):
            if tc.on_nan == "stop":
                raise TrainingDiverged(f"sft diverged at step {done} (loss {float(loss)}, grad norm {norm}); "
                                       "lower train.lr or set train.on_nan=skip")
            counters["nan_skips"] += 1
            log(f"step {done}: loss {float(loss)}, grad norm {norm}; update skipped (train.on_nan=skip)")
        else:
            interval.append(float(loss))
        bar.update(1)
        if run is not None and (done % tc.log_every == 0 or done == tc.max_steps):
            tokens_per_s, _ = meter.read()
            row = {"loss": sum(interval) / len(interval)} if interval else {}
            row |= {"lr": lr, "grad_norm": norm, "tokens_per_s": round(tokens_per_s * info.world_size, 1),
                    "tokens": counters["tokens"], "nan_skips": counters["nan_skips"]}
            interval = []
            run.metrics(done, **row)
            bar.set_postfix(loss=f"{row.get('loss', float('nan')):.3f}")
        if eval_set and tc.eval_every and (done % tc.eval_every == 0 or done == tc.max_steps):
            row = evaluate_loss(wrapped, eval_set[: tc.eval_batches * tc.batch_size], tok.pad_id, micro, device,
                                autocast)
            if run is not None:
                run.metrics(done, **row)
                log(f"step {done}: held-out loss {row['eval_loss']:.4f}, perplexity {row['eval_ppl']:.2f}")
            meter.restart()
        if info.is_main and tc.checkpoint_every and done % tc.checkpoint_every == 0 and done < tc.max_steps:
            save_policy_checkpoint(run.dir / "checkpoints", done, model=model, tokenizer=tok,
                                   optimizer_state=optimizer.state_dict(), cfg=cfg, counters=dict(counters),
                                   keep=tc.keep_checkpoints)
            meter.restart()
        D.barrier(info)
    bar.close()
    if run is not None:
        save_policy(model, tok, run.dir)
        log(f"final model: {run.dir} (llmlab generate --model {run.dir} --chat --prompt ...)")
    D.barrier(info)
    return run.dir if run is not None else Path(out or ".")


def prepare_chats(cfg: SFTConfig, tok: Any, log: Any) -> tuple[list[ChatExample], list[ChatExample]]:
    """(train sequences, held-out sequences): rows -> split -> ids and masks -> packs (train only)."""
    from llmlab.align.data import encode_chats, holdout_split, load_chat_rows, pack_chats

    d = cfg.data
    rows, skipped = load_chat_rows(d.input, strict=d.strict, n=d.n, seed=d.seed)
    for message in skipped:
        log(f"skipped {message}")
    train_rows, eval_rows = holdout_split(rows, d.eval_fraction, seed=d.seed)
    train_set, counts = encode_chats(train_rows, tok, max_length=cfg.max_length)
    eval_set, _ = encode_chats(eval_rows, tok, max_length=cfg.max_length)
    log(f"data: {len(rows)} chats ({len(skipped)} skipped), {counts['truncated']} truncated to {cfg.max_length} "
        f"tokens, {counts['dropped']} dropped (no assistant token left)")
    if not train_set:
        raise UserError("no training chat has an assistant token within max_length")
    if cfg.packing:
        n = len(train_set)
        train_set = pack_chats(train_set, cfg.max_length)
        log(f"packing: {n} chats into {len(train_set)} sequences of at most {cfg.max_length} tokens")
    return train_set, eval_set


@torch.no_grad()
def evaluate_loss(model: Any, examples: list[ChatExample], pad_id: int, micro: int, device: torch.device,
                  autocast: Any) -> dict[str, float]:
    """Mean cross-entropy over every assistant token of `examples`, and its perplexity."""
    from llmlab.align.data import collate_chats
    from llmlab.align.logprobs import model_logits, nll_loss

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for m in range(0, len(examples), micro):
        batch = {k: v.to(device) for k, v in collate_chats(examples[m: m + micro], pad_id).items()}
        targets = int(batch["loss_mask"][:, 1:].sum())
        with autocast:
            logits = model_logits(model, batch["ids"], batch["attention_mask"])
        total += float(nll_loss(logits, batch["ids"], batch["loss_mask"])) * targets
        count += targets
    model.train(was_training)
    loss = total / max(count, 1)
    return {"eval_loss": loss, "eval_ppl": math.exp(min(loss, 50.0))}


def command(cfg: SFTConfig, ctx: Context) -> int:
    sft(cfg, out=ctx.out, quiet=ctx.quiet)
    return 0
