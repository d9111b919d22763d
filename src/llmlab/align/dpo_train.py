"""`llmlab dpo`: offline preference optimisation (DPO and its variants in align/dpo.py) of a policy
against a frozen reference, resumable to the exact loss, DDP under torchrun.

    setup    session -> policy (+ LoRA) -> rows -> held-out split -> PairExample ids -> reference:
               copy        a second frozen model, run on every batch
               precompute  one pass over the data storing each pair's reference log-probs, then freed
               (none)      reference-free losses (dpo.LOSSES[loss].reference_free: simpo, orpo)
    step     begin_step -> [KTO: the step's KL estimate] -> micro-batches: one forward of the 2b
             chosen+rejected sequences -> summed log-probs -> preference_loss over the global batch
             -> backward -> finish_step (reduce, clip, NaN policy, AdamW)
    log      loss, rewards/chosen, rewards/rejected, margin, accuracy, logps/chosen, logps/rejected,
             grad_norm, lr (+ kl for KTO, nll for ORPO and RPO); warnings once each in log.txt
    eval     every train.eval_every steps: the same loss and accuracy on held-out pairs
    end      the policy folder in the run folder (`llmlab dpo` then writes curves.png and eval.md:
             eval/prefs.py)

The loss of a step is the mean over the global batch's pairs, plus the NLL weight times the mean
over the global batch's chosen tokens (train/batches.py's rule for both), so it does not change
with the micro-batch size or the process count.

Soft labels: a pair's p_chosen (align/data.py) makes its loss the expected loss over its label
(dpo.soft_label_loss; sigmoid DPO becomes cDPO with eps = 1 - p_chosen per pair); a loss that takes
none (robust, KTO, an NLL term) is refused before training starts (preference.require_soft_labels).

KTO is trained from the same pairs, unpaired: each chosen response is a desirable example and
each rejected one an undesirable example. Its reference point z = KL(pi || pi_ref) is estimated,
as in the KTO paper and TRL, on mismatched pairs: prompt i with the chosen response of row
i + 1 (fixed at encoding time, so `precompute` can store its reference log-prob too); the
estimate is the mean over the step's global batch, detached, computed before its micro-batches.

ORPO adds the chosen responses' NLL (logprobs.nll_loss, weighted by orpo_sft_weight) to the
odds-ratio term; `rpo_alpha` adds the same term to any other loss (RPO, Pang et al. 2024,
https://arxiv.org/abs/2404.19733: DPO + alpha NLL(chosen), TRL's loss_type=["sigmoid", "sft"]), which
keeps the chosen responses' likelihood from falling with the rejected ones'. Left out: FSDP (DDP
only), LoRA's "adapters off" reference (with LoRA the reference is a second model too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmlab.align.config import DPOConfig
from llmlab.align.data import (
    PairExample,
    collate_pairs,
    encode_pairs,
    holdout_split,
    load_preference_rows,
    sample_indices,
    soft_labelled,
)
from llmlab.align.dpo import LOSSES
from llmlab.align.models import (
    ChatTokenizer,
    load_policy,
    load_trainee,
    save_policy,
    sequence_lengths,
    trainable_parameters,
)
from llmlab.align.preference import nll_weight_of, preference_loss, require_soft_labels
from llmlab.align.reference import forward_sequences, kl_batch, mismatched_responses, reference_logprobs
from llmlab.data.config import GenerateConfig, TaskConfig
from llmlab.data.corpora import pref_rows
from llmlab.errors import UserError
from llmlab.train import distributed as D
from llmlab.train.batches import accumulating, global_units, plan_batches
from llmlab.train.checkpoint import restore, resume_step, trainable_state
from llmlab.train.optim import build_adamw
from llmlab.train.precision import autocast_for
from llmlab.train.session import Session, open_session
from llmlab.train.step import begin_step, check_eval, due, finish_step

METRICS = ("loss", "rewards/chosen", "rewards/rejected", "margin", "accuracy", "logps/chosen", "logps/rejected")


@dataclass
class PairData:
    """Encoded pairs plus, for KTO, each prompt's mismatched response (the KL estimate's input), and,
    with reference=precompute, the reference's summed log-probs (N, 3): chosen, rejected, mismatched."""

    examples: list[PairExample]
    kl_responses: list[list[int]] | None = None
    ref: torch.Tensor | None = None


def dpo(cfg: DPOConfig, *, out: Path | None = None, quiet: bool = False) -> Path:
    """Train; return the run folder, which also holds the final policy."""
    with open_session("dpo", cfg, cfg.train, out=out, quiet=quiet, resume_step=resume_step(cfg)) as s:
        return _train(cfg, s)


# ---------------------------------------------------------------------- warnings


