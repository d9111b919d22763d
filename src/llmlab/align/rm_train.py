"""`llmlab rm train` and `llmlab rm score`: train a reward model on preference pairs; score responses with one.

    setup   trunk from a policy folder (llmlab or HF; LoRA optional) + a fresh scalar head
            -> pairs (files or the task world) -> held-out split -> data.encode_pairs (truncated)
    step    lr_at(step) -> micro-batches: rewards of the 2B chosen+rejected rows (one forward)
            -> bradley_terry_loss(r[:B], r[B:], margin) -> clip_and_step
    every   log (loss, accuracy, reward margin) | eval (held-out loss and pairwise accuracy)
    end     save_reward_model into the run folder (and its HF SequenceClassification copy)

The data order is a function of the step (data.sample_indices). Left out: resuming (checkpoints
are written; `--resume` is not offered yet), FSDP, per-pair margins read from the data.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from llmlab.align.models import LoraConfig
from llmlab.config import check
from llmlab.errors import UserError
from llmlab.train.config import TrainConfig

if TYPE_CHECKING:
    from llmlab.align.data import PairExample
    from llmlab.align.reward_model import RewardModel
    from llmlab.cli import Context


@dataclass(frozen=True)
class PairDataConfig:
    input: tuple[str, ...] = ()  # JSONL / JSON / parquet / HF dataset folders of {prompt, chosen, rejected}; empty: task world
    n: int = 2000  # task-world pairs to draw when no input is given
    seed: int = 0
    strict: bool = True  # false: skip malformed rows (listed in log.txt) instead of stopping at the first
    eval_fraction: float = 0.1  # share of pairs held out for the eval loss and accuracy

    def __post_init__(self) -> None:
        check(self.n >= 2, f"data.n must be at least 2, got {self.n}")
        check(0.0 <= self.eval_fraction < 0.5, f"data.eval_fraction must be in [0, 0.5), got {self.eval_fraction}")


def _rm_train() -> TrainConfig:
    return TrainConfig(max_steps=300, batch_size=16, lr=5e-5, warmup_steps=20, weight_decay=0.0, eval_every=50,
                       eval_batches=8, log_every=10, checkpoint_every=0, sample_tokens=0)


@dataclass(frozen=True)
class RewardModelConfig:
    """`llmlab rm train`. `train.seq_len` is not used: max_length / max_prompt_length bound each pair."""

    model: str = ""  # the trunk to start from: an llmlab model folder or a local HF causal-LM folder (an SFT run)
    margin: float = 0.0  # Bradley-Terry margin: ask for r_chosen - r_rejected >= margin
    max_length: int = 512
    max_prompt_length: int = 256  # longer prompts keep their end
    gradient_checkpointing: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: PairDataConfig = field(default_factory=PairDataConfig)
    train: TrainConfig = field(default_factory=_rm_train)

    def __post_init__(self) -> None:
        check(bool(self.model), "model is required: --model DIR (an llmlab or HF model folder)")
        check(1 <= self.max_prompt_length < self.max_length,
              f"need 1 <= max_prompt_length ({self.max_prompt_length}) < max_length ({self.max_length})")
        check(not self.train.fsdp, "train.fsdp is not supported by rm (DDP under torchrun is)")


@dataclass(frozen=True)
class ScoreRMConfig:
    """`llmlab rm score`: rewards of one (prompt, response) or of a JSONL file of them."""

    model: str = ""  # a reward model folder (an `llmlab rm train` run)
    prompt: str = ""
    response: str = ""
    input: str = ""  # JSONL / JSON / parquet / HF dataset of {prompt, response}; writes one JSON line per row
    max_length: int = 1024
    batch_size: int = 16
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self) -> None:
        check(bool(self.model), "model is required: --model DIR (a reward model folder)")
        check(bool(self.input) != bool(self.prompt or self.response),
              "give either --prompt and --response, or --input FILE")


# ---------------------------------------------------------------------- the loop


def train_reward_model(cfg: RewardModelConfig, *, out: Path | None = None, quiet: bool = False) -> Path:
    """Train; return the run folder (which holds the reward model)."""
    from llmlab.train import distributed as D

    info, device = D.init_distributed(cfg.train.device)
    try:
        return _train(cfg, info, device, out=out, quiet=quiet)
    finally:
        D.shutdown(info)


def _train(cfg: RewardModelConfig, info: Any, device: torch.device, *, out: Path | None, quiet: bool) -> Path:
    from llmlab.align.data import collate_pairs, sample_indices
    from llmlab.align.models import load_policy, trainable_parameters
    from llmlab.align.reward_model import (
        bradley_terry_loss,
        pairwise_accuracy,
        reward_model_from_policy,
        save_reward_model,
    )
    from llmlab.runs import progress_bar, start_run
    from llmlab.train import distributed as D
    from llmlab.train.optim import build_adamw, clip_and_step
    from llmlab.train.precision import autocast_for
    from llmlab.train.pretrain import TrainingDiverged
    from llmlab.train.schedule import lr_at

    tc = cfg.train
    run = start_run("rm", cfg, out=out, quiet=quiet) if info.is_main else None
    log = run.log if run is not None else (lambda message: None)
    torch.manual_seed(tc.seed)
    policy, tok = load_policy(cfg.model, device=device, lora=cfg.lora if cfg.lora.r else None,
                              gradient_checkpointing=cfg.gradient_checkpointing)
    rm = reward_model_from_policy(policy).train()
    train_set, eval_set = prepare_pairs(cfg, tok, log)
    optimizer = build_adamw(rm, lr=tc.lr, weight_decay=tc.weight_decay, betas=(tc.beta1, tc.beta2))
    wrapped = D.wrap_model(rm, info, device, fsdp=False)
    autocast = autocast_for(device, tc.dtype)
    per_rank = tc.batch_size // info.world_size
    micro = tc.micro_batch_size or per_rank
    if tc.batch_size % info.world_size or per_rank % micro:
        raise UserError(f"train.batch_size ({tc.batch_size}) must split into processes ({info.world_size}) "
                        f"and micro-batches ({micro})")
    trainable, total = trainable_parameters(rm)
    log(f"rm: trunk {type(rm.trunk).__name__} from {cfg.model}, {trainable / 1e6:.2f}M of {total / 1e6:.2f}M "
        f"parameters trained; {len(train_set)} train / {len(eval_set)} held-out pairs")
    bar = progress_bar(total=tc.max_steps, desc="rm", unit="step", quiet=quiet or not info.is_main)
    sums = {"loss": 0.0, "accuracy": 0.0, "margin": 0.0, "steps": 0}
    nan_skips = 0
    for step in range(tc.max_steps):
        lr = lr_at(step, lr=tc.lr, warmup_steps=tc.warmup_steps, max_steps=tc.max_steps, min_lr_ratio=tc.min_lr_ratio)
        torch.manual_seed(tc.seed * 2**32 + step * 1024 + info.rank)
        first = step * tc.batch_size + info.rank * per_rank
        pairs = [train_set[i] for i in sample_indices(first, per_rank, len(train_set), seed=tc.seed)]
        loss = torch.zeros((), device=device)
        chosen, rejected = [], []
        for m in range(0, per_rank, micro):
            part = pairs[m: m + micro]
            batch = {k: v.to(device) for k, v in collate_pairs(part, tok.pad_id).items()}
            last = m + micro >= per_rank
            sync = contextlib.nullcontext() if last or not hasattr(wrapped, "no_sync") else wrapped.no_sync()
            with sync, autocast:
                r = wrapped(batch["ids"], batch["attention_mask"]).float()  # (2b,)
                rc, rr = r[: len(part)], r[len(part):]
                micro_loss = bradley_terry_loss(rc, rr, margin=cfg.margin).sum() / per_rank
                micro_loss.backward()
            loss += micro_loss.detach()
            chosen.append(rc.detach())
            rejected.append(rr.detach())
        loss = D.mean_over_ranks(loss, info)
        norm = clip_and_step(wrapped, optimizer, lr=lr, grad_clip=tc.grad_clip)
        done = step + 1
        if not (math.isfinite(float(loss)) and math.isfinite(norm)):
            if tc.on_nan == "stop":
                raise TrainingDiverged(f"rm diverged at step {done} (loss {float(loss)}, grad norm {norm}); "
                                       "lower train.lr or set train.on_nan=skip")
            nan_skips += 1
        else:
            rc, rr = torch.cat(chosen), torch.cat(rejected)
            sums["loss"] += float(loss)
            sums["accuracy"] += pairwise_accuracy(rc, rr)
            sums["margin"] += float((rc - rr).mean())
            sums["steps"] += 1
        bar.update(1)
        if run is not None and (done % tc.log_every == 0 or done == tc.max_steps):
            n = max(sums["steps"], 1)
            run.metrics(done, **{k: sums[k] / n for k in ("loss", "accuracy", "margin")}, lr=lr, grad_norm=norm,
                        nan_skips=nan_skips)
            sums = {"loss": 0.0, "accuracy": 0.0, "margin": 0.0, "steps": 0}
        if eval_set and tc.eval_every and (done % tc.eval_every == 0 or done == tc.max_steps):
            row = evaluate_pairs(rm, eval_set[: tc.eval_batches * tc.batch_size], tok.pad_id, micro, device,
                                 margin=cfg.margin)
            if run is not None:
                run.metrics(done, **row)
                log(f"step {done}: held-out loss {row['eval_loss']:.4f}, accuracy {row['eval_accuracy']:.3f}")
        if run is not None and tc.checkpoint_every and done % tc.checkpoint_every == 0 and done < tc.max_steps:
            save_reward_model(rm, tok, run.dir / "checkpoints" / f"step-{done:07d}")
        D.barrier(info)
    bar.close()
    if run is not None:
        save_reward_model(rm, tok, run.dir)
        log(f"reward model: {run.dir} (llmlab rm score --model {run.dir} --prompt ... --response ...)")
    D.barrier(info)
    return run.dir if run is not None else Path(out or ".")


def prepare_pairs(cfg: RewardModelConfig, tok: Any, log: Any) -> tuple[list[PairExample], list[PairExample]]:
    from llmlab.align.data import encode_pairs, holdout_split, load_preference_rows

    d = cfg.data
    rows, skipped = load_preference_rows(d.input, strict=d.strict, n=d.n, seed=d.seed)
    for message in skipped:
        log(f"skipped {message}")
    train_rows, eval_rows = holdout_split(rows, d.eval_fraction, seed=d.seed)
    train_set, counts = encode_pairs(train_rows, tok, max_length=cfg.max_length,
                                     max_prompt_length=cfg.max_prompt_length)
    eval_set, _ = encode_pairs(eval_rows, tok, max_length=cfg.max_length, max_prompt_length=cfg.max_prompt_length)
    log(f"data: {len(rows)} pairs ({len(skipped)} skipped); {counts['truncated_prompt']} prompts and "
        f"{counts['truncated_response']} responses truncated")
    return train_set, eval_set


@torch.no_grad()
def evaluate_pairs(rm: RewardModel, examples: list[PairExample], pad_id: int, batch_size: int,
                   device: torch.device, *, margin: float = 0.0) -> dict[str, float]:
    """Held-out Bradley-Terry loss and pairwise accuracy."""
    from llmlab.align.data import collate_pairs
    from llmlab.align.reward_model import bradley_terry_loss

    was_training = rm.training
    rm.eval()
    chosen, rejected = [], []
    for m in range(0, len(examples), batch_size):
        part = examples[m: m + batch_size]
        batch = collate_pairs(part, pad_id)
        r = rm(batch["ids"].to(device), batch["attention_mask"].to(device)).float()
        chosen.append(r[: len(part)])
        rejected.append(r[len(part):])
    rm.train(was_training)
    rc, rr = torch.cat(chosen), torch.cat(rejected)
    return {"eval_loss": float(bradley_terry_loss(rc, rr, margin=margin).mean()),
            "eval_accuracy": float((rc > rr).float().mean()), "eval_margin": float((rc - rr).mean())}


# ---------------------------------------------------------------------- commands


def command(cfg: RewardModelConfig, ctx: Context) -> int:
    train_reward_model(cfg, out=ctx.out, quiet=ctx.quiet)
    return 0


def score_command(cfg: ScoreRMConfig, ctx: Context) -> int:
    """One reward on stdout, or one JSON line {prompt, response, reward} per input row."""
    from llmlab.align.reward_model import load_reward_model, score_texts
    from llmlab.train.distributed import pick_device

    rm, tok = load_reward_model(cfg.model, device=pick_device(cfg.device))
    if not cfg.input:
        (reward,) = score_texts(rm, tok, [(cfg.prompt, cfg.response)], max_length=cfg.max_length)
        print(f"{reward:.6f}")
        return 0
    from llmlab.data.loaders import load_rows

    rows = load_rows(cfg.input, "responses", strict=True).rows
    rewards = score_texts(rm, tok, [(r["prompt"], r["response"]) for r in rows], max_length=cfg.max_length,
                          batch_size=cfg.batch_size)
    for row, reward in zip(rows, rewards, strict=True):
        sys.stdout.write(json.dumps({"prompt": row["prompt"], "response": row["response"], "reward": reward},
                                    ensure_ascii=False) + "\n")
    return 0
