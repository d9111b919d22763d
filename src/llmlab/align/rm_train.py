"""`llmlab rm train` and `llmlab rm score`: train a reward model on preference pairs; score responses with one.

    setup   session -> trunk from a policy folder (llmlab or HF; LoRA optional) + a fresh scalar head
            -> pairs (files or the task world) -> held-out split -> data.encode_pairs (truncated)
    step    begin_step -> micro-batches: rewards of the 2b chosen+rejected rows (one forward)
            -> summed bradley_terry_loss(r[:b], r[b:], margin, p_chosen) x unit scale -> finish_step
    every   log (loss, accuracy, reward margin) | eval (held-out loss and pairwise accuracy) | checkpoint
    end     save_reward_model into the run folder (and its HF SequenceClassification copy)

The loss is an example mean over the global batch's pairs (train/batches.py). The data order
is a function of the pair's position (data.sample_indices), so `--resume` continues exactly.
Rows with a soft label p_chosen (align/data.py) train on soft Bradley-Terry, the cross-entropy
against p_chosen (the held-out loss too); accuracy is always on the chosen/rejected labels.
Left out: FSDP, per-pair margins read from the data.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from llmlab.align.config import RewardModelConfig, ScoreRMConfig
from llmlab.align.data import (
    collate_pairs,
    encode_pairs,
    holdout_split,
    load_preference_rows,
    sample_indices,
    soft_labelled,
)
from llmlab.align.models import load_trainee, sequence_lengths, trainable_parameters
from llmlab.align.reward_model import (
    bradley_terry_loss,
    load_reward_model,
    reward_model_from_policy,
    save_reward_model,
    score_texts,
)
from llmlab.data.loaders import load_rows
from llmlab.model.device import pick_device
from llmlab.train import distributed as D
from llmlab.train.batches import accumulating, plan_batches, unit_scale
from llmlab.train.checkpoint import load_weights, restore, resume_step, trainable_state, with_resume
from llmlab.train.optim import build_adamw
from llmlab.train.precision import autocast_for
from llmlab.train.session import Session, open_session
from llmlab.train.step import Window, begin_step, check_eval, due, finish_step

if TYPE_CHECKING:
    from llmlab.align.data import PairExample
    from llmlab.align.reward_model import RewardModel


def train_reward_model(cfg: RewardModelConfig, *, out: Path | None = None, quiet: bool = False) -> Path:
    """Train; return the run folder (which holds the reward model)."""
    with open_session("rm", cfg, cfg.train, out=out, quiet=quiet, resume_step=resume_step(cfg)) as s:
        return _train(cfg, s)


def _train(cfg: RewardModelConfig, s: Session) -> Path:
    tc, info, device = cfg.train, s.info, s.device
    policy, tok = load_trainee(cfg.model, resume="", lora=cfg.lora, device=device,
                               gradient_checkpointing=cfg.gradient_checkpointing)
    rm = reward_model_from_policy(policy).train()
    lengths = sequence_lengths(rm, cfg.max_length, cfg.max_prompt_length)
    train_set, eval_set = prepare_pairs(cfg, tok, *lengths, s.log)
    optimizer = build_adamw(rm, lr=tc.lr, weight_decay=tc.weight_decay, betas=(tc.beta1, tc.beta2))
    start_step, counters = 0, {"pairs": 0, "nan_skips": 0}
    if cfg.resume:
        if not cfg.lora.r:  # full-weight training: the checkpoint's reward model (LoRA: base + its adapters)
            load_weights(rm, load_reward_model(cfg.resume, device=device)[0].state_dict(), Path(cfg.resume))
        start_step, counters = restore(Path(cfg.resume), rm, optimizer)
        s.log(f"resumed from {cfg.resume} at step {start_step}")
    wrapped = D.wrap_model(rm, info, device, fsdp=False)
    autocast = autocast_for(device, tc.dtype)
    plan = plan_batches(tc.batch_size, tc.micro_batch_size, info.world_size)
    trainable, total = trainable_parameters(rm)
    s.log(f"rm: trunk {type(rm.trunk).__name__} from {cfg.model}, {trainable / 1e6:.2f}M of {total / 1e6:.2f}M "
          f"parameters trained; {len(train_set)} train / {len(eval_set)} held-out pairs of at most {lengths[0]} tokens; "
          f"{info.world_size} process(es) on {device}")
    scale = unit_scale(tc.batch_size, info)  # example mean over the global batch's pairs
    bar = s.progress(total=tc.max_steps, desc="rm", start=start_step)
    window = Window(counters)
    for step in range(start_step, tc.max_steps):
        lr = begin_step(tc, step, info)
        pairs = [train_set[i] for i in sample_indices(plan.first_example(step, info.rank), plan.per_rank,
                                                      len(train_set), seed=tc.seed)]
        loss = torch.zeros((), device=device)
        stats = torch.zeros(2, device=device)  # correct pairs, summed margins (this process)
        for a, b, last in plan.micro_batches():
            part = pairs[a:b]
            batch = {k: v.to(device) for k, v in collate_pairs(part, tok.pad_id).items()}
            with accumulating(wrapped, last), autocast:
                r = wrapped(batch["ids"], batch["attention_mask"]).float()  # (2b,)
                rc, rr = r[: len(part)], r[len(part):]
                micro_loss = bradley_terry_loss(rc, rr, margin=cfg.margin, p_chosen=batch["p_chosen"]).sum() * scale
                micro_loss.backward()
            loss += micro_loss.detach()
            stats += torch.stack([(rc > rr).float().sum(), (rc - rr).sum()]).detach()
        loss_value = float(D.mean_over_ranks(loss, info))
        accuracy, margin = (D.sum_over_ranks(stats, info) / tc.batch_size).tolist()
        done = step + 1
        norm, applied = finish_step(wrapped, optimizer, loss_value, train=tc, lr=lr, done=done, counters=counters,
                           run_dir=s.run_dir, log=s.log)
        counters["pairs"] += tc.batch_size
        if applied:
            window.add({"loss": loss_value, "accuracy": accuracy, "margin": margin})
        bar.update(1)
        if due(done, tc.log_every, tc.max_steps):
            row = window.pop() | {"lr": lr, "grad_norm": norm, "pairs": counters["pairs"],
                                  "nan_skips": counters["nan_skips"]}
            s.record(done, row)
            bar.set_postfix(loss=f"{row.get('loss', float('nan')):.3f}", acc=f"{row.get('accuracy', 0.0):.2f}")
        if eval_set and tc.eval_every and due(done, tc.eval_every, tc.max_steps):
            row = evaluate_pairs(rm, eval_set[: tc.eval_batches * tc.batch_size], tok.pad_id, plan.micro, device,
                                 margin=cfg.margin)
            s.record(done, row)
            s.log(f"step {done}: held-out loss {row['eval_loss']:.4f}, accuracy {row['eval_accuracy']:.3f}")
            check_eval(row, done=done, run_dir=s.run_dir)
        s.after_step(done, tc, lambda step: s.checkpoint(
            step, cfg=cfg, write_model=lambda d: save_reward_model(rm, tok, d), optimizer_state=optimizer.state_dict(),
            counters=counters, keep=tc.keep_checkpoints, trainable=trainable_state(rm) if cfg.lora.r else None))
    bar.close()
    if s.is_main:
        save_reward_model(rm, tok, s.run_dir)
        s.log(f"reward model: {s.run_dir} (llmlab rm score --model {s.run_dir} --prompt ... --response ...)")
    s.barrier()
    return s.run_dir


def prepare_pairs(cfg: RewardModelConfig, tok: Any, max_length: int, max_prompt_length: int,
                  log: Any) -> tuple[list[PairExample], list[PairExample]]:

    d = cfg.data
    rows, skipped = load_preference_rows(d)
    for message in skipped:
        log(f"skipped {message}")
    train_rows, eval_rows = holdout_split(rows, d.eval_fraction, seed=d.seed)
    train_set, counts = encode_pairs(train_rows, tok, max_length=max_length, max_prompt_length=max_prompt_length)
    eval_set, _ = encode_pairs(eval_rows, tok, max_length=max_length, max_prompt_length=max_prompt_length)
    log(f"data: {len(rows)} pairs ({len(skipped)} skipped, {soft_labelled(rows)} with a soft label p_chosen < 1); "
        f"{counts['truncated_prompt']} prompts and {counts['truncated_response']} responses truncated")
    return train_set, eval_set


@torch.no_grad()
def evaluate_pairs(rm: RewardModel, examples: list[PairExample], pad_id: int, batch_size: int,
                   device: torch.device, *, margin: float = 0.0) -> dict[str, float]:
    """Held-out Bradley-Terry loss (soft where the pairs carry p_chosen) and pairwise accuracy."""
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
    p_chosen = torch.tensor([e.p_chosen for e in examples])
    return {"eval_loss": float(bradley_terry_loss(rc, rr, margin=margin, p_chosen=p_chosen).mean()),
            "eval_accuracy": float((rc > rr).float().mean()), "eval_margin": float((rc - rr).mean())}


# ---------------------------------------------------------------------- commands


def command(cfg: RewardModelConfig, ctx: Any) -> int:
    """`llmlab rm train` (ctx: the command's Context); `resume=RUN` continues a stopped run."""

    train_reward_model(with_resume(cfg, ctx), out=ctx.out, quiet=ctx.quiet)
    return 0


def score_command(cfg: ScoreRMConfig, ctx: Any) -> int:
    """One reward on stdout, or one JSON line {prompt, response, reward} per input row."""

    rm, tok = load_reward_model(cfg.model, device=pick_device(cfg.device))
    if not cfg.input:
        (reward,) = score_texts(rm, tok, [(cfg.prompt, cfg.response)], max_length=cfg.max_length)
        print(f"{reward:.6f}")
        return 0

    rows = load_rows(cfg.input, "responses", strict=True).rows
    rewards = score_texts(rm, tok, [(r["prompt"], r["response"]) for r in rows],
                          max_length=cfg.max_length, batch_size=cfg.batch_size)
    for row, reward in zip(rows, rewards, strict=True):
        sys.stdout.write(json.dumps({"prompt": row["prompt"], "response": row["response"], "reward": reward},
                                    ensure_ascii=False) + "\n")
    return 0

