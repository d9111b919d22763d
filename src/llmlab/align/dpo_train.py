"""`llmlab dpo`: offline preference optimisation (DPO and its variants in align/dpo.py) of a policy
against a frozen reference, resumable to the exact loss, DDP under torchrun.

    setup    rows -> held-out split -> PairExample ids -> policy (+ LoRA) -> reference:
               copy        a second frozen model, run on every batch
               precompute  one pass over the data storing each pair's reference log-probs, then freed
               (none)      reference-free losses: simpo, orpo
    step     lr_at(step) -> micro-batches: one forward of the 2B chosen+rejected sequences ->
             summed log-probs (and token counts) -> loss from dpo.LOSSES -> backward -> clip_and_step
    log      loss, rewards/chosen, rewards/rejected, margin, accuracy, logps/chosen, logps/rejected,
             grad_norm, lr (+ kl for KTO, nll for ORPO and RPO); warnings once each in log.txt
    end      policy folder in the run folder, curves.png, then evaluate.py (eval.md / eval.json)

KTO is trained from the same pairs, unpaired: each chosen response is a desirable example and
each rejected one an undesirable example. Its reference point z = KL(pi || pi_ref) is estimated,
as in the KTO paper and TRL, on mismatched pairs: prompt i with the chosen response of row
i + 1 (fixed at encoding time, so `precompute` can store its reference log-prob too); the
estimate is the mean over the micro-batch, averaged over processes, and detached.

ORPO adds the chosen responses' NLL (logprobs.nll_loss, weighted by orpo_sft_weight) to the
odds-ratio term; `rpo_alpha` adds the same term to any other loss (RPO, Pang et al. 2024,
https://arxiv.org/abs/2404.19733: DPO + alpha NLL(chosen), TRL's loss_type=["sigmoid", "sft"]), which
keeps the chosen responses' likelihood from falling with the rejected ones'. Of `train.*`, seq_len,
eval_every, sample_* and compile are not used. Left out: FSDP (DDP only), an in-run held-out
evaluation (the evaluation runs at the end), LoRA's "adapters off" reference (with LoRA the
reference is a second model too).
"""

from __future__ import annotations

import contextlib
import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmlab.align import dpo as L
from llmlab.align.config import DPOConfig
from llmlab.align.data import PairExample, batches, collate_pairs, encode_pairs
from llmlab.align.logprobs import logits_to_keep, model_logits, nll_loss, sequence_logprobs
from llmlab.align.models import ChatTokenizer
from llmlab.errors import UserError
from llmlab.runs import Run, progress_bar, start_run
from llmlab.train import distributed as D
from llmlab.train.checkpoint import PREFIX, STATE_FILE, find_checkpoint, list_checkpoints, load_trainer_state
from llmlab.train.optim import build_adamw, clip_and_step
from llmlab.train.precision import autocast_for
from llmlab.train.pretrain import TrainingDiverged
from llmlab.train.schedule import lr_at
from llmlab.train.trackers import Tracker, make_tracker

METRICS = ("loss", "rewards/chosen", "rewards/rejected", "margin", "accuracy", "logps/chosen", "logps/rejected")


@dataclass
class PairData:
    """Encoded pairs plus, for KTO, each prompt's mismatched response (the KL estimate's input), and,
    with reference=precompute, the reference's summed log-probs (N, 3): chosen, rejected, mismatched."""

    examples: list[PairExample]
    kl_responses: list[list[int]] | None = None
    ref: torch.Tensor | None = None


# ---------------------------------------------------------------------- entry points


def dpo(cfg: DPOConfig, *, out: Path | None = None, quiet: bool = False) -> Path:
    """Train; return the run folder, which also holds the final policy."""
    info, device = D.init_distributed(cfg.train.device)
    try:
        return _train(cfg, info, device, out=out, quiet=quiet)
    finally:
        D.shutdown(info)


def resumed_config(resume: str, overrides: tuple[str, ...] = (),
                   flags: dict[str, Any] | None = None) -> DPOConfig:
    """The config a checkpoint was trained with, plus the flags and overrides given now."""
    from llmlab.config import load_config

    checkpoint = find_checkpoint(resume)
    cfg = load_config(DPOConfig, checkpoint / "config.yaml", overrides, flags=flags)
    return replace(cfg, resume=str(checkpoint))


