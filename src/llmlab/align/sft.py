"""`llmlab sft`: supervised fine-tuning on chats, with the loss on the assistant's tokens only
(the SFT stage of InstructGPT, Ouyang et al. 2022, https://arxiv.org/abs/2203.02155; TRL's
SFTTrainer with `assistant_only_loss`).

    setup   session -> policy (llmlab or HF folder, LoRA optional) -> chats (files or the task world)
            -> held-out split -> ids + assistant masks (data.encode_chats; data.pack_chats with packing)
    step    begin_step -> micro-batches: summed cross-entropy on the masked tokens x unit scale
            -> finish_step (reduce, clip, NaN policy, AdamW)
    every   log (loss, lr, grad norm, tokens/s) | eval (held-out loss, perplexity) | checkpoint
    end     the policy is saved into the run folder, so `llmlab generate --model RUN` works

The loss is a token mean over the global batch (train/batches.py): every assistant token of
the step weighs the same, whatever the micro-batch size or process count, and a long answer
weighs more than a short one (as TRL does). `loss_norm=sequence` makes it a mean over chats of
each chat's token mean instead, so one-token answers are not drowned by long ones. The data
order is a function of the example's position (data.sample_indices), so `--resume` continues exactly.

Left out: FSDP (DDP under torchrun only), NEFTune noise, and attention masks that keep packed
examples apart (the loss mask does; attention crosses them).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from llmlab.align.config import SFTConfig
from llmlab.align.data import (
    collate_chats,
    encode_chats,
    holdout_split,
    load_chat_rows,
    pack_chats,
    sample_indices,
)
from llmlab.align.logprobs import model_logits, nll_loss, sequence_mean_nll, target_count
from llmlab.align.models import load_trainee, save_policy, sequence_lengths, trainable_parameters
from llmlab.errors import UserError
from llmlab.train import distributed as D
from llmlab.train.batches import accumulating, global_units, plan_batches, unit_scale
from llmlab.train.checkpoint import restore, resume_step, trainable_state, with_resume
from llmlab.train.optim import build_adamw
from llmlab.train.precision import autocast_for
from llmlab.train.session import Session, open_session
from llmlab.train.step import Window, begin_step, check_eval, due, finish_step
from llmlab.train.throughput import Throughput

if TYPE_CHECKING:
    from llmlab.align.data import ChatExample


def sft(cfg: SFTConfig, *, out: Path | None = None, quiet: bool = False) -> Path:
    """Train; return the run folder (which also holds the final model)."""
    with open_session("sft", cfg, cfg.train, out=out, quiet=quiet, resume_step=resume_step(cfg)) as s:
        return _sft(cfg, s)


def _sft(cfg: SFTConfig, s: Session) -> Path:
    tc, info, device = cfg.train, s.info, s.device
    model, tok = load_trainee(cfg.model, resume=cfg.resume, lora=cfg.lora, device=device,
                              gradient_checkpointing=cfg.gradient_checkpointing)
    max_length, _ = sequence_lengths(model, cfg.max_length)
    train_set, eval_set = prepare_chats(cfg, tok, max_length, s.log)
    optimizer = build_adamw(model, lr=tc.lr, weight_decay=tc.weight_decay, betas=(tc.beta1, tc.beta2))
    start_step, counters = 0, {"tokens": 0, "nan_skips": 0}
    if cfg.resume:
        start_step, counters = restore(Path(cfg.resume), model, optimizer)
        s.log(f"resumed from {cfg.resume} at step {start_step}")
    wrapped = D.wrap_model(model, info, device, fsdp=False)
    autocast = autocast_for(device, tc.dtype)
    plan = plan_batches(tc.batch_size, tc.micro_batch_size, info.world_size)
    trainable, total = trainable_parameters(model)
    s.log(f"sft: {type(model).__name__} from {cfg.model}, {trainable / 1e6:.2f}M of {total / 1e6:.2f}M parameters "
          f"trained; {len(train_set)} train / {len(eval_set)} held-out sequences of at most {max_length} tokens; "
          f"{info.world_size} process(es) on {device}")
    meter = Throughput(0.0, 1.0)  # tokens/s only: an HF model has no llmlab FLOP count
    bar = s.progress(total=tc.max_steps, desc="sft", start=start_step)
    window = Window(counters)
    model.train()
    for step in range(start_step, tc.max_steps):
        lr = begin_step(tc, step, info)
        # sorted by length: each micro-batch pads to its own longest chat, so with micro-batches a step
        # mixing short and long chats pads the short ones less; the step's loss is the same
        rows = sorted((train_set[i] for i in sample_indices(plan.first_example(step, info.rank), plan.per_rank,
                                                            len(train_set), seed=tc.seed)), key=lambda e: len(e.ids))
        units = len(rows) if cfg.loss_norm == "sequence" else sum(sum(e.mask[1:]) for e in rows)
        scale = unit_scale(global_units(units, info, device), info)
        loss = torch.zeros((), device=device)
        for a, b, last in plan.micro_batches():
            batch = {k: v.to(device) for k, v in collate_chats(rows[a:b], tok.pad_id).items()}
            with accumulating(wrapped, last), autocast:
                logits = model_logits(wrapped, batch["ids"], batch["attention_mask"])
                micro_loss = summed_loss(logits, batch, cfg.loss_norm) * scale
                micro_loss.backward()
            loss += micro_loss.detach()
            tokens = int(batch["attention_mask"].sum())
            meter.add(tokens)
            counters["tokens"] += tokens
        loss_value = float(D.mean_over_ranks(loss, info))
        done = step + 1
        norm, applied = finish_step(wrapped, optimizer, loss_value, train=tc, lr=lr, done=done, counters=counters,
                           run_dir=s.run_dir, log=s.log)
        if applied:
            window.add({"loss": loss_value})
        bar.update(1)
        if due(done, tc.log_every, tc.max_steps):
            tokens_per_s, _ = meter.read()
            row = window.pop() | {"lr": lr, "grad_norm": norm, "tokens_per_s": round(tokens_per_s * info.world_size, 1),
                                  "tokens": counters["tokens"], "nan_skips": counters["nan_skips"]}
            s.record(done, row)
            bar.set_postfix(loss=f"{row.get('loss', float('nan')):.3f}")
        if eval_set and tc.eval_every and due(done, tc.eval_every, tc.max_steps):
            row = evaluate_loss(wrapped, eval_set[: tc.eval_batches * tc.batch_size], tok.pad_id, plan.micro, device,
                                autocast)
            s.record(done, row)
            s.log(f"step {done}: held-out loss {row['eval_loss']:.4f}, perplexity {row['eval_ppl']:.2f}")
            check_eval(row, done=done, run_dir=s.run_dir)
            meter.restart()
        if s.after_step(done, tc, lambda step: s.checkpoint(
                step, cfg=cfg, write_model=lambda d: save_policy(model, tok, d), optimizer_state=optimizer.state_dict(),
                counters=counters, keep=tc.keep_checkpoints, trainable=trainable_state(model) if cfg.lora.r else None)):
            meter.restart()
    bar.close()
    if s.is_main:
        save_policy(model, tok, s.run_dir)
        s.log(f"final model: {s.run_dir} (llmlab generate --model {s.run_dir} --chat --prompt ...)")
    s.barrier()
    return s.run_dir


def summed_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor],
                loss_norm: Literal["token", "sequence"]) -> torch.Tensor:
    """The micro-batch's loss summed over its units (tokens, or chats' token means), for unit_scale."""
    if loss_norm == "sequence":
        return sequence_mean_nll(logits, batch["ids"], batch["loss_mask"]).sum()
    return nll_loss(logits, batch["ids"], batch["loss_mask"], reduction="sum")


def prepare_chats(cfg: SFTConfig, tok: Any, max_length: int, log: Any) -> tuple[list[ChatExample], list[ChatExample]]:
    """(train sequences, held-out sequences): rows -> split -> ids and masks -> packs (train only)."""

    d = cfg.data
    rows, skipped = load_chat_rows(d.input, strict=d.strict, n=d.n, seed=d.seed)
    for message in skipped:
        log(f"skipped {message}")
    train_rows, eval_rows = holdout_split(rows, d.eval_fraction, seed=d.seed)
    train_set, counts = encode_chats(train_rows, tok, max_length=max_length)
    eval_set, _ = encode_chats(eval_rows, tok, max_length=max_length)
    log(f"data: {len(rows)} chats ({len(skipped)} skipped), {counts['truncated']} truncated to {max_length} "
        f"tokens, {counts['dropped']} dropped (no assistant token left)")
    if not train_set:
        raise UserError("no training chat has an assistant token within max_length")
    if cfg.packing:
        n = len(train_set)
        train_set = pack_chats(train_set, max_length)
        log(f"packing: {n} chats into {len(train_set)} sequences of at most {max_length} tokens")
    return train_set, eval_set


@torch.no_grad()
def evaluate_loss(model: Any, examples: list[ChatExample], pad_id: int, micro: int, device: torch.device,
                  autocast: Any) -> dict[str, float]:
    """Mean cross-entropy over every assistant token of `examples`, and its perplexity."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for m in range(0, len(examples), micro):
        batch = {k: v.to(device) for k, v in collate_chats(examples[m: m + micro], pad_id).items()}
        with autocast:
            logits = model_logits(model, batch["ids"], batch["attention_mask"])
        total += float(nll_loss(logits, batch["ids"], batch["loss_mask"], reduction="sum"))
        count += target_count(batch["loss_mask"])
    model.train(was_training)
    loss = total / max(count, 1)
    return {"eval_loss": loss, "eval_ppl": math.exp(min(loss, 50.0))}


def command(cfg: SFTConfig, ctx: Any) -> int:
    """`llmlab sft` (ctx: the command's Context); `resume=RUN` continues a stopped run."""

    sft(with_resume(cfg, ctx), out=ctx.out, quiet=ctx.quiet)
    return 0
