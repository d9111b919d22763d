"""`llmlab ppo`, `llmlab grpo`, `llmlab rloo`: online RL of a policy against a reward, on the shared
training toolkit (train/session.py, batches.py, step.py, checkpoint.py), DDP under torchrun.

    setup    session -> policy (+ LoRA) [-> PPO: + value head or critic] -> frozen reference ->
             prompts (task world with data.tasks, or {"prompt"} rows) -> reward terms -> AdamW
    step     rollout   this process's prompts x rollout.samples responses, sampled with the KV-cache
                       Engine (HF generate for HF policies) from a torch.Generator seeded by (seed, step, rank)
             score     the reward (align/rewards.py), the gold score and the proxy beside it
             old       no-grad per-token log-probs of the rollout policy and of the reference, and PPO's
                       values (skipped when one update reuses the rollout: then old = current, detached)
             advantage grpo: group-normalised; rloo: leave-one-out; ppo: per-token KL-shaped rewards ->
                       GAE -> whitened (align/rl.py)
             update    epochs x minibatches optimiser steps of the clipped loss (rl.clipped_policy_loss,
                       rl.aggregate's normalisation; PPO + vf_coef x clipped value loss), micro-batched by
                       train/batches.py's rule, stopping early once the approximate KL passes stop_kl
    log      reward, gold, proxy, kl (to the reference), kl_coef, entropy, clip_frac, approx_kl, response_len,
             refusal_rate, loss, grad_norm, lr (+ value_loss, explained_var for PPO); samples.jsonl
    watch    the divergence detector (align/overopt.py): proxy up while gold down -> a warning (and a stop
             with hacking.stop=true)
    eval     at the start, every train.eval_every steps and at the end: held-out greedy accuracy, pass@1,
             pass@k, proxy, KL and length, as eval/* metric rows (the commands' end-of-run report, eval.md,
             is eval/online_run.py's: evaluation sits above alignment)

The unit of train.batch_size is a prompt: each step trains on batch_size x rollout.samples responses.
A prompt's responses stay on one process, so group statistics need no communication.

RLOO's loss is sequence-level as in TRL's RLOOTrainer (the ratio of summed log-probs, clipped); GRPO's and
PPO's are per-token. Left out: FSDP, vLLM generation, reward-model ensembles, and a "batch" reward
scale over processes (scale_rewards=batch uses this process's responses).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmlab.align import rl
from llmlab.align.config import OnlineConfig
from llmlab.align.data import _pad, sample_indices
from llmlab.align.generation import cut_at_stop, generate_ids, prompt_ids
from llmlab.align.models import ChatTokenizer, load_policy, load_trainee, save_policy, trainable_parameters
from llmlab.align.onpolicy import Prompt, input_prompts, task_world_prompts
from llmlab.align.overopt import DivergenceDetector
from llmlab.align.reference import forward_tokens, sampled_token_logprobs
from llmlab.align.rewards import Rewards, Scored
from llmlab.align.value import PolicyWithValue, with_value
from llmlab.errors import UserError
from llmlab.train import distributed as D
from llmlab.train.batches import accumulating, global_units, plan_batches
from llmlab.train.checkpoint import restore, resume_step, trainable_state
from llmlab.train.optim import build_adamw
from llmlab.train.precision import autocast_for
from llmlab.train.session import Session, open_session
from llmlab.train.step import begin_step, due, finish_step, step_seed


def online(cfg: OnlineConfig, *, out: Path | None = None, quiet: bool = False) -> Path:
    """Train; return the run folder, which also holds the final policy (and PPO's value function)."""
    with open_session(cfg.algo, cfg, cfg.train, out=out, quiet=quiet, resume_step=resume_step(cfg)) as s:
        return _train(cfg, s)


# ---------------------------------------------------------------------- rollouts


@dataclass
class Rollouts:
    """One step's responses on this process, G consecutive rows per prompt; per-token tensors are
    (N, W) in response layout: column j is response token j (W: the longest response)."""

    prompts: list[Prompt]
    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    texts: list[str]
    closed: list[bool]
    scored: Scored | None = None
    mask: torch.Tensor | None = None
    old_logp: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None
    values: torch.Tensor | None = None
    advantages: torch.Tensor | None = None  # (N,) grpo / rloo, (N, W) ppo
    returns: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.response_ids)