# ---------------------------------------------------------------------- log-probs


def forward_sequences(model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device,
                      autocast: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(summed response log-probs (N,), response token counts (N,), logits) of a collated batch."""
    ids = batch["ids"].to(device, non_blocking=True)
    mask = batch["response_mask"].to(device, non_blocking=True)
    attention = batch["attention_mask"].to(device, non_blocking=True)
    with autocast:
        logits = model_logits(model, ids, attention, keep=logits_to_keep(mask))  # response rows only
    sums, counts = sequence_logprobs(logits, ids, mask)
    return sums, counts, logits


def _kl_batch(examples: list[PairExample], responses: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Prompt i + mismatched response i, collated like pairs (the chosen half is all we need)."""
    mismatched = [PairExample(e.prompt_ids, r, r) for e, r in zip(examples, responses, strict=True)]
    full = collate_pairs(mismatched, pad_id)
    return {k: v[: len(examples)] for k, v in full.items()}


@torch.no_grad()
def reference_logprobs(model: nn.Module, examples: list[PairExample], pad_id: int, *, device: torch.device,
                       batch_size: int, dtype: str = "auto", kl_responses: list[list[int]] | None = None,
                       progress: Any = None) -> torch.Tensor:
    """(N, 3) float32 on CPU: summed log-probs of chosen, rejected and (KTO) mismatched responses under
    `model` (nan where there is no mismatched response)."""
    autocast = autocast_for(device, dtype)
    out = torch.full((len(examples), 3), float("nan"))
    for start in range(0, len(examples), batch_size):
        chunk = examples[start: start + batch_size]
        sums, _, _ = forward_sequences(model, collate_pairs(chunk, pad_id), device, autocast)
        out[start: start + len(chunk), 0] = sums[: len(chunk)].float().cpu()
        out[start: start + len(chunk), 1] = sums[len(chunk):].float().cpu()
        if kl_responses is not None:
            batch = _kl_batch(chunk, kl_responses[start: start + len(chunk)], pad_id)
            out[start: start + len(chunk), 2] = forward_sequences(model, batch, device, autocast)[0].float().cpu()
        if progress is not None:
            progress(len(chunk))
    return out


def mismatched_responses(examples: list[PairExample], max_length: int) -> list[list[int]]:
    """Row i's prompt gets row i + 1's chosen response (cut to fit): the KTO KL estimate's input."""
    n = len(examples)
    return [examples[(i + 1) % n].chosen_ids[: max_length - len(e.prompt_ids)] for i, e in enumerate(examples)]


# ---------------------------------------------------------------------- the loss of a micro-batch


def nll_weight_of(cfg: DPOConfig) -> float:
    """Weight of the chosen responses' NLL in the loss: ORPO's own term, or RPO's alpha for the others."""
    return cfg.orpo_sft_weight if cfg.loss == "orpo" else cfg.rpo_alpha


def preference_loss(cfg: DPOConfig, sums: torch.Tensor, counts: torch.Tensor, ref: torch.Tensor | None, *,
                    logits: torch.Tensor | None = None, batch: dict[str, torch.Tensor] | None = None,
                    kl: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(mean loss, per-pair sums of the logged metrics) from the policy's summed log-probs and token
    counts of the 2B sequences (chosen first) and the reference's summed log-probs `ref` (2B,) or None.

    Losses on per-token means (IPO, SimPO, ORPO) divide both the policy's and the reference's sums by
    the response lengths; the logged logps are always the sums."""
    B = sums.shape[0] // 2
    pc, pr = sums[:B], sums[B:]
    nc, nr = counts[:B].clamp(min=1), counts[B:].clamp(min=1)
    rc, rr = (ref[:B], ref[B:]) if ref is not None else (None, None)
    if cfg.loss in L.MEAN_LOGPROBS:
        pc, pr = pc / nc, pr / nr
        rc, rr = (rc / nc, rr / nr) if rc is not None else (None, None)
    fn = L.LOSSES[cfg.loss]
    kwargs: dict[str, Any] = {"beta": cfg.beta}
    if cfg.loss in ("cdpo", "robust"):
        kwargs["label_smoothing"] = cfg.label_smoothing
    elif cfg.loss == "simpo":
        kwargs["gamma"] = cfg.simpo_gamma
    elif cfg.loss == "kto":
        kwargs |= {"kl": kl if kl is not None else 0.0, "desirable_weight": cfg.kto_desirable_weight,
                   "undesirable_weight": cfg.kto_undesirable_weight}
    losses, chosen_rewards, rejected_rewards = fn(pc, pr, rc, rr, **kwargs)
    loss = losses.mean()
    extra: dict[str, torch.Tensor] = {}
    nll_weight = nll_weight_of(cfg)
    if nll_weight:
        assert logits is not None and batch is not None
        ids, mask = batch["ids"].to(logits.device), batch["response_mask"].to(logits.device)
        nll = nll_loss(logits[:B], ids[:B], mask[:B])
        loss = loss + nll_weight * nll
        extra["nll"] = nll.detach() * B
    if cfg.loss == "kto" and kl is not None:
        extra["kl"] = kl.detach() * B
    margins = chosen_rewards - rejected_rewards
    stats = {"rewards/chosen": chosen_rewards.sum(), "rewards/rejected": rejected_rewards.sum(),
             "margin": margins.sum(), "accuracy": (margins > 0).float().sum(),
             "logps/chosen": sums[:B].detach().sum(), "logps/rejected": sums[B:].detach().sum(), **extra}
    return loss, stats


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


def _train(cfg: DPOConfig, info: D.DistInfo, device: torch.device, *, out: Path | None, quiet: bool) -> Path:
    from llmlab.align.models import load_policy, trainable_parameters

    tc = cfg.train
    if tc.fsdp:
        raise UserError("llmlab dpo supports DDP only; set train.fsdp=false (or use LoRA to fit the model)")
    run, run_dir = _start(cfg, info, out=out, quiet=quiet)
    log = run.log if run is not None else (lambda message: None)
    torch.manual_seed(tc.seed)
    lora_on = cfg.lora.r > 0
    resume = Path(cfg.resume) if cfg.resume else None
    source = str(resume) if resume is not None and not lora_on else cfg.model
    model, tok = load_policy(source, device=device, lora=cfg.lora if cfg.lora.r else None,
                             gradient_checkpointing=cfg.gradient_checkpointing)
    rows, held_out = _rows(cfg, log)
    data = _encode(cfg, rows, tok, log)
    per_rank = tc.batch_size // info.world_size
    micro = tc.micro_batch_size or per_rank
    if tc.batch_size % info.world_size or per_rank % micro:
        raise UserError(f"train.batch_size ({tc.batch_size}) must split evenly over {info.world_size} process(es) "
                        f"and into micro-batches of {micro}")
    if len(data.examples) < tc.batch_size:
        raise UserError(f"{len(data.examples)} training pairs is fewer than train.batch_size ({tc.batch_size})")
    ref_model = None
    if cfg.loss not in L.REFERENCE_FREE:
        ref_model = load_policy(cfg.reference_model or cfg.model, device=device)[0].eval().requires_grad_(False)
        if cfg.reference == "precompute":
            bar = progress_bar(total=len(data.examples), desc="reference log-probs", unit="pair",
                               quiet=quiet or not info.is_main)
            data.ref = reference_logprobs(ref_model, data.examples, tok.pad_id, device=device, batch_size=micro,
                                          dtype=tc.dtype, kl_responses=data.kl_responses, progress=bar.update)
            bar.close()
            del ref_model  # subtle: only the policy stays in memory from here on
            ref_model = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
    optimizer = build_adamw(model, lr=tc.lr, weight_decay=tc.weight_decay, betas=(tc.beta1, tc.beta2))
    start_step, counters = 0, {"nan_skips": 0, "pairs": 0, "warned": []}
    if resume is not None:
        start_step, counters = _restore(resume, model, optimizer, lora_on, log)
    wrapped = D.wrap_model(model, info, device, fsdp=False)
    autocast = autocast_for(device, tc.dtype)
    watch = Watch(cfg, log, counters["warned"])
    tracker = make_tracker(tc.tracker, run_dir, cfg, tc.wandb_project) if info.is_main else Tracker()
    n_train, n_all = trainable_parameters(model)
    log(f"dpo: loss {cfg.loss}, beta {cfg.beta}, reference {cfg.reference if ref_model is not None or data.ref is not None else 'none'}; "
        f"{len(data.examples)} pairs ({len(held_out)} held out); {n_train / 1e6:.2f}M of {n_all / 1e6:.2f}M parameters "
        f"trained on {device}, {info.world_size} process(es); global batch {tc.batch_size} pairs "
        f"({per_rank // micro} micro-batch(es) of {micro} per process)")
    steps_per_epoch = max(1, len(data.examples) // tc.batch_size)
    epoch_batches: tuple[int, list[list[int]]] = (-1, [])
    bar = progress_bar(total=tc.max_steps, desc="dpo", unit="step", quiet=quiet or not info.is_main)
    bar.update(start_step)
    for step in range(start_step, tc.max_steps):
        torch.manual_seed(tc.seed * 2**32 + step * 1024 + info.rank)  # dropout: a function of (step, rank)
        lr = lr_at(step, lr=tc.lr, warmup_steps=tc.warmup_steps, max_steps=tc.max_steps, min_lr_ratio=tc.min_lr_ratio)
        epoch, k = divmod(step, steps_per_epoch)
        if epoch_batches[0] != epoch:
            epoch_batches = (epoch, list(batches(len(data.examples), tc.batch_size, seed=tc.seed, epoch=epoch)))
        mine = epoch_batches[1][k][info.rank * per_rank: (info.rank + 1) * per_rank]
        loss = torch.zeros((), device=device)
        stats: dict[str, torch.Tensor] = {}
        for m in range(0, per_rank, micro):
            idx = mine[m: m + micro]
            sync = (contextlib.nullcontext() if m + micro >= per_rank or not hasattr(wrapped, "no_sync")
                    else wrapped.no_sync())
            with sync:
                micro_loss, micro_stats = _micro_step(cfg, wrapped, ref_model, data, idx, tok.pad_id, device,
                                                      autocast, info)
                (micro_loss * len(idx) / per_rank).backward()
            loss += micro_loss.detach() * len(idx) / per_rank
            for name, value in micro_stats.items():
                stats[name] = stats.get(name, 0.0) + value.detach().float()
        names = sorted(stats)
        reduced = D.mean_over_ranks(torch.stack([loss.float(), *[stats[n] for n in names]]), info)
        loss_value = float(reduced[0])
        norm = clip_and_step(wrapped, optimizer, lr=lr, grad_clip=tc.grad_clip)
        done = step + 1
        counters["pairs"] += tc.batch_size
        bar.update(1)
        if not (math.isfinite(loss_value) and math.isfinite(norm)):
            what = f"loss {loss_value}, grad norm {norm}"
            if tc.on_nan == "stop":
                last = _last_checkpoint(run_dir)
                log(f"step {done}: {what}: stopping (train.on_nan=stop)")
                raise TrainingDiverged(f"training diverged at step {done} ({what}); nothing was saved after it, the "
                                       f"last good checkpoint is {last}; lower train.lr or set train.on_nan=skip")
            counters["nan_skips"] += 1
            log(f"step {done}: {what}; update skipped (train.on_nan=skip)")
        elif done % tc.log_every == 0 or done == tc.max_steps:
            per_pair = {n: float(v) / per_rank for n, v in zip(names, reduced[1:], strict=True)}
            row = {"loss": loss_value, **per_pair, "grad_norm": norm, "lr": lr, "pairs": counters["pairs"],
                   "nan_skips": counters["nan_skips"]}
            watch.update(done, row)
            bar.set_postfix(loss=f"{loss_value:.3f}", acc=f"{row['accuracy']:.2f}", margin=f"{row['margin']:.2f}")
            if run is not None:
                run.metrics(done, **row)
                tracker.log(done, row)
        if (tc.checkpoint_every and done % tc.checkpoint_every == 0) or done == tc.max_steps:
            if info.is_main:
                _save_checkpoint(run_dir, done, model, tok, optimizer, cfg, counters, lora_on)
            D.barrier(info)
    bar.close()
    tracker.close()
    if info.is_main:
        _finish(cfg, run, run_dir, model, tok, held_out, device, quiet)
    D.barrier(info)
    return run_dir


def _micro_step(cfg: DPOConfig, model: nn.Module, ref_model: nn.Module | None, data: PairData, idx: list[int],
                pad_id: int, device: torch.device, autocast: Any,
                info: D.DistInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    examples = [data.examples[i] for i in idx]
    batch = collate_pairs(examples, pad_id)
    sums, counts, logits = forward_sequences(model, batch, device, autocast)
    ref, kl = None, None
    if data.ref is not None:
        table = data.ref[idx].to(device)  # (b, 3)
        ref = torch.cat([table[:, 0], table[:, 1]])
        ref_kl = table[:, 2]
    elif ref_model is not None:
        with torch.no_grad():
            ref = forward_sequences(ref_model, batch, device, autocast)[0]
    if cfg.loss == "kto":
        kl_batch = _kl_batch(examples, [data.kl_responses[i] for i in idx], pad_id)
        with torch.no_grad():
            policy_kl = forward_sequences(model, kl_batch, device, autocast)[0]
            if data.ref is None:
                ref_kl = forward_sequences(ref_model, kl_batch, device, autocast)[0]
        kl = D.mean_over_ranks((policy_kl.float() - ref_kl.float()).mean(), info)
    return preference_loss(cfg, sums, counts, ref, logits=logits if nll_weight_of(cfg) else None, batch=batch,
                           kl=kl)


# ---------------------------------------------------------------------- set-up


def _start(cfg: DPOConfig, info: D.DistInfo, *, out: Path | None, quiet: bool) -> tuple[Run | None, Path]:
    run_dir = Path(out) if out is not None else (Path(cfg.resume).parent.parent if cfg.resume else None)
    run = None
    if info.is_main:
        run = start_run("dpo", cfg, out=run_dir, quiet=quiet)
        run_dir = run.dir
        if cfg.resume:
            from llmlab.train.pretrain import _truncate_metrics

            _truncate_metrics(run.dir / "metrics.jsonl", load_trainer_state(Path(cfg.resume))["step"])
    if info.enabled:
        import torch.distributed as dist

        box = [str(run_dir)]
        dist.broadcast_object_list(box, src=0)
        run_dir = Path(box[0])
    return run, Path(run_dir)


def _rows(cfg: DPOConfig, log: Any) -> tuple[list[dict], list[dict]]:
    """(training rows, held-out rows): the user's rows split by data.eval_fraction, or the task world's
    train split plus eval.n_pairs pairs of its eval split."""
    from llmlab.align.data import holdout_split, load_preference_rows

    rows, skipped = load_preference_rows(cfg.data.input, strict=cfg.data.strict, n=cfg.data.n, seed=cfg.data.seed)
    for message in skipped:
        log(f"skipped row: {message}")
    if cfg.data.input:
        return holdout_split(rows, cfg.data.eval_fraction, seed=cfg.data.seed)
    return rows, task_world_pairs(cfg.eval.n_pairs, seed=cfg.eval.seed)


def task_world_pairs(n: int, *, seed: int) -> list[dict]:
    """`n` preference pairs from the task world's eval split (no prompt of it is in the train split)."""
    if n == 0:
        return []
    from llmlab.data.config import GenerateConfig
    from llmlab.data.corpora import pref_rows

    return list(pref_rows(GenerateConfig(kind="prefs", n=n, seed=seed, split="eval")))


def _encode(cfg: DPOConfig, rows: list[dict], tok: ChatTokenizer, log: Any) -> PairData:
    examples, counts = encode_pairs(rows, tok, max_length=cfg.max_length, max_prompt_length=cfg.max_prompt_length)
    if counts["truncated_prompt"] or counts["truncated_response"]:
        log(f"truncated: {counts['truncated_prompt']} prompt(s) to max_prompt_length={cfg.max_prompt_length}, "
            f"{counts['truncated_response']} pair(s) to max_length={cfg.max_length}")
    kl = mismatched_responses(examples, cfg.max_length) if cfg.loss == "kto" else None
    return PairData(examples, kl)


# ---------------------------------------------------------------------- checkpoints


def _write_policy(model: nn.Module, tok: ChatTokenizer, directory: Path, *, lora: bool) -> None:
    """A loadable copy of the policy (LoRA folded in) without changing `model`."""
    from llmlab.align.models import is_llmlab, merged_state_dict
    from llmlab.model.io import save_weights

    base = getattr(model, "module", model)
    state = merged_state_dict(base) if lora else base.state_dict()  # subtle: merged_state_dict imports peft (~s)
    if is_llmlab(base):
        save_weights(base.cfg, state, directory, tok.inner)
    else:
        base.save_pretrained(str(directory), state_dict=state, safe_serialization=True)
        tok.save(directory)


def _save_checkpoint(run_dir: Path, step: int, model: nn.Module, tok: ChatTokenizer,
                     optimizer: torch.optim.Optimizer, cfg: DPOConfig, counters: dict[str, Any], lora: bool) -> Path:
    """RUN/checkpoints/step-N: a policy folder + trainer_state.pt (+ the LoRA tensors) + config.yaml, atomically."""
    from llmlab.config import to_yaml
    from llmlab.files import write_text_atomic

    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final, tmp = root / f"{PREFIX}{step:07d}", root / f".{PREFIX}{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _write_policy(model, tok, tmp, lora=lora)
    adapters = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad} if lora else {}
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "counters": dict(counters), "adapters": adapters},
               tmp / STATE_FILE)
    write_text_atomic(tmp / "config.yaml", to_yaml(cfg))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in list_checkpoints(root)[: -cfg.train.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _restore(checkpoint: Path, model: nn.Module, optimizer: torch.optim.Optimizer, lora: bool,
             log: Any) -> tuple[int, dict[str, Any]]:
    """The policy was loaded from the checkpoint already (or, with LoRA, from the base model: its
    adapters are restored here); restore the optimizer and the counters."""
    state = load_trainer_state(checkpoint)
    if lora:
        missing = set(state["adapters"]) - {n for n, _ in model.named_parameters()}
        if missing:
            raise UserError(f"{checkpoint}: adapters do not match lora.* ({sorted(missing)[:2]})")
        model.load_state_dict(state["adapters"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    log(f"resumed from {checkpoint} at step {state['step']}")
    counters = dict(state["counters"])
    counters["warned"] = list(counters.get("warned", []))
    return int(state["step"]), counters


def _last_checkpoint(run_dir: Path) -> str:
    found = list_checkpoints(run_dir / "checkpoints")
    return str(found[-1]) if found else "none (no checkpoint was written yet)"


# ---------------------------------------------------------------------- the end


def _finish(cfg: DPOConfig, run: Run | None, run_dir: Path, model: nn.Module, tok: ChatTokenizer,
            held_out: list[dict], device: torch.device, quiet: bool) -> None:
    from llmlab.align.evaluate import evaluate_run
    from llmlab.align.models import save_policy
    from llmlab.viz.alignment import preference_curves_png
    from llmlab.viz.training import read_metrics

    log = run.log if run is not None else print
    rows = read_metrics(run_dir / "metrics.jsonl")
    if rows:
        preference_curves_png(rows, run_dir / "curves.png", title=f"llmlab dpo ({cfg.loss}, beta {cfg.beta})")
    save_policy(model, tok, run_dir)
    log(f"final policy: {run_dir} (llmlab chat --model {run_dir})")
    model.eval()
    evaluate_run(model, tok, base_path=cfg.reference_model or cfg.model, held_out=held_out, eval_cfg=cfg.eval,
                 max_length=cfg.max_length, max_prompt_length=cfg.max_prompt_length, device=device,
                 out_dir=run_dir, log=log, quiet=quiet)


def command(cfg: DPOConfig, ctx: Any) -> int:
    """`llmlab dpo` (ctx: cli.Context): resumes with the saved config, the flags and overrides given now on top."""
    if cfg.resume:
        flags = {k: v for k, v in ctx.flags.items() if k != "resume"}
        cfg = resumed_config(cfg.resume, tuple(o for o in ctx.overrides if not o.startswith("resume=")), flags)
    dpo(cfg, out=ctx.out, quiet=ctx.quiet)
    return 0
