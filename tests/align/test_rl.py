"""align/rl.py on hand-worked cases and against independent float64 reimplementations (plain Python loops
and NumPy written here, not calls back into rl.py). TRL parity of the same functions: test_rl_trl.py.

Conventions: B sequences, T positions, right padding; PAD = 1e3 marks values on padding that must never
reach a result (a leak would move it by hundreds).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from llmlab.align.rl import (
    AdaptiveKL,
    aggregate,
    clipped_policy_loss,
    clipped_value_loss,
    entropy,
    explained_variance,
    gae,
    group_advantages,
    kl_estimate,
    masked_mean,
    masked_var,
    pass_at_k,
    rloo_advantages,
    token_rewards,
    whiten,
)

PAD = 1e3
F64 = {"rtol": 1e-12, "atol": 1e-12}


def right_padded(lengths: list[int], T: int) -> torch.Tensor:
    """mask (B, T): 1 on positions 0..n-1 of each row."""
    return (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).to(torch.float64)


def t64(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


# ---------------------------------------------------------------------- masked statistics


def test_masked_mean_and_var_hand_case() -> None:
    """Masked entries 1, 2, 4: mean 7/3; squared deviations 16/9 + 1/9 + 25/9 = 42/9 = 14/3, so the
    biased variance is 14/9 and the Bessel one 14/3 / 2 = 7/3. Along dim 1: rows [1, 2] -> 1.5, [4] -> 4,
    and a row with no masked entry -> 0 (not nan)."""
    x = t64([[1.0, 2.0, PAD], [4.0, PAD, PAD], [PAD, PAD, PAD]])
    mask = t64([[1, 1, 0], [1, 0, 0], [0, 0, 0]])
    torch.testing.assert_close(masked_mean(x, mask), t64(7 / 3), **F64)
    torch.testing.assert_close(masked_mean(x, mask, dim=1), t64([1.5, 4.0, 0.0]), **F64)
    torch.testing.assert_close(masked_var(x, mask), t64(7 / 3), **F64)
    torch.testing.assert_close(masked_var(x, mask, unbiased=False), t64(14 / 9), **F64)
    # a bool mask is the same mask
    torch.testing.assert_close(masked_var(x, mask.bool()), t64(7 / 3), **F64)


def test_masked_var_matches_numpy_on_random_batch() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 7, generator=g, dtype=torch.float64)
    mask = right_padded([7, 3, 1, 5, 2], 7)
    values = x[mask.bool()].numpy()
    torch.testing.assert_close(masked_mean(x, mask), t64(values.mean()), **F64)
    torch.testing.assert_close(masked_var(x, mask), t64(values.var(ddof=1)), **F64)
    torch.testing.assert_close(masked_var(x, mask, unbiased=False), t64(values.var(ddof=0)), **F64)


def test_whiten_matches_numpy_and_ignores_padding() -> None:
    """(x - mean) / sqrt(var_bessel + eps) on the masked entries, 0 on padding; shift_mean=False adds the
    mean back. The result's masked mean is 0 and its Bessel variance var / (var + eps)."""
    g = torch.Generator().manual_seed(1)
    x = 3.0 + 2.0 * torch.randn(4, 6, generator=g, dtype=torch.float64)
    mask = right_padded([6, 2, 4, 1], 6)
    x = torch.where(mask.bool(), x, t64(PAD))
    v = x[mask.bool()].numpy()
    eps = 1e-8
    expected = np.zeros(x.shape)
    expected[mask.bool().numpy()] = (v - v.mean()) / np.sqrt(v.var(ddof=1) + eps)
    out = whiten(x, mask, eps=eps)
    torch.testing.assert_close(out, torch.from_numpy(expected), **F64)
    assert abs(float(masked_mean(out, mask))) < 1e-12
    assert float(masked_var(out, mask)) == pytest.approx(v.var(ddof=1) / (v.var(ddof=1) + eps), abs=1e-12)
    kept = whiten(x, mask, shift_mean=False, eps=eps)
    expected[mask.bool().numpy()] += v.mean()
    torch.testing.assert_close(kept, torch.from_numpy(expected), **F64)
    # padding never matters
    other = torch.where(mask.bool(), x, t64(-7.0))
    torch.testing.assert_close(whiten(other, mask, eps=eps), out, **F64)