def sample_rollouts(model: nn.Module, tok: ChatTokenizer, prompts: list[Prompt], *, samples: int, max_new_tokens: int,
                    temperature: float, top_p: float, batch_size: int, device: torch.device,
                    generator: torch.Generator) -> Rollouts:
    """`samples` responses to each prompt (consecutive rows)."""
    ids = prompt_ids(model, tok, [p.text for p in prompts], max_new_tokens)
    repeated = [x for x in ids for _ in range(samples)]
    new = generate_ids(model, tok, repeated, max_new_tokens=max_new_tokens, batch_size=batch_size, device=device,
                       temperature=temperature, top_p=top_p if top_p < 1.0 else None, generator=generator)
    texts = [tok.decode(cut_at_stop(t, tok.eos_ids)).strip() for t in new]
    closed = [bool(t) and t[-1] in tok.eos_ids for t in new]
    return Rollouts([p for p in prompts for _ in range(samples)], repeated, new, texts, closed)


def collate_rollouts(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded prompt + response rows (align/data.py's layout) plus each row's prompt and response
    lengths, which place the response tokens in the per-token tensors (`response_layout`)."""
    batch = _pad([p + r for p, r in zip(prompt_ids, response_ids, strict=True)],
                 [[False] * len(p) + [True] * len(r) for p, r in zip(prompt_ids, response_ids, strict=True)],
                 pad_id, mask_name="response_mask")
    batch["prompt_len"] = torch.tensor([len(p) for p in prompt_ids])
    batch["response_len"] = torch.tensor([len(r) for r in response_ids])
    return batch


def response_layout(x: torch.Tensor, batch: dict[str, torch.Tensor], width: int) -> torch.Tensor:
    """Per-token values (B, C) over the last C target positions of the batch's rows (log-probs: column c
    scores token T - C + c) as (B, width): column j for response token j, 0 past a response's end."""
    T, C = batch["ids"].shape[1], x.shape[1]
    start = batch["prompt_len"].to(x.device) - (T - C)  # (B,): the column of response token 0
    cols = (start[:, None] + torch.arange(width, device=x.device)).clamp(0, C - 1)
    inside = torch.arange(width, device=x.device)[None, :] < batch["response_len"].to(x.device)[:, None]
    return x.gather(1, cols) * inside.to(x.dtype)


def layout_mask(response_ids: list[list[int]], width: int) -> torch.Tensor:
    lengths = torch.tensor([len(r) for r in response_ids])
    return (torch.arange(width)[None, :] < lengths[:, None]).float()


# ---------------------------------------------------------------------- forward passes


class Forward:
    """The per-token forward every pass uses: (log-probs (b, W), entropies (b, W), values (b, W) or None)
    of rows `idx` of a Rollouts, in response layout."""

    def __init__(self, cfg: OnlineConfig, tok: ChatTokenizer, device: torch.device, autocast: Any,
                 vocab_limit: int | None) -> None:
        self.cfg, self.tok, self.device, self.autocast, self.vocab_limit = cfg, tok, device, autocast, vocab_limit

    def __call__(self, model: nn.Module, r: Rollouts, idx: list[int], *, want_entropy: bool = False,
                 temperature: float | None = None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """`temperature`: the one the answers were sampled at (default: rollout.temperature)."""
        batch = collate_rollouts([r.prompt_ids[i] for i in idx], [r.response_ids[i] for i in idx], self.tok.pad_id)
        W = r.mask.shape[1]
        temperature = self.cfg.rollout.temperature if temperature is None else temperature
        values = None
        if isinstance(getattr(model, "module", model), PolicyWithValue):
            ids, mask = batch["ids"].to(self.device), batch["response_mask"].to(self.device)
            keep = _keep(batch)
            with self.autocast:
                logits, values_k = model(ids, batch["attention_mask"].to(self.device), keep)
            per_token, _, logits = sampled_token_logprobs(logits, ids, mask, temperature=temperature,
                                                          vocab_limit=self.vocab_limit)
            values = response_layout(values_k[:, :-1].float(), batch, W)
        else:
            per_token, _, logits = forward_tokens(model, batch, self.device, self.autocast, temperature=temperature,
                                                  vocab_limit=self.vocab_limit)
        logp = response_layout(per_token.float(), batch, W)
        ent = response_layout(rl.entropy(logits[:, :-1]), batch, W) if want_entropy else None
        return logp, ent, values


def _keep(batch: dict[str, torch.Tensor]) -> int:
    """logits_to_keep of a rollout batch: from the position before the shortest prompt's end."""
    return batch["ids"].shape[1] - int(batch["prompt_len"].min()) + 1


@torch.no_grad()
def score_old(fwd: Forward, model: nn.Module, ref_model: nn.Module, r: Rollouts, micro: int, samples: int, *,
              need_old: bool) -> None:
    """Fill r.ref_logp, and (need_old) r.old_logp and PPO's r.values, `micro` prompts per forward."""
    r.ref_logp = torch.zeros_like(r.mask)
    r.old_logp = torch.zeros_like(r.mask)  # without need_old: filled by the one update, for the KL metric
    r.values = torch.zeros_like(r.mask) if need_old and isinstance(getattr(model, "module", model),
                                                                   PolicyWithValue) else None
    for idx in micro_groups(r, list(range(len(r) // samples)), micro, samples):
        r.ref_logp[idx] = fwd(ref_model, r, idx)[0]
        if need_old:
            logp, _, values = fwd(model, r, idx)
            r.old_logp[idx] = logp
            if values is not None:
                r.values[idx] = values


# ---------------------------------------------------------------------- advantages


def advantages(cfg: OnlineConfig, r: Rollouts, kl_coef: float) -> None:
    """Fill r.advantages (and PPO's r.returns) from the rewards, the KL and (PPO) the values."""
    reward = torch.tensor(r.scored.reward, dtype=torch.float32, device=r.mask.device)
    if cfg.algo == "ppo":
        rewards, _ = rl.token_rewards(reward, r.old_logp, r.ref_logp, r.mask, kl_coef=kl_coef, kind=cfg.kl_estimator)
        adv, r.returns = rl.gae(rewards, r.values, r.mask, gamma=cfg.gamma, lam=cfg.lam)
        r.advantages = rl.whiten(adv, r.mask) if cfg.whiten else adv
        return
    r.advantages = sequence_advantages(cfg, reward, r.old_logp, r.ref_logp, r.mask, kl_coef)


def sequence_advantages(cfg: OnlineConfig, reward: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor,
                        mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """GRPO's or RLOO's advantage of each response (whole groups of G rows), the KL charged in the reward
    when kl_in=reward."""
    if cfg.kl_in == "reward" and kl_coef:
        reward = reward - kl_coef * (rl.kl_estimate(logp, ref_logp, cfg.kl_estimator) * mask).sum(dim=1)
    G = cfg.rollout.samples
    if cfg.algo == "grpo":
        return rl.group_advantages(reward, G, scale=cfg.scale_rewards)
    adv = rl.rloo_advantages(reward, G)
    return rl.whiten(adv, torch.ones_like(adv)) if cfg.normalize_advantages else adv


def advantages_in_micro_batches(cfg: OnlineConfig, updates: int) -> bool:
    """Whether each micro-batch computes its responses' advantages from its own forward: one update per
    rollout, a KL charged in the reward (which needs the rollout's log-probs), and advantages that
    compare a response only with its own group (no batch-wide scale): then the separate no-grad policy
    pass the KL would need is skipped (TRL's RLOOTrainer runs it)."""
    group_local = (cfg.scale_rewards != "batch") if cfg.algo == "grpo" else not cfg.normalize_advantages
    return (updates == 1 and cfg.algo != "ppo" and cfg.kl_in == "reward" and cfg.kl_coef > 0
            and group_local)


def micro_groups(r: Rollouts, prompts: list[int], micro: int, samples: int) -> list[list[int]]:
    """The rows of `prompts` in micro-batches of `micro` prompts (their `samples` responses each), the
    prompts sorted by length first, so a micro-batch pads its rows to similar lengths (task-world prompts
    run from 14 to 350 tokens). The loss does not depend on the grouping (train/batches.py's rule)."""
    ordered = sorted(prompts, key=lambda p: len(r.prompt_ids[p * samples]))
    return [[p * samples + g for p in ordered[a:a + micro] for g in range(samples)]
            for a in range(0, len(ordered), micro)]


# ---------------------------------------------------------------------- the loss


def micro_loss(cfg: OnlineConfig, fwd: Forward, model: nn.Module, r: Rollouts, idx: list[int], *, kl_coef: float,
               n_sequences: int, n_tokens: int, reuse: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The micro-batch's share of the step's loss (counts over the whole minibatch, every process) and its
    sums of the logged statistics. `reuse`: the rollout's log-probs are these (one update per rollout)."""
    logp, ent, values = fwd(model, r, idx, want_entropy=True)
    mask = r.mask[idx]
    old = logp.detach() if reuse else r.old_logp[idx]
    if reuse:
        r.old_logp[idx] = old  # the KL metric's input
    if r.advantages is None:  # advantages_in_micro_batches: from this forward, detached
        reward = torch.tensor([r.scored.reward[i] for i in idx], dtype=torch.float32, device=mask.device)
        adv = sequence_advantages(cfg, reward, old, r.ref_logp[idx], mask, kl_coef)
    else:
        adv = r.advantages[idx]
    share = dict(n_sequences=n_sequences, n_tokens=n_tokens, max_tokens=cfg.rollout.max_new_tokens)
    if cfg.algo == "rloo":  # sequence level, as TRL's RLOOTrainer: one ratio per response
        seq, seq_old = (logp * mask).sum(1, keepdim=True), (old * mask).sum(1, keepdim=True)
        per_seq, clipped = rl.clipped_policy_loss(seq, seq_old, adv, clip_low=cfg.clip, clip_high=cfg.clip_high)
        loss = rl.aggregate(per_seq, torch.ones_like(per_seq), "sequence", **share)
    else:
        per_token, clipped = rl.clipped_policy_loss(logp, old, adv, clip_low=cfg.clip, clip_high=cfg.clip_high)
        if cfg.kl_in == "loss" and kl_coef:
            per_token = per_token + kl_coef * rl.kl_estimate(logp, r.ref_logp[idx], cfg.kl_estimator)
        loss = rl.aggregate(per_token, mask, cfg.loss_norm, **share)
    if cfg.entropy_coef:
        loss = loss - cfg.entropy_coef * rl.aggregate(ent, mask, "token", **share)
    # rloo: a response's clip counts for each of its tokens
    stats = {"clip_frac": (clipped * mask).sum(), "entropy": (ent.detach() * mask).sum(),
             "approx_kl": (rl.kl_estimate(old, logp.detach(), "k3") * mask).sum()}
    if values is not None:
        v_loss, _ = rl.clipped_value_loss(values, r.values[idx], r.returns[idx], clip=cfg.value_clip)
        loss = loss + cfg.vf_coef * rl.aggregate(v_loss, mask, "token", **share)
        stats["value_loss"] = (v_loss.detach() * mask).sum()
    return loss, stats


# ---------------------------------------------------------------------- the run


def _train(cfg: OnlineConfig, s: Session) -> Path:
    tc, info, device = cfg.train, s.info, s.device
    policy, tok = load_trainee(cfg.model, resume=cfg.resume, lora=cfg.lora, device=device,
                               gradient_checkpointing=cfg.gradient_checkpointing)
    vocab_limit = tok.inner.id_count if tok.is_llmlab else None
    prompts, held = prompt_sets(cfg, s.log)
    rewards = Rewards(cfg.reward, device=device, batch_size=cfg.rollout.batch_size)
    rewards.check_prompts(prompts + held)
    micro = tc.micro_batch_size or max(1, tc.batch_size // info.world_size // cfg.minibatches)  # 0: a minibatch
    plan = plan_batches(tc.batch_size, micro, info.world_size)
    per_minibatch = plan.per_rank // cfg.minibatches
    if per_minibatch % plan.micro:
        raise UserError(f"train.micro_batch_size ({plan.micro}) must divide each minibatch's {per_minibatch} prompts "
                        f"per process (train.batch_size / processes / minibatches)")
    ref_model = load_policy(cfg.reference_model or cfg.model, device=device)[0].eval().requires_grad_(False)
    trainee: nn.Module = policy
    if cfg.algo == "ppo":
        trainee = with_value(policy, mode=cfg.value_model, critic_model=cfg.critic_model, policy_path=cfg.model,
                             resume=cfg.resume, device=device)
    optimizer = build_adamw(trainee, lr=tc.lr, weight_decay=tc.weight_decay, betas=(tc.beta1, tc.beta2))
    start_step, counters = 0, {"nan_skips": 0, "kl_coef": cfg.kl_coef, "warned": [], "trace": []}
    if cfg.resume:
        start_step, counters = restore(Path(cfg.resume), trainee, optimizer)
        s.log(f"resumed from {cfg.resume} at step {start_step}")
    wrapped = D.wrap_model(trainee, info, device, fsdp=False)
    autocast = autocast_for(device, tc.dtype)
    fwd = Forward(cfg, tok, device, autocast, vocab_limit)
    kl_ctl = rl.AdaptiveKL(counters["kl_coef"], cfg.target_kl, cfg.kl_horizon) if cfg.target_kl else None
    detector = DivergenceDetector(cfg.hacking.window, cfg.hacking.min_rise, cfg.hacking.min_fall)
    for step, proxy, gold in counters["trace"]:  # a resumed run's detector has seen what it saw
        detector.update(step, proxy, gold)
    G = cfg.rollout.samples
    updates = cfg.epochs * cfg.minibatches
    in_micro = advantages_in_micro_batches(cfg, updates)
    need_old = updates > 1 or cfg.algo == "ppo" or (cfg.kl_in == "reward" and cfg.kl_coef > 0 and not in_micro)
    n_train, n_all = trainable_parameters(trainee)
    s.log(f"{cfg.algo}: {len(prompts)} prompts ({len(held)} held out), {tc.batch_size} per step x {G} responses of "
          f"at most {cfg.rollout.max_new_tokens} tokens; reward {_reward_text(cfg)}; kl_coef {cfg.kl_coef} "
          f"({cfg.kl_estimator} in the {cfg.kl_in}); {updates} update(s) per step; {n_train / 1e6:.2f}M of "
          f"{n_all / 1e6:.2f}M parameters trained on {device}, {info.world_size} process(es)")
    evaluator = Evaluator(cfg, tok, held, rewards, fwd, ref_model, device, info)
    if start_step == 0 and held:
        row = evaluator(policy)
        s.record(0, row)
        s.log(f"step 0: {_eval_text(row, cfg.eval.k)}")
    bar = s.progress(total=tc.max_steps, desc=cfg.algo, start=start_step)
    for step in range(start_step, tc.max_steps):
        t0 = time.perf_counter()
        lr = begin_step(tc, step, info)
        kl_coef = kl_ctl.coef if kl_ctl else cfg.kl_coef
        mine = [prompts[i] for i in sample_indices(plan.first_example(step, info.rank), plan.per_rank, len(prompts),
                                                   seed=cfg.data.seed)]
        generator = torch.Generator(device=device).manual_seed(step_seed(tc.seed, step, info.rank))
        r = sample_rollouts(policy, tok, mine, samples=G, max_new_tokens=cfg.rollout.max_new_tokens,
                            temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                            batch_size=cfg.rollout.batch_size, device=device, generator=generator)
        rollout_s = time.perf_counter() - t0
        r.scored = rewards(r.prompts, r.texts, r.closed, [len(x) for x in r.response_ids])
        r.mask = layout_mask(r.response_ids, max(map(len, r.response_ids))).to(device)
        score_old(fwd, wrapped, ref_model, r, plan.micro, G, need_old=need_old)
        if not in_micro:
            advantages(cfg, r, kl_coef)
        stats, losses, norms, applied_all = _updates(cfg, wrapped, optimizer, fwd, r, plan, per_minibatch, kl_coef,
                                                     lr, step, s, counters, generator, reuse=not need_old)
        row = _step_row(cfg, r, stats, info, device, kl_coef=kl_coef, loss=losses, norms=norms, lr=lr)
        row["rollout_s"], row["step_s"] = rollout_s, time.perf_counter() - t0
        if kl_ctl:
            kl_ctl.update(row["kl"], tc.batch_size * G)
            counters["kl_coef"] = kl_ctl.coef
        done = step + 1
        bar.update(1)
        fired = _watch(cfg, detector, counters, done, row, s)
        if applied_all and due(done, tc.log_every, tc.max_steps):
            bar.set_postfix(reward=f"{row['reward']:.3f}", kl=f"{row['kl']:.3f}")
            s.record(done, row)
        if s.is_main and cfg.sample_every and due(done, cfg.sample_every, tc.max_steps):
            _write_samples(s, done, r, G)
        stop_now = fired and cfg.hacking.stop
        if held and (due(done, tc.eval_every, tc.max_steps) or stop_now):  # always after the last step
            evaluated = evaluator(policy)
            s.record(done, evaluated)
            s.log(f"step {done}: {_eval_text(evaluated, cfg.eval.k)}")

        def write(at: int) -> None:
            s.checkpoint(at, cfg=cfg, write_model=lambda d: _save(trainee, policy, tok, d),
                         optimizer_state=optimizer.state_dict(), counters=counters, keep=tc.keep_checkpoints,
                         trainable=trainable_state(trainee) if cfg.lora.r else None)

        s.after_step(done, tc, write)
        if stop_now:
            s.log(f"stopping at step {done}: the divergence detector fired (hacking.stop=true)")
            break
    bar.close()
    if s.is_main:
        _save(trainee, policy, tok, s.run_dir)
        s.log(f"final policy: {s.run_dir} (llmlab chat --model {s.run_dir})")
    s.barrier()
    return s.run_dir


def _updates(cfg: OnlineConfig, wrapped: nn.Module, optimizer: Any, fwd: Forward, r: Rollouts, plan: Any,
             per_minibatch: int, kl_coef: float, lr: float, step: int, s: Session, counters: dict[str, Any],
             generator: torch.Generator, *, reuse: bool) -> tuple[dict[str, float], list[float], list[float], bool]:
    """epochs x minibatches optimiser steps on the rollout; returns (statistic sums, losses, grad norms,
    whether every update was applied). The approximate KL of a minibatch past stop_kl ends the step."""
    G, info, device = cfg.rollout.samples, s.info, s.device
    totals: dict[str, float] = {}
    losses: list[float] = []
    norms: list[float] = []
    applied_all = True
    n_prompts = plan.per_rank
    for _ in range(cfg.epochs):
        order = torch.randperm(n_prompts, generator=generator, device=generator.device).tolist() \
            if cfg.minibatches > 1 else list(range(n_prompts))
        for m in range(cfg.minibatches):
            groups = micro_groups(r, order[m * per_minibatch:(m + 1) * per_minibatch], plan.micro, G)
            rows = [i for idx in groups for i in idx]
            n_sequences = per_minibatch * info.world_size * G
            n_tokens = global_units(int(r.mask[rows].sum()), info, device)
            loss = torch.zeros((), device=device)
            sums: dict[str, torch.Tensor] = {}
            for j, idx in enumerate(groups):
                with accumulating(wrapped, j == len(groups) - 1):
                    part, part_stats = micro_loss(cfg, fwd, wrapped, r, idx, kl_coef=kl_coef, n_sequences=n_sequences,
                                                  n_tokens=n_tokens, reuse=reuse)
                    (part * info.world_size).backward()  # DDP averages: the sum over ranks is the global loss
                loss += part.detach() * info.world_size
                for k, v in part_stats.items():
                    sums[k] = sums.get(k, 0.0) + v.detach().float()
            loss_value = float(D.mean_over_ranks(loss, info))
            norm, applied = finish_step(wrapped, optimizer, loss_value, train=cfg.train, lr=lr, done=step + 1,
                                        counters=counters, run_dir=s.run_dir, log=s.log)
            applied_all &= applied
            names = sorted(sums)
            reduced = D.sum_over_ranks(torch.stack([sums[k] for k in names]), info).tolist()
            for k, v in zip(names, reduced, strict=True):
                totals[k] = totals.get(k, 0.0) + v
            totals["tokens"] = totals.get("tokens", 0.0) + n_tokens
            losses.append(loss_value)
            norms.append(norm)
            if cfg.stop_kl and reduced[names.index("approx_kl")] / max(n_tokens, 1) > cfg.stop_kl:
                return totals, losses, norms, applied_all
    return totals, losses, norms, applied_all


def _step_row(cfg: OnlineConfig, r: Rollouts, stats: dict[str, float], info: Any, device: torch.device, *,
              kl_coef: float, loss: list[float], norms: list[float], lr: float) -> dict[str, Any]:
    """The step's metrics over every process's responses."""
    sc = r.scored
    kl_seq = (rl.kl_estimate(r.old_logp, r.ref_logp, "k1") * r.mask).sum(dim=1)  # log pi(y)/pi_ref(y)
    gold = [g for g in sc.gold if not math.isnan(g)]
    proxy = [x for x in sc.proxy if not math.isnan(x)]
    reward = torch.tensor(sc.reward).view(-1, cfg.rollout.samples)
    flat = (reward.std(dim=1) == 0).float().sum() if cfg.rollout.samples > 1 else torch.tensor(0.0)
    local = torch.tensor([
        len(r), sum(sc.reward), sum(gold), len(gold), sum(proxy), len(proxy), float(kl_seq.sum()),
        float(r.mask.sum()), sum(sc.refused), float(flat), reward.shape[0], sum(x * x for x in sc.reward),
    ], dtype=torch.float64, device=device)
    (n, reward_sum, gold_sum, gold_n, proxy_sum, proxy_n, kl_sum, tokens, refused, flat_groups, groups,
     reward_sq) = D.sum_over_ranks(local, info).tolist()
    tokens_seen = max(stats.get("tokens", 1.0), 1.0)
    row: dict[str, Any] = {
        "reward": reward_sum / n, "reward_std": math.sqrt(max(reward_sq / n - (reward_sum / n) ** 2, 0.0)),
        "gold": gold_sum / gold_n if gold_n else None, "proxy": proxy_sum / proxy_n if proxy_n else None,
        "kl": kl_sum / n, "kl_coef": kl_coef, "response_len": tokens / n, "refusal_rate": refused / n,
        "flat_groups": flat_groups / groups, "entropy": stats["entropy"] / tokens_seen,
        "clip_frac": stats["clip_frac"] / tokens_seen, "approx_kl": stats["approx_kl"] / tokens_seen,
        "loss": sum(loss) / len(loss), "grad_norm": sum(norms) / len(norms), "lr": lr, "updates": len(loss),
    }
    if cfg.algo == "ppo":
        row["value_loss"] = stats["value_loss"] / tokens_seen
        row["explained_var"] = rl.explained_variance(r.values, r.returns, r.mask)
    return {k: v for k, v in row.items() if v is not None}


def _watch(cfg: OnlineConfig, detector: DivergenceDetector, counters: dict[str, Any], done: int,
           row: dict[str, Any], s: Session) -> bool:
    """Feed the divergence detector; True on the step it fires (a warning, logged once)."""
    if "proxy" not in row or "gold" not in row:
        return False
    counters["trace"].append([done, row["proxy"], row["gold"]])
    fired = detector.update(done, row["proxy"], row["gold"])
    if fired:
        row["hacking"] = 1
        s.log(f"warning: step {done}: reward hacking: over the last {cfg.hacking.window} steps the proxy reward rose "
              f"while the gold score fell (proxy {row['proxy']:.3f}, gold {row['gold']:.3f}, response length "
              f"{row['response_len']:.1f} tokens); consider a larger kl_coef, stopping here (hacking.stop=true), or "
              "mixing in the gold reward (reward.gold)")
    return fired


def _save(trainee: nn.Module, policy: nn.Module, tok: ChatTokenizer, directory: Path) -> None:
    save_policy(policy, tok, directory)
    if isinstance(trainee, PolicyWithValue):
        trainee.save_value(tok, Path(directory))


def _write_samples(s: Session, step: int, r: Rollouts, samples: int, n: int = 4) -> None:
    """The first response to each of the step's first `n` prompts, to samples.jsonl."""
    with open(s.run_dir / "samples.jsonl", "a", encoding="utf-8") as f:
        for i in range(0, min(n * samples, len(r)), samples):
            f.write(json.dumps({"step": step, "prompt": r.prompts[i].text, "response": r.texts[i],
                                "reward": r.scored.reward[i], "gold": _num(r.scored.gold[i]),
                                "proxy": _num(r.scored.proxy[i])}, ensure_ascii=False) + "\n")


def _num(x: float) -> float | None:
    return None if math.isnan(x) else x


def _reward_text(cfg: OnlineConfig) -> str:
    c = cfg.reward
    terms = [f"{w} x {name}" for name, w in (("gold", c.gold), ("rm", c.rm), ("format", c.format),
                                              ("length", c.length)) if w]
    return " + ".join(terms)


# ---------------------------------------------------------------------- prompts and evaluation


def prompt_sets(cfg: OnlineConfig, log: Any) -> tuple[list[Prompt], list[Prompt]]:
    """(train prompts, held-out prompts): the task world's train and eval splits drawn with data.tasks, or
    the user's rows split by data.eval_fraction."""
    d = cfg.data
    if not d.input:
        return (task_world_prompts(d.n, seed=d.seed, tasks=d.tasks, stream="online"),
                task_world_prompts(cfg.eval.n_prompts, seed=d.seed, split="eval", tasks=d.tasks, stream="online-eval")
                if cfg.eval.n_prompts else [])
    rows = input_prompts(d.input, gold_scorer=bool(cfg.reward.gold), strict=d.strict, log=log)
    n_held = min(cfg.eval.n_prompts, int(len(rows) * d.eval_fraction))
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(d.seed)).tolist()
    held = [rows[i] for i in order[:n_held]]
    train = [rows[i] for i in order[n_held:]]
    if not train:
        raise UserError(f"{', '.join(d.input)}: no prompts left to train on after holding out {n_held}")
    return train, held


class Evaluator:
    """Held-out evaluation of the policy: greedy answers (accuracy, gold score, proxy, length, refusals) and
    eval.k sampled answers per prompt (pass@1, pass@k, and the KL to the reference on them). The same
    seeded draws each time, so evaluations differ only by the policy."""

    def __init__(self, cfg: OnlineConfig, tok: ChatTokenizer, held: list[Prompt], rewards: Rewards, fwd: Forward,
                 ref_model: nn.Module, device: torch.device, info: Any) -> None:
        self.cfg, self.tok, self.rewards, self.fwd, self.ref, self.device, self.info = (cfg, tok, rewards, fwd,
                                                                                        ref_model, device, info)
        self.held = held[info.rank:: info.world_size]

    @torch.no_grad()
    def __call__(self, policy: nn.Module) -> dict[str, float]:
        cfg, k = self.cfg, self.cfg.eval.k
        mine = self.held
        if not mine:  # more processes than held-out prompts: this one adds nothing, but joins the reduction
            return self._reduce([0.0] * 10)
        rollout = dict(max_new_tokens=cfg.rollout.max_new_tokens, top_p=1.0, batch_size=cfg.rollout.batch_size,
                       device=self.device, generator=torch.Generator(device=self.device).manual_seed(cfg.train.seed))
        greedy = sample_rollouts(policy, self.tok, mine, samples=1, temperature=0.0, **rollout)
        g = self.rewards(greedy.prompts, greedy.texts, greedy.closed, [len(x) for x in greedy.response_ids])
        sampled = sample_rollouts(policy, self.tok, mine, samples=k, temperature=cfg.eval.temperature, **rollout)
        sg = self.rewards(sampled.prompts, sampled.texts, sampled.closed, [len(x) for x in sampled.response_ids])
        sampled.mask = layout_mask(sampled.response_ids, max(map(len, sampled.response_ids))).to(self.device)
        kl = 0.0
        for start in range(0, len(sampled), cfg.rollout.batch_size):
            idx = list(range(start, min(start + cfg.rollout.batch_size, len(sampled))))
            logp = self.fwd(policy, sampled, idx, temperature=cfg.eval.temperature)[0]
            ref = self.fwd(self.ref, sampled, idx, temperature=cfg.eval.temperature)[0]
            kl += float(((logp - ref) * sampled.mask[idx]).sum())
        correct = [float(x == 1.0) for x in g.gold]
        c = [sum(sg.gold[i * k + j] == 1.0 for j in range(k)) for i in range(len(mine))]
        proxy = [x for x in g.proxy if not math.isnan(x)]
        return self._reduce([len(mine), sum(correct), sum(x for x in g.gold if not math.isnan(x)),
                             sum(ci / k for ci in c), sum(rl.pass_at_k(k, ci, k) for ci in c), kl / k,
                             sum(len(x) for x in greedy.response_ids), sum(g.refused), sum(proxy), len(proxy)])

    def _reduce(self, sums: list[float]) -> dict[str, float]:
        """The eval/* row from this process's sums, added over every process."""
        k = self.cfg.eval.k
        local = torch.tensor(sums, dtype=torch.float64, device=self.device)
        n, acc, score, p1, pk, kl_sum, length, refused, proxy_sum, proxy_n = D.sum_over_ranks(local, self.info).tolist()
        row = {"eval/accuracy": acc / n, "eval/score": score / n, "eval/pass@1": p1 / n, f"eval/pass@{k}": pk / n,
               "eval/kl": kl_sum / n, "eval/response_len": length / n, "eval/refusal_rate": refused / n, "eval/n": n}
        if proxy_n:
            row["eval/proxy"] = proxy_sum / proxy_n
        return row


def _eval_text(row: dict[str, float], k: int) -> str:
    return (f"held-out accuracy {row['eval/accuracy']:.3f}, pass@1 {row['eval/pass@1']:.3f}, pass@{k} "
            f"{row[f'eval/pass@{k}']:.3f}, KL {row['eval/kl']:.3f}, length {row['eval/response_len']:.1f} tokens"
            + (f", proxy {row['eval/proxy']:.3f}" if "eval/proxy" in row else ""))


def evaluate_policy(cfg: OnlineConfig, policy_dir: str) -> dict[str, float]:
    """The held-out evaluation of any policy folder against cfg's reference (cfg.reference_model, else
    cfg.model) on cfg's held-out prompts and reward: what an online run logs as eval/*, for a policy trained
    another way (DPO in the reward-hacking lab's frontier)."""
    from llmlab.model.device import pick_device

    device = pick_device(cfg.train.device)
    info = D.DistInfo()
    policy, tok = load_policy(policy_dir, device=device)
    ref_model = load_policy(cfg.reference_model or cfg.model, device=device)[0].eval().requires_grad_(False)
    rewards = Rewards(cfg.reward, device=device, batch_size=cfg.rollout.batch_size)
    held = prompt_sets(cfg, lambda message: None)[1]
    fwd = Forward(cfg, tok, device, autocast_for(device, cfg.train.dtype), tok.inner.id_count if tok.is_llmlab else None)
    return Evaluator(cfg, tok, held, rewards, fwd, ref_model, device, info)(policy)