def likelihood_collapse(chosen_logps: list[float], margins: list[float], *, window: int) -> bool:
    """True when the mean chosen log-prob of the last `window` steps is clearly below that of the first
    `window` (by more than max(1 nat, 5%)) while the margin rose: the policy is lowering both
    responses' likelihoods, the rejected one faster (Pal et al. 2024, https://arxiv.org/abs/2402.13228).

    >>> likelihood_collapse([-10, -10, -14, -15], [0.1, 0.1, 0.5, 0.6], window=2)
    True
    """
    if len(chosen_logps) < 2 * window:
        return False
    first_c, last_c = sum(chosen_logps[:window]) / window, sum(chosen_logps[-window:]) / window
    first_m, last_m = sum(margins[:window]) / window, sum(margins[-window:]) / window
    return last_c < first_c - max(1.0, 0.05 * abs(first_c)) and last_m > first_m


class Watch:
    """The run's warnings, each written to log.txt once."""

    def __init__(self, cfg: DPOConfig, log: Any, warned: list[str]) -> None:
        self.cfg, self.log, self.warned = cfg, log, warned
        self.chosen: list[float] = []
        self.margins: list[float] = []

    def _once(self, name: str, message: str) -> None:
        if name not in self.warned:
            self.warned.append(name)
            self.log(f"warning: {message}")

    def update(self, step: int, row: dict[str, float]) -> None:
        if "margin" not in row:
            return
        self.chosen.append(row["logps/chosen"])
        self.margins.append(row["margin"])
        window = max(5, min(50, self.cfg.train.max_steps // 10))  # batches differ: compare averages
        if likelihood_collapse(self.chosen, self.margins, window=window):
            self._once("collapse", f"step {step}: the chosen responses' log-prob fell from "
                       f"{sum(self.chosen[:window]) / window:.2f} to {sum(self.chosen[-window:]) / window:.2f} while "
                       "the margin rose: both likelihoods are collapsing (the rejected faster); consider a lower lr, "
                       "a larger beta, or rpo_alpha > 0 (an SFT term on the chosen responses)")
        if row["margin"] > self.cfg.warn_margin:
            self._once("margin", f"step {step}: the mean reward margin is {row['margin']:.1f} (> warn_margin "
                       f"{self.cfg.warn_margin}): the policy is running far from the reference; consider a larger "
                       "beta, a lower lr, or the ipo loss")


# ---------------------------------------------------------------------- the run


def _train(cfg: DPOConfig, s: Session) -> Path:
    tc, info, device = cfg.train, s.info, s.device
    model, tok = load_trainee(cfg.model, resume=cfg.resume, lora=cfg.lora, device=device,
                              gradient_checkpointing=cfg.gradient_checkpointing)
    lengths = sequence_lengths(model, cfg.max_length, cfg.max_prompt_length)
    rows, held_rows = preference_rows(cfg, s.log)
    if n_soft := soft_labelled(rows + held_rows):
        require_soft_labels(cfg)
        s.log(f"soft labels: {n_soft} of {len(rows) + len(held_rows)} pairs have p_chosen < 1 "
              "(each trains on the expected loss over its label: dpo.soft_label_loss)")
    data = _encode(cfg, rows, tok, *lengths, s.log)
    held = _encode(cfg, held_rows[: tc.eval_batches * tc.batch_size] if tc.eval_every else [], tok, *lengths,
                   lambda message: None)
    plan = plan_batches(tc.batch_size, tc.micro_batch_size, info.world_size)
    if len(data.examples) < tc.batch_size:
        raise UserError(f"{len(data.examples)} training pairs is fewer than train.batch_size ({tc.batch_size})")
    ref_model = _reference(cfg, s, tok, [data, held], plan.micro)
    optimizer = build_adamw(model, lr=tc.lr, weight_decay=tc.weight_decay, betas=(tc.beta1, tc.beta2))
    start_step, counters = 0, {"nan_skips": 0, "pairs": 0, "warned": []}
    if cfg.resume:
        start_step, counters = restore(Path(cfg.resume), model, optimizer)
        counters["warned"] = list(counters.get("warned", []))
        s.log(f"resumed from {cfg.resume} at step {start_step}")
    wrapped = D.wrap_model(model, info, device, fsdp=False)
    autocast = autocast_for(device, tc.dtype)
    watch = Watch(cfg, s.log, counters["warned"])
    n_train, n_all = trainable_parameters(model)
    reference = "none" if LOSSES[cfg.loss].reference_free else cfg.reference
    s.log(f"dpo: loss {cfg.loss}, beta {cfg.beta}, reference {reference}; {len(data.examples)} pairs "
          f"({len(held_rows)} held out) of at most {lengths[0]} tokens; {n_train / 1e6:.2f}M of {n_all / 1e6:.2f}M "
          f"parameters trained on {device}, {info.world_size} process(es); global batch {tc.batch_size} pairs "
          f"({plan.accum} micro-batch(es) of {plan.micro} per process)")
    bar = s.progress(total=tc.max_steps, desc="dpo", start=start_step)
    nll_weight = nll_weight_of(cfg)
    for step in range(start_step, tc.max_steps):
        lr = begin_step(tc, step, info)
        mine = sample_indices(plan.first_example(step, info.rank), plan.per_rank, len(data.examples), seed=tc.seed)
        kl = _kl_estimate(cfg, wrapped, ref_model, data, mine, tok.pad_id, device, autocast, s, plan)
        n_nll_tokens = global_units(sum(len(data.examples[i].chosen_ids) for i in mine), info, device) \
            if nll_weight else None
        loss = torch.zeros((), device=device)
        stats: dict[str, torch.Tensor] = {}
        for a, b, last in plan.micro_batches():
            idx = mine[a:b]
            with accumulating(wrapped, last):
                micro_loss, micro_stats = _micro_loss(cfg, wrapped, ref_model, data, idx, tok.pad_id, device,
                                                      autocast, kl=kl, n_pairs=tc.batch_size,
                                                      n_nll_tokens=n_nll_tokens)
                (micro_loss * info.world_size).backward()  # DDP averages: the sum over ranks is the global mean
            loss += micro_loss.detach() * info.world_size
            for name, value in micro_stats.items():
                stats[name] = stats.get(name, 0.0) + value.detach().float()
        names = sorted(stats)
        loss_value = float(D.mean_over_ranks(loss, info))
        per_pair = (D.sum_over_ranks(torch.stack([stats[n] for n in names]), info) / tc.batch_size).tolist()
        done = step + 1
        norm, applied = finish_step(wrapped, optimizer, loss_value, train=tc, lr=lr, done=done, counters=counters,
                           run_dir=s.run_dir, log=s.log)
        counters["pairs"] += tc.batch_size
        bar.update(1)
        if applied and due(done, tc.log_every, tc.max_steps):
            row = {"loss": loss_value, **dict(zip(names, per_pair, strict=True)), "grad_norm": norm, "lr": lr,
                   "pairs": counters["pairs"], "nan_skips": counters["nan_skips"]}
            watch.update(done, row)
            bar.set_postfix(loss=f"{loss_value:.3f}", acc=f"{row['accuracy']:.2f}", margin=f"{row['margin']:.2f}")
            s.record(done, row)
        if held.examples and tc.eval_every and due(done, tc.eval_every, tc.max_steps):
            row = evaluate_pairs(cfg, wrapped, ref_model, held, tok.pad_id, device, autocast, plan.micro)
            s.record(done, row)
            s.log(f"step {done}: held-out loss {row['eval_loss']:.4f}, accuracy {row['eval_accuracy']:.3f}, "
                  f"margin {row['eval_margin']:.3f}")
            check_eval(row, done=done, run_dir=s.run_dir)
        s.after_step(done, tc, lambda step: s.checkpoint(
            step, cfg=cfg, write_model=lambda d: save_policy(model, tok, d), optimizer_state=optimizer.state_dict(),
            counters=counters, keep=tc.keep_checkpoints, trainable=trainable_state(model) if cfg.lora.r else None))
    bar.close()
    if s.is_main:
        save_policy(model, tok, s.run_dir)
        s.log(f"final policy: {s.run_dir} (llmlab chat --model {s.run_dir})")
    s.barrier()
    return s.run_dir


def _micro_loss(cfg: DPOConfig, model: nn.Module, ref_model: nn.Module | None, data: PairData, idx: list[int],
                pad_id: int, device: torch.device, autocast: Any, *, kl: torch.Tensor | None, n_pairs: int | None,
                n_nll_tokens: int | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The micro-batch's share of the loss (its pairs' losses over n_pairs, its chosen tokens' NLL over
    n_nll_tokens) and its per-pair sums of the logged metrics."""
    examples = [data.examples[i] for i in idx]
    batch = collate_pairs(examples, pad_id)
    sums, counts, logits = forward_sequences(model, batch, device, autocast)
    ref = None
    if data.ref is not None:
        table = data.ref[idx].to(device)  # (b, 3)
        ref = torch.cat([table[:, 0], table[:, 1]])
    elif ref_model is not None:
        with torch.no_grad():
            ref = forward_sequences(ref_model, batch, device, autocast)[0]
    return preference_loss(cfg, sums, counts, ref, logits=logits if nll_weight_of(cfg) else None, batch=batch,
                           kl=kl, n_pairs=n_pairs, n_nll_tokens=n_nll_tokens, p_chosen=batch["p_chosen"])


@torch.no_grad()
def _kl_estimate(cfg: DPOConfig, model: nn.Module, ref_model: nn.Module | None, data: PairData, mine: list[int],
                 pad_id: int, device: torch.device, autocast: Any, s: Session, plan: Any) -> torch.Tensor | None:
    """KTO's reference point for the step: mean of log pi - log pi_ref of the mismatched responses over
    the global batch (so it does not depend on the micro-batch size); None for the other losses."""
    if not LOSSES[cfg.loss].takes_kl:
        return None
    total = torch.zeros((), device=device)
    for a, b, _ in plan.micro_batches():
        idx = mine[a:b]
        batch = kl_batch([data.examples[i] for i in idx], [data.kl_responses[i] for i in idx], pad_id)
        policy = forward_sequences(model, batch, device, autocast)[0].float()
        ref = data.ref[idx, 2].to(device) if data.ref is not None else \
            forward_sequences(ref_model, batch, device, autocast)[0].float()
        total += (policy - ref).sum()
    return D.sum_over_ranks(total, s.info) / plan.batch_size


@torch.no_grad()
def evaluate_pairs(cfg: DPOConfig, model: nn.Module, ref_model: nn.Module | None, held: PairData, pad_id: int,
                   device: torch.device, autocast: Any, micro: int) -> dict[str, float]:
    """The training loss, accuracy and margin on held-out pairs (KTO with z = 0: no estimate is kept)."""
    was_training = model.training
    model.eval()
    total: dict[str, float] = {}
    for start in range(0, len(held.examples), micro):
        idx = list(range(start, min(start + micro, len(held.examples))))
        loss, stats = _micro_loss(cfg, model, ref_model, held, idx, pad_id, device, autocast, kl=None,
                                  n_pairs=None, n_nll_tokens=None)
        for name, value in {"loss": loss * len(idx), **stats}.items():
            total[name] = total.get(name, 0.0) + float(value)
    model.train(was_training)
    n = len(held.examples)
    return {"eval_loss": total["loss"] / n, "eval_accuracy": total["accuracy"] / n, "eval_margin": total["margin"] / n}


# ---------------------------------------------------------------------- set-up


def preference_rows(cfg: DPOConfig, log: Any = print) -> tuple[list[dict], list[dict]]:
    """(training rows, held-out rows): the user's rows split by data.eval_fraction, or the task world's
    train split plus eval.n_pairs pairs of its eval split. The evaluation after training reads the
    same held-out rows."""

    rows, skipped = load_preference_rows(cfg.data)
    for message in skipped:
        log(f"skipped row: {message}")
    if cfg.data.input:
        return holdout_split(rows, cfg.data.eval_fraction, seed=cfg.data.seed)
    return rows, task_world_pairs(cfg.eval.n_pairs, seed=cfg.eval.seed, tasks=cfg.eval.tasks)


def task_world_pairs(n: int, *, seed: int, tasks: TaskConfig | None = None) -> list[dict]:
    """`n` preference pairs from the task world's eval split (no prompt of it is in the train split)."""
    if n == 0:
        return []
    return list(pref_rows(GenerateConfig(kind="prefs", n=n, seed=seed, split="eval", tasks=tasks or TaskConfig())))



def _encode(cfg: DPOConfig, rows: list[dict], tok: ChatTokenizer, max_length: int, max_prompt_length: int,
            log: Any) -> PairData:
    examples, counts = encode_pairs(rows, tok, max_length=max_length, max_prompt_length=max_prompt_length)
    if counts["truncated_prompt"] or counts["truncated_response"]:
        log(f"truncated: {counts['truncated_prompt']} prompt(s) to max_prompt_length={max_prompt_length}, "
            f"{counts['truncated_response']} pair(s) to max_length={max_length}")
    kl = mismatched_responses(examples, max_length) if LOSSES[cfg.loss].takes_kl and examples else None
    return PairData(examples, kl)


def _reference(cfg: DPOConfig, s: Session, tok: ChatTokenizer, datasets: list[PairData],
               micro: int) -> nn.Module | None:
    """The frozen reference model (reference=copy), or None: a reference-free loss, or
    reference=precompute, which stores every pair's reference log-probs in `datasets` and frees the model."""
    if LOSSES[cfg.loss].reference_free:
        return None
    ref_model = load_policy(cfg.reference_model or cfg.model, device=s.device)[0].eval().requires_grad_(False)
    if cfg.reference == "copy":
        return ref_model
    for data in datasets:
        if not data.examples:
            continue
        bar = s.progress(total=len(data.examples), desc="reference log-probs", unit="pair")
        data.ref = reference_logprobs(ref_model, data.examples, tok.pad_id, device=s.device, batch_size=micro,
                                      dtype=cfg.train.dtype, kl_responses=data.kl_responses, progress=bar.update)
        bar.close()
    del ref_model  # subtle: only the policy stays in memory from here on
    if s.device.type == "cuda":
        torch.cuda.empty_cache()
    return None