# ---------------------------------------------------------------------- KL estimators


def test_kl_estimates_hand_case() -> None:
    """pi = 1/2, pi_ref = 1/4: log r = log(1/4) - log(1/2) = -ln 2.
    k1 = ln 2 = 0.693147; k2 = (ln 2)^2 / 2 = 0.240227; k3 = (1/2 - 1) + ln 2 = 0.193147."""
    logp, ref = t64([math.log(0.5)]), t64([math.log(0.25)])
    ln2 = math.log(2.0)
    torch.testing.assert_close(kl_estimate(logp, ref, "k1"), t64([ln2]), **F64)
    torch.testing.assert_close(kl_estimate(logp, ref, "k2"), t64([ln2**2 / 2]), **F64)
    torch.testing.assert_close(kl_estimate(logp, ref, "k3"), t64([ln2 - 0.5]), **F64)
    # equal distributions: every estimator is exactly 0
    for kind in ("k1", "k2", "k3"):
        assert float(kl_estimate(logp, logp, kind)[0]) == 0.0
    with pytest.raises(ValueError, match="k4"):
        kl_estimate(logp, ref, "k4")  # type: ignore[arg-type]


def test_k1_and_k3_are_unbiased_and_k2_nonnegative() -> None:
    """Exact expectations over x ~ p on a 5-outcome distribution: sum_x p(x) k(x) = KL(p || q) for k1
    (sum p log p/q, the definition) and k3 (sum p (q/p - 1) = 0, plus the k1 part); k2 and k3 are >= 0
    at every x, k1 is negative where q > p. k2 is biased: its expectation is not KL here."""
    p = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    q = np.array([0.1, 0.3, 0.3, 0.2, 0.1])
    kl = float(np.sum(p * np.log(p / q)))
    logp, ref = torch.from_numpy(np.log(p)), torch.from_numpy(np.log(q))
    pt = torch.from_numpy(p)
    k1, k2, k3 = (kl_estimate(logp, ref, k) for k in ("k1", "k2", "k3"))
    assert float((pt * k1).sum()) == pytest.approx(kl, abs=1e-12)
    assert float((pt * k3).sum()) == pytest.approx(kl, abs=1e-12)
    assert bool((k2 >= 0).all()) and bool((k3 >= 0).all())
    assert bool((k1 < 0).any())  # per-sample k1 goes negative where q > p
    assert abs(float((pt * k2).sum()) - kl) > 1e-3  # biased
    # k3 = q/p - 1 - log(q/p) elementwise
    torch.testing.assert_close(k3, torch.from_numpy(q / p - 1 - np.log(q / p)), **F64)


# ---------------------------------------------------------------------- PPO rewards and GAE


def test_token_rewards_hand_case() -> None:
    """kl_coef 0.1, k1 = logp - ref. Row 0 (3 tokens): k1 = [0.5, -0.2, 0.1], rewards -0.1 k1 =
    [-0.05, 0.02, -0.01] plus the score 2 at the last token -> [-0.05, 0.02, 1.99, 0]. Row 1 (1 token):
    k1 = [0.3] -> [-0.03 - 1 = -1.03, 0, 0, 0]. Padding (junk log-probs) contributes nothing."""
    logp = t64([[-1.0, -2.0, -0.5, -30.0], [-0.7, -25.0, -0.01, -9.0]])
    ref = t64([[-1.5, -1.8, -0.6, -0.2], [-1.0, -0.3, -40.0, -0.5]])
    mask = right_padded([3, 1], 4)
    rewards, kl = token_rewards(t64([2.0, -1.0]), logp, ref, mask, kl_coef=0.1)
    torch.testing.assert_close(kl, t64([[0.5, -0.2, 0.1, 0.0], [0.3, 0.0, 0.0, 0.0]]), **F64)
    torch.testing.assert_close(rewards, t64([[-0.05, 0.02, 1.99, 0.0], [-1.03, 0.0, 0.0, 0.0]]), **F64)
    # k3 as the estimator: (r - 1) - log r per token, the score at the same place
    rewards3, kl3 = token_rewards(t64([2.0, -1.0]), logp, ref, mask, kl_coef=0.1, kind="k3")
    lr = torch.where(mask.bool(), ref - logp, 0.0)
    torch.testing.assert_close(kl3, torch.expm1(lr) - lr, **F64)
    torch.testing.assert_close(rewards3, -0.1 * kl3 + t64([[0, 0, 2.0, 0], [-1.0, 0, 0, 0]]), **F64)


