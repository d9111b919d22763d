"""The math of online RL for language models, as pure functions on tensors: advantages, KL
estimators, the clipped losses, the loss normalisations. The trainer (align/online.py) only
gathers their inputs; tests/align/test_rl.py checks each on hand-worked cases and against TRL.

Shapes: B sequences (responses), T response positions; `mask` (B, T) is 1 on a response's
tokens and 0 on padding after it. Per-token log-probs are those of the sampled tokens.

    kl_estimate(logp, ref_logp, kind)        k1, k2, k3 per token (Schulman 2020)
    token_rewards(score, logp, ref, mask)    -coef * KL per token, + the score at the last token (PPO)
    gae(rewards, values, mask)               advantages and returns (Schulman et al. 2016)
    whiten(x, mask)                          advantage normalisation over the batch's tokens
    group_advantages(rewards, G)             GRPO's (r - mean_group) / std (Shao et al. 2024; Liu et al. 2025)
    rloo_advantages(rewards, G)              leave-one-out baseline (Kool et al. 2019; Ahmadian et al. 2024)
    clipped_policy_loss(...)                 PPO's clipped surrogate, asymmetric clip (DAPO's clip-higher)
    clipped_value_loss(...)                  PPO's clipped value loss
    aggregate(per_token, mask, norm, ...)    sequence mean (GRPO), token mean (DAPO), constant (Dr. GRPO)
    entropy(logits)                          per-position entropy of the policy
    AdaptiveKL                               the adaptive KL coefficient (Ziegler et al. 2019)
    pass_at_k(n, c, k)                       the unbiased pass@k estimator (Chen et al. 2021)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

KLKind = Literal["k1", "k2", "k3"]
Normalisation = Literal["sequence", "token", "constant"]
GroupScale = Literal["group", "batch", "none"]


def _masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x where mask is 1, else 0: a select, not a product, so an inf or nan on padding (exp of a padded
    log-ratio) cannot turn into nan (inf * 0) and leak into sums."""
    return torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` over the positions where `mask` is 1 (all of them, or along `dim`); 0 where none is."""
    m = mask.to(x.dtype)
    if dim is None:
        return (x * m).sum() / m.sum().clamp(min=1.0)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor, *, unbiased: bool = True) -> torch.Tensor:
    """Variance of the masked entries (Bessel-corrected by default, as TRL's masked_var)."""
    m = mask.to(x.dtype)
    n = m.sum()
    centred = (x - masked_mean(x, mask)) * m
    var = (centred**2).sum() / n.clamp(min=1.0)
    if unbiased:
        var = var * n / (n - 1).clamp(min=1.0)
    return var


def whiten(x: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked entries of the whole batch, 0 on padding. PPO normalises its
    advantages so (Schulman et al. 2017; TRL's masked_whiten); shift_mean=False keeps the mean, as
    for rewards whose sign carries meaning."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: KLKind = "k1") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled from pi (J. Schulman, "Approximating KL
    divergence", 2020, http://joschu.net/blog/kl-approx.html), with log r = log pi_ref - log pi:

        k1 = -log r                  unbiased, high variance, can be negative per token
        k2 = (log r)^2 / 2           biased, low variance, >= 0
        k3 = (r - 1) - log r         unbiased, low variance, >= 0 (GRPO's KL term)

    Their sums over a response estimate the sequence KL; k1 summed is exactly log pi(y)/pi_ref(y)."""
    log_r = ref_logp - logp
    if kind == "k1":
        return -log_r
    if kind == "k2":
        return 0.5 * log_r**2
    if kind == "k3":
        return torch.expm1(log_r) - log_r
    raise ValueError(f"unknown KL estimator {kind!r}; use k1, k2 or k3")


def token_rewards(score: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, *,
                  kl_coef: float, kind: KLKind = "k1") -> tuple[torch.Tensor, torch.Tensor]:
    """(rewards (B, T), per-token KL (B, T)) of RLHF with PPO (Ziegler et al. 2019,
    https://arxiv.org/abs/1909.08593; Stiennon et al. 2020): every response token is charged
    -kl_coef * KL to the reference, and the sequence's score (B,) is paid at its last token."""
    m = mask.to(logp.dtype)
    kl = _masked(kl_estimate(logp, ref_logp, kind), mask)
    rewards = -kl_coef * kl
    last = (m.sum(dim=1).long() - 1).clamp(min=0)
    rewards = rewards.clone()
    rewards[torch.arange(rewards.shape[0], device=rewards.device), last] += score.to(rewards.dtype)
    return rewards * m, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns), both (B, T), by generalised advantage estimation (Schulman et al. 2016,
    https://arxiv.org/abs/1506.02438):

        delta_t = r_t + gamma V_{t+1} - V_t,    A_t = delta_t + gamma lam A_{t+1},    returns = A + V

    with V = 0 past a response's last token (the episode ends there). Right-padded rows: `mask`
    is 1 on positions 0..n-1 of row b."""
    m = mask.to(values.dtype)
    values, rewards = _masked(values, mask), _masked(rewards, mask)
    B, T = rewards.shape
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    next_value = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(T)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * m[:, t]
        advantages[:, t] = running
        next_value = values[:, t]
    return advantages, (advantages + values) * m


def group_advantages(rewards: torch.Tensor, group_size: int, *, scale: GroupScale = "group",
                     eps: float = 1e-4) -> torch.Tensor:
    """GRPO's advantage of each of the G = group_size responses to a prompt (rows in groups of G):
    r - mean of its group, divided by the group's standard deviation (Shao et al. 2024, DeepSeekMath,
    https://arxiv.org/abs/2402.03300), by the whole batch's (scale="batch", as TRL offers), or by
    nothing (scale="none": "Dr. GRPO", Liu et al. 2025, https://arxiv.org/abs/2503.20783, which shows the
    division favours prompts that are too easy or too hard). Standard deviations are Bessel-corrected
    and eps is added to them, as in TRL, so a group of equal rewards gets advantage 0."""
    grouped = _groups(rewards, group_size)
    advantages = (grouped - grouped.mean(dim=1, keepdim=True)).reshape(-1)
    if scale == "none":
        return advantages
    if scale == "group":
        std = grouped.std(dim=1, keepdim=True).expand_as(grouped).reshape(-1)
    elif scale == "batch":
        std = rewards.std().expand_as(rewards)
    else:
        raise ValueError(f"unknown scale {scale!r}; use group, batch or none")
    return advantages / (std + eps)


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out: each response's reward minus the mean reward of the other G - 1
    responses to its prompt (Kool et al. 2019, "Buy 4 REINFORCE samples, get a baseline for free";
    Ahmadian et al. 2024, https://arxiv.org/abs/2402.14740). The baseline does not use the response
    itself, so the gradient estimate stays unbiased; equal to G/(G-1) times r - group mean."""
    grouped = _groups(rewards, group_size)
    baseline = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - baseline).reshape(-1)


def _groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if group_size < 2 or rewards.numel() % group_size:
        raise ValueError(f"need groups of at least 2 responses dividing the batch; got {rewards.numel()} "
                         f"rewards in groups of {group_size}")
    return rewards.reshape(-1, group_size)


def clipped_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, *,
                        clip_low: float = 0.2, clip_high: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token loss, per-token "was clipped" 0/1) of PPO's clipped surrogate (Schulman et al. 2017,
    https://arxiv.org/abs/1707.06347):

        ratio = pi / pi_old,   loss = -min(ratio A, clip(ratio, 1 - clip_low, 1 + clip_high) A)

    `advantages` is (B, T) or (B,) (one per sequence, broadcast over its tokens). clip_high > clip_low
    is DAPO's "clip-higher" (Yu et al. 2025, https://arxiv.org/abs/2503.14476): low-probability tokens
    may grow further, which keeps entropy from collapsing. None: clip_high = clip_low."""
    if advantages.dim() == 1:
        advantages = advantages[:, None]
    high = clip_low if clip_high is None else clip_high
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + high) * advantages
    return -torch.min(unclipped, clipped), (clipped < unclipped).to(logp.dtype)


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, *,
                       clip: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token loss, per-token "was clipped" 0/1) of PPO's value loss, clipped like the policy
    (the PPO2 baselines; Huang et al. 2022, "The 37 implementation details of PPO"):

        loss = 1/2 max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2)"""
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    a, b = (values - returns) ** 2, (clipped_values - returns) ** 2
    return 0.5 * torch.max(a, b), (b > a).to(values.dtype)


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, normalisation: Normalisation, *, n_sequences: int,
              n_tokens: int, max_tokens: int) -> torch.Tensor:
    """A (micro-)batch's share of the step's loss from per-token losses (B, T), in the three ways GRPO
    variants differ (the counts are those of the whole step's batch, over every process and micro-batch,
    so the loss does not depend on how the batch is split: train/batches.py's rule):

        sequence   mean over sequences of each sequence's token mean (GRPO, Shao et al. 2024): a token
                   of a long response weighs less than one of a short one (TRL's loss_type="grpo")
        token      sum over every token / n_tokens (DAPO, Yu et al. 2025; TRL's "dapo", and "bnpo"
                   with one micro-batch): every token weighs the same
        constant   sum over every token / (n_sequences * max_tokens) (Dr. GRPO, Liu et al. 2025;
                   TRL's "dr_grpo"): no length-dependent weight at all, so the loss is unbiased"""
    m = mask.to(per_token.dtype)
    masked = _masked(per_token, mask)
    if normalisation == "sequence":
        per_sequence = masked.sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
        return per_sequence.sum() / n_sequences
    if normalisation == "token":
        return masked.sum() / max(n_tokens, 1)
    if normalisation == "constant":
        return masked.sum() / (n_sequences * max_tokens)
    raise ValueError(f"unknown normalisation {normalisation!r}; use sequence, token or constant")


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax over the last dimension, in nats, computed in float32:
    H = logsumexp(z) - sum softmax(z) z."""
    z = logits.float()
    return torch.logsumexp(z, dim=-1) - (torch.softmax(z, dim=-1) * z).sum(dim=-1)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(R - V) / Var(R) over the masked tokens: 1 is a perfect critic, 0 one that predicts the
    mean, negative one worse than that (nan when the returns do not vary)."""
    var_returns = float(masked_var(returns, mask))
    if var_returns == 0.0:
        return float("nan")
    return 1.0 - float(masked_var(returns - values, mask)) / var_returns


@dataclass
class AdaptiveKL:
    """The KL coefficient that steers the policy's KL to the reference toward `target` (Ziegler et al.
    2019, section 2.2): after each batch, with e = clip(KL / target - 1, -0.2, 0.2),
    coef <- coef * (1 + e * n_steps / horizon)."""

    coef: float
    target: float
    horizon: int = 10_000

    def update(self, kl: float, n_steps: int) -> float:
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.coef *= 1.0 + error * n_steps / self.horizon
        return self.coef


def pass_at_k(n: int, c: int, k: int) -> float:
    """The chance that at least one of k answers drawn without replacement from n, of which c are
    correct, is correct: 1 - C(n - c, k) / C(n, k) (Chen et al. 2021, https://arxiv.org/abs/2107.03374;
    unbiased, unlike 1 - (1 - c/n)^k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))