def test_extreme_padding_log_probs_do_not_leak_nan() -> None:
    """Padding log-probs are whatever the model gave the pad tokens. With ref - logp > ~88.7 on a padded
    position in float32, k3's exp overflows to inf; masking by a product would make it inf * 0 = nan and
    spread it through gae to every advantage of the row. Masking selects instead."""
    logp, ref = torch.tensor([[-1.0, -100.0]]), torch.tensor([[-1.2, -1.0]])
    mask = torch.tensor([[1.0, 0.0]])
    rewards, kl = token_rewards(torch.tensor([1.0]), logp, ref, mask, kl_coef=0.1, kind="k3")
    adv, _ = gae(rewards, torch.zeros(1, 2), mask)
    assert bool(torch.isfinite(kl).all()) and bool(torch.isfinite(adv).all())


def gae_reference(rewards: np.ndarray, values: np.ndarray, lengths: list[int], gamma: float,
                  lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Textbook GAE, one row at a time over its own length only (no padding in sight)."""
    adv, ret = np.zeros_like(rewards), np.zeros_like(rewards)
    for b, n in enumerate(lengths):
        running = 0.0
        for t in reversed(range(n)):
            next_v = values[b, t + 1] if t + 1 < n else 0.0
            delta = rewards[b, t] + gamma * next_v - values[b, t]
            running = delta + gamma * lam * running
            adv[b, t] = running
            ret[b, t] = running + values[b, t]
    return adv, ret


def test_gae_hand_case() -> None:
    """gamma = lam = 1, r = [0, 1], V = [0.5, 0.2]: delta_1 = 1 + 0 - 0.2 = 0.8, A_1 = 0.8;
    delta_0 = 0 + 0.2 - 0.5 = -0.3, A_0 = -0.3 + 0.8 = 0.5; returns A + V = [1, 1] (the reward to go).
    With gamma = 0.5, lam = 0.5: delta_0 = 0 + 0.5 * 0.2 - 0.5 = -0.4, A_0 = -0.4 + 0.25 * 0.8 = -0.2."""
    r, v, m = t64([[0.0, 1.0, PAD]]), t64([[0.5, 0.2, PAD]]), right_padded([2], 3)
    adv, ret = gae(r, v, m, gamma=1.0, lam=1.0)
    torch.testing.assert_close(adv, t64([[0.5, 0.8, 0.0]]), **F64)
    torch.testing.assert_close(ret, t64([[1.0, 1.0, 0.0]]), **F64)
    adv, _ = gae(r, v, m, gamma=0.5, lam=0.5)
    torch.testing.assert_close(adv, t64([[-0.2, 0.8, 0.0]]), **F64)


def test_gae_matches_per_row_loop_with_different_lengths_and_ignores_padding() -> None:
    g = torch.Generator().manual_seed(2)
    lengths, T = [6, 1, 4, 3, 5], 6
    mask = right_padded(lengths, T)
    rewards = torch.randn(len(lengths), T, generator=g, dtype=torch.float64)
    values = torch.randn(len(lengths), T, generator=g, dtype=torch.float64)
    exp_adv, exp_ret = gae_reference(rewards.numpy(), values.numpy(), lengths, 0.9, 0.8)
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv, torch.from_numpy(exp_adv), **F64)
    torch.testing.assert_close(ret, torch.from_numpy(exp_ret), **F64)
    junk = torch.full_like(rewards, PAD)
    adv2, ret2 = gae(torch.where(mask.bool(), rewards, junk), torch.where(mask.bool(), values, -junk), mask,
                     gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv2, adv, **F64)
    torch.testing.assert_close(ret2, ret, **F64)


# ---------------------------------------------------------------------- GRPO and RLOO advantages


def test_group_advantages_hand_case() -> None:
    """Group [1, 0, 0, 1]: mean 0.5, Bessel std sqrt(4 * 0.25 / 3) = 0.577350; advantages +-0.5 /
    (0.577350 + 1e-4) = +-0.865875. Group [2, 2, 2, 2]: all 0 (0 / (0 + eps)).
    scale="batch": the batch's std over all 8, mean 1.25: deviations^2 sum = 2*0.0625 + 2*1.5625 +
    4*0.5625 = 5.5, std sqrt(5.5 / 7) = 0.886405. scale="none": r - group mean."""
    r = t64([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    s = math.sqrt(1 / 3) + 1e-4
    group = group_advantages(r, 4)
    torch.testing.assert_close(group, t64([0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s, 0, 0, 0, 0]), **F64)
    assert 0.5 / s == pytest.approx(0.865875, abs=1e-6)
    centred = t64([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])
    torch.testing.assert_close(group_advantages(r, 4, scale="none"), centred, **F64)
    torch.testing.assert_close(group_advantages(r, 4, scale="batch"), centred / (math.sqrt(5.5 / 7) + 1e-4), **F64)
    torch.testing.assert_close(group_advantages(r, 4, scale="group", eps=0.0)[:4], t64([1, -1, -1, 1]) * math.sqrt(3) / 2,
                               **F64)


def test_group_of_equal_rewards_has_zero_advantage_and_numpy_agrees() -> None:
    g = np.random.default_rng(3)
    r = g.normal(size=(5, 3))
    r[2] = 0.7  # one group of equal rewards (0.7 is not a binary fraction: its mean rounds)
    r[4] = 0.5
    flat = torch.from_numpy(r.reshape(-1))
    for scale in ("group", "batch", "none"):
        adv = group_advantages(flat, 3, scale=scale).reshape(5, 3)
        assert float(adv[2].abs().max()) < 1e-9, scale  # ~1e-16 rounding / (0 + 1e-4)
        assert bool((adv[4] == 0).all()), scale
        centred = r - r.mean(axis=1, keepdims=True)
        std = {"group": r.std(axis=1, ddof=1, keepdims=True), "batch": r.std(ddof=1), "none": None}[scale]
        expected = centred if std is None else centred / (std + 1e-4)
        torch.testing.assert_close(adv, torch.from_numpy(expected), **F64)


def test_advantage_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="groups"):
        group_advantages(t64([1.0, 2.0, 3.0]), 2)
    with pytest.raises(ValueError, match="groups"):
        rloo_advantages(t64([1.0, 2.0]), 1)
    with pytest.raises(ValueError, match="scale"):
        group_advantages(t64([1.0, 2.0]), 2, scale="std")  # type: ignore[arg-type]


def test_rloo_hand_case_and_identity() -> None:
    """Group [1, 0, 0, 1]: the baseline of a 1 is (0 + 0 + 1) / 3 = 1/3 -> 2/3; of a 0 is (1 + 0 + 1) / 3 =
    2/3 -> -2/3. Identity: G / (G - 1) (r - mean) = 4/3 * +-0.5 = +-2/3. Group [3, 5]: 3 - 5 = -2, 5 - 3 = 2."""
    r = t64([1.0, 0.0, 0.0, 1.0])
    torch.testing.assert_close(rloo_advantages(r, 4), t64([2, -2, -2, 2]) / 3, **F64)
    torch.testing.assert_close(rloo_advantages(t64([3.0, 5.0, 1.0, 1.0]), 2), t64([-2.0, 2.0, 0.0, 0.0]), **F64)
    g = torch.Generator().manual_seed(4)
    for G in (2, 3, 5):
        rewards = torch.randn(4 * G, generator=g, dtype=torch.float64)
        grouped = rewards.reshape(4, G)
        identity = (G / (G - 1) * (grouped - grouped.mean(1, keepdim=True))).reshape(-1)
        torch.testing.assert_close(rloo_advantages(rewards, G), identity, **F64)
        # an explicit leave-one-out loop
        loo = [float(rewards[i]) - (float(grouped[i // G].sum()) - float(rewards[i])) / (G - 1)
               for i in range(4 * G)]
        torch.testing.assert_close(rloo_advantages(rewards, G), t64(loo), **F64)


# ---------------------------------------------------------------------- clipped losses


def test_clipped_policy_loss_hand_cases_with_clip_higher() -> None:
    """clip_low 0.2, clip_high 0.28: the ratio is clipped to [0.8, 1.28].

        ratio  A    unclipped  clipped        -min     clipped?
        1.5   +1    1.5        1.28           -1.28    yes (positive A, ratio above 1 + high)
        1.5   -1   -1.5       -1.28            1.5     no  (negative A: the pessimistic term is unclipped)
        0.5   +1    0.5        0.8            -0.5     no
        0.5   -1   -0.5       -0.8             0.8     yes (negative A, ratio below 1 - low)
        1.25  +2    2.5        2.5            -2.5     no  (inside 1.28; symmetric 0.2 would clip: -2.4)
        0.75  -2   -1.5       -1.6             1.6     yes
        1.0    0    0          0               0       no

    clip fraction 3/7; with clip_high = None (= 0.2) also 1.25/+2 clips: 4/7."""
    ratio = t64([[1.5, 1.5, 0.5, 0.5, 1.25, 0.75, 1.0]])
    adv = t64([[1.0, -1.0, 1.0, -1.0, 2.0, -2.0, 0.0]])
    old = t64([[-1.0, -2.0, -0.3, -4.0, -1.2, -0.1, -2.5]])
    logp = (old + ratio.log()).requires_grad_()
    loss, clipped = clipped_policy_loss(logp, old, adv, clip_low=0.2, clip_high=0.28)
    torch.testing.assert_close(loss, t64([[-1.28, 1.5, -0.5, 0.8, -2.5, 1.6, 0.0]]), rtol=0, atol=1e-12)
    torch.testing.assert_close(clipped, t64([[1, 0, 0, 1, 0, 1, 0]]), **F64)
    assert float(clipped.mean()) == pytest.approx(3 / 7)
    # gradient: d(-ratio A)/d logp = -ratio A where unclipped, 0 where clipped
    loss.sum().backward()
    torch.testing.assert_close(logp.grad, t64([[0.0, 1.5, -0.5, 0.0, -2.5, 0.0, 0.0]]), rtol=0, atol=1e-12)
    sym, sym_clipped = clipped_policy_loss(logp.detach(), old, adv, clip_low=0.2)
    torch.testing.assert_close(sym[0, 4], t64(-2.4), rtol=0, atol=1e-12)
    assert float(sym_clipped.mean()) == pytest.approx(4 / 7)
    # per-sequence advantages (B,) broadcast over the tokens
    per_seq, _ = clipped_policy_loss(logp.detach().expand(2, 7), old.expand(2, 7), t64([1.0, -1.0]))
    torch.testing.assert_close(per_seq[1], -torch.min(-ratio[0], -ratio[0].clamp(0.8, 1.2)), **F64)


def test_clipped_value_loss_hand_case() -> None:
    """clip 0.2, loss = 1/2 max((V - R)^2, (clip(V, V_old +- 0.2) - R)^2):

        V    V_old  R     (V-R)^2  V_clip  (V_clip-R)^2  loss    clipped?
        1.0  0.5    1.2   0.04     0.7     0.25          0.125   yes
        0.6  0.5    1.0   0.16     0.6     0.16          0.08    no (inside the range)
        0.0  0.5    0.0   0        0.3     0.09          0.045   yes
        1.0  0.5    0.0   1.0      0.7     0.49          0.5     no (the unclipped error is larger)"""
    v, old, ret = t64([1.0, 0.6, 0.0, 1.0]), t64([0.5, 0.5, 0.5, 0.5]), t64([1.2, 1.0, 0.0, 0.0])
    loss, clipped = clipped_value_loss(v, old, ret, clip=0.2)
    torch.testing.assert_close(loss, t64([0.125, 0.08, 0.045, 0.5]), rtol=0, atol=1e-12)
    torch.testing.assert_close(clipped, t64([1.0, 0.0, 1.0, 0.0]), **F64)


# ---------------------------------------------------------------------- loss normalisation


def test_aggregate_three_normalisations_hand_case() -> None:
    """Rows [1, 2, 3] (3 tokens) and [4, 5] (2 tokens), padding PAD:
    sequence: (6/3 + 9/2) / 2 = (2 + 4.5) / 2 = 3.25; token: 15 / 5 = 3; constant (max_tokens 4):
    15 / (2 * 4) = 1.875."""
    per_token = t64([[1.0, 2.0, 3.0, PAD], [4.0, 5.0, PAD, PAD]])
    mask = right_padded([3, 2], 4)
    counts = {"n_sequences": 2, "n_tokens": 5, "max_tokens": 4}
    assert float(aggregate(per_token, mask, "sequence", **counts)) == pytest.approx(3.25, abs=1e-12)
    assert float(aggregate(per_token, mask, "token", **counts)) == pytest.approx(3.0, abs=1e-12)
    assert float(aggregate(per_token, mask, "constant", **counts)) == pytest.approx(1.875, abs=1e-12)
    with pytest.raises(ValueError, match="normalisation"):
        aggregate(per_token, mask, "batch", **counts)  # type: ignore[arg-type]


@pytest.mark.parametrize("normalisation", ["sequence", "token", "constant"])
def test_aggregate_micro_batch_shares_sum_to_the_whole_batch(normalisation: str) -> None:
    """Each micro-batch's share, with the step's global counts, sums to the whole batch's value, for
    uneven splits and rows of very different lengths; padding values never matter."""
    g = torch.Generator().manual_seed(5)
    lengths, T = [7, 1, 3, 7, 2, 5, 4], 7
    mask = right_padded(lengths, T)
    per_token = torch.where(mask.bool(), torch.randn(len(lengths), T, generator=g, dtype=torch.float64), t64(PAD))
    counts = {"n_sequences": len(lengths), "n_tokens": sum(lengths), "max_tokens": 9}
    whole = aggregate(per_token, mask, normalisation, **counts)
    for cuts in ([0, 3, 7], [0, 1, 2, 6, 7], [0, 5, 7]):
        shares = [aggregate(per_token[a:b], mask[a:b], normalisation, **counts) for a, b in itertools.pairwise(cuts)]
        torch.testing.assert_close(sum(shares), whole, **F64)
    # an independent value per normalisation
    rows = [per_token[b, :n].tolist() for b, n in enumerate(lengths)]
    expected = {"sequence": sum(sum(r) / len(r) for r in rows) / len(rows),
                "token": sum(map(sum, rows)) / sum(lengths),
                "constant": sum(map(sum, rows)) / (len(rows) * 9)}[normalisation]
    assert float(whole) == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------------- diagnostics


def test_entropy_matches_numpy_and_limits() -> None:
    """H = -sum p log p in float64 NumPy; uniform over V -> ln V; a near one-hot -> ~0; bf16 logits
    are computed in float32."""
    g = torch.Generator().manual_seed(6)
    logits = 3.0 * torch.randn(2, 3, 11, generator=g)
    z = logits.double().numpy()
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    expected = -(p * np.log(p)).sum(-1)
    out = entropy(logits)
    assert out.dtype == torch.float32 and out.shape == (2, 3)
    torch.testing.assert_close(out.double(), torch.from_numpy(expected), rtol=0, atol=1e-5)
    assert float(entropy(torch.zeros(7))) == pytest.approx(math.log(7), abs=1e-6)
    assert float(entropy(torch.tensor([50.0, 0.0, 0.0]))) == pytest.approx(0.0, abs=1e-6)
    half = entropy(logits.bfloat16())
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, entropy(logits.bfloat16().float()))


def test_explained_variance() -> None:
    """Perfect critic -> 1; predicting the mean (a constant) -> 0; hand case on the masked tokens
    R = [1, 2, 3] (Var 1), V = [1, 2, 2] -> R - V = [0, 0, 1], Var 1/3 -> 1 - 1/3 = 2/3; constant
    returns -> nan. Padding never matters."""
    mask = right_padded([2, 1], 2)
    returns = t64([[1.0, 2.0], [3.0, PAD]])
    assert explained_variance(returns.clone(), returns, mask) == pytest.approx(1.0, abs=1e-12)
    mean_critic = torch.full_like(returns, 2.0)
    assert explained_variance(mean_critic, returns, mask) == pytest.approx(0.0, abs=1e-12)
    values = t64([[1.0, 2.0], [2.0, -PAD]])
    assert explained_variance(values, returns, mask) == pytest.approx(2 / 3, abs=1e-12)
    assert math.isnan(explained_variance(values, torch.ones_like(returns), mask))


def test_adaptive_kl_update_hand_case() -> None:
    """coef 0.1, target 6, horizon 10_000, n_steps 256:
    KL 9   -> e = clip(9/6 - 1 = 0.5) = 0.2   -> coef * (1 + 0.2 * 0.0256) = 0.1 * 1.00512 = 0.100512
    KL 6   -> e = 0                           -> unchanged
    KL 5.4 -> e = -0.1                        -> * (1 - 0.00256) = 0.100512 * 0.99744 = 0.10025469...
    KL 0   -> e = clip(-1) = -0.2             -> * (1 - 0.00512)"""
    ctl = AdaptiveKL(coef=0.1, target=6.0, horizon=10_000)
    assert ctl.update(9.0, 256) == pytest.approx(0.100512, rel=1e-12)
    assert ctl.update(6.0, 256) == pytest.approx(0.100512, rel=1e-12)
    assert ctl.update(5.4, 256) == pytest.approx(0.100512 * 0.99744, rel=1e-12)
    assert ctl.update(0.0, 256) == pytest.approx(0.100512 * 0.99744 * 0.99488, rel=1e-12)
    assert ctl.coef == pytest.approx(0.100512 * 0.99744 * 0.99488, rel=1e-12)


def test_pass_at_k_equals_enumeration() -> None:
    """1 - C(n - c, k) / C(n, k) equals the fraction of the k-subsets of n answers (c correct) that hold a
    correct one, counted by itertools.combinations; n = 2, c = 1, k = 1 -> 1/2 by hand."""
    assert pass_at_k(2, 1, 1) == pytest.approx(0.5)
    assert pass_at_k(5, 0, 3) == 0.0 and pass_at_k(5, 3, 3) == 1.0
    for n in range(1, 8):
        for c in range(n + 1):
            answers = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(range(n), k))
                hits = sum(any(answers[i] for i in s) for s in subsets)
                assert pass_at_k(n, c, k) == pytest.approx(hits / len(subsets), abs=1e-12), (n, c, k)
    for bad in ((3, 4, 1), (3, 1, 0), (3, 1, 4), (3, -1, 1)):
        with pytest.raises(ValueError):
            pass_at_k(*bad)
