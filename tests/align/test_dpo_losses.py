"""The DPO-family losses (llmlab.align.dpo) against hand-worked cases, their limits, and their gradients.

Notation as in dpo.py: pc, pr the policy's log-probs of the chosen and rejected responses, rc, rr the
reference's; h = (pc - pr) - (rc - rr); sigma the logistic function. Numbers that recur:

    -log sigma(0.1)  = log(1 + e^-0.1) = 0.644397
    -log sigma(-0.1) = log(1 + e^0.1)  = 0.744397   (= -log sigma(x) + x)
    -log sigma(1.5)  = 0.201413,   sigma(0.5) = 0.622459,   sigma(1.5) = 0.817574

Gradients are checked by finite differences (torch.autograd.gradcheck) in float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from llmlab.align.dpo import LOSSES, kto_loss, orpo_loss, soft_label_loss

# The shared small case: h = (-1 - -2) - (-1.5 - -1.5) = 1.
PC, PR, RC, RR = (torch.tensor([x], dtype=torch.float64) for x in (-1.0, -2.0, -1.5, -1.5))
TOL = {"rtol": 0, "atol": 1e-6}


def close(actual: torch.Tensor, expected: float | list[float]) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype).reshape(actual.shape), **TOL)


def test_sigmoid_hand_worked() -> None:
    """beta = 0.1, h = 1: loss = -log sigma(0.1) = 0.644397; rewards 0.1 (pc - rc) = 0.05 and
    0.1 (pr - rr) = -0.05."""
    losses, chosen, rejected = LOSSES["sigmoid"].fn(PC, PR, RC, RR, beta=0.1)
    close(losses, 0.6443967)
    close(chosen, 0.05)
    close(rejected, -0.05)


def test_hinge_hand_worked() -> None:
    """max(0, 1 - beta h): beta 0.1, h 1 -> 0.9; with h = 20 the margin passes 1 / beta and the loss is 0."""
    close(LOSSES["hinge"].fn(PC, PR, RC, RR, beta=0.1)[0], 0.9)
    close(LOSSES["hinge"].fn(PC + 19, PR, RC, RR, beta=0.1)[0], 0.0)


def test_ipo_hand_worked() -> None:
    """(h - 1 / (2 beta))^2: beta 0.1 -> (1 - 5)^2 = 16; beta 0.5 -> target margin 1 = h, loss 0."""
    close(LOSSES["ipo"].fn(PC, PR, RC, RR, beta=0.1)[0], 16.0)
    close(LOSSES["ipo"].fn(PC, PR, RC, RR, beta=0.5)[0], 0.0)


def test_cdpo_hand_worked() -> None:
    """eps = 0.1, beta 0.1, h 1: 0.9 * 0.644397 + 0.1 * 0.744397 = 0.654397."""
    close(LOSSES["cdpo"].fn(PC, PR, RC, RR, beta=0.1, label_smoothing=0.1)[0], 0.6543967)


def test_robust_hand_worked() -> None:
    """eps = 0.1: (0.9 * 0.644397 - 0.1 * 0.744397) / (1 - 0.2) = 0.505517 / 0.8 = 0.631896."""
    close(LOSSES["robust"].fn(PC, PR, RC, RR, beta=0.1, label_smoothing=0.1)[0], (0.9 * 0.6443967 - 0.1 * 0.7443967) / 0.8)


def test_simpo_hand_worked() -> None:
    """Mean log-probs pc -1, pr -2, beta 2, gamma 0.5: -log sigma(2 * 1 - 0.5) = -log sigma(1.5) = 0.201413;
    rewards beta * pc = -2, beta * pr = -4; the reference is ignored (None is fine)."""
    losses, chosen, rejected = LOSSES["simpo"].fn(PC, PR, None, None, beta=2.0, gamma=0.5)
    close(losses, 0.2014133)
    close(chosen, -2.0)
    close(rejected, -4.0)


def test_orpo_hand_worked() -> None:
    """p_c = 0.5 (odds 1), p_r = 0.2 (odds 0.25): log odds ratio = log 4; loss = -beta log sigma(log 4)
    = -beta log(4 / 5) = 0.1 * 0.223144."""
    pc, pr = torch.tensor([math.log(0.5)], dtype=torch.float64), torch.tensor([math.log(0.2)], dtype=torch.float64)
    close(orpo_loss(pc, pr, beta=0.1)[0], 0.1 * math.log(5 / 4))


def test_orpo_odds_against_numpy() -> None:
    """The odds ratio computed as p / (1 - p) in NumPy float64 on mean log-probs from -5 to -1e-3."""
    rng = np.random.default_rng(0)
    pc_np, pr_np = -np.exp(rng.uniform(np.log(1e-3), np.log(5.0), size=(2, 64)))
    p_c, p_r = np.exp(pc_np), np.exp(pr_np)
    log_ratio = np.log((p_c / (1 - p_c)) / (p_r / (1 - p_r)))
    expected = 0.25 * np.log1p(np.exp(-log_ratio))  # -beta log sigma(x) = beta log(1 + e^-x)
    losses, chosen, _ = orpo_loss(torch.from_numpy(pc_np), torch.from_numpy(pr_np), beta=0.25)
    torch.testing.assert_close(losses, torch.from_numpy(expected), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(chosen, torch.from_numpy(0.25 * pc_np))


def test_kto_hand_worked_with_unequal_counts() -> None:
    """One desirable (r = 0), two undesirable (r = -1, 0), beta 1, KL 0.5 (so z = 0.5):
        desirable     1 - sigma(0 - 0.5)      = 1 - 0.377541 = 0.622459
        undesirable   1 - sigma(0.5 - (-1))   = 1 - 0.817574 = 0.182426
                      1 - sigma(0.5 - 0)      = 0.377541
    losses come desirable first; a negative KL estimate is clamped to 0."""
    pc, rc = torch.tensor([-1.0], dtype=torch.float64), torch.tensor([-1.0], dtype=torch.float64)
    pr, rr = torch.tensor([-3.0, -2.0], dtype=torch.float64), torch.tensor([-2.0, -2.0], dtype=torch.float64)
    losses, chosen, rejected = kto_loss(pc, pr, rc, rr, beta=1.0, kl=0.5)
    close(losses, [1 - 0.3775407, 1 - 0.8175745, 0.3775407])
    close(chosen, [0.0])
    close(rejected, [-1.0, 0.0])
    clamped, _, _ = kto_loss(pc, pr, rc, rr, beta=1.0, kl=-3.0)
    close(clamped, [0.5, 1 - 0.7310586, 0.5])  # z = 0: 1 - sigma(0), 1 - sigma(1), 1 - sigma(0)


def test_kto_weights_and_an_empty_side() -> None:
    """Weights scale each side; with no undesirable examples only the desirable losses remain."""
    pc, rc = torch.tensor([-1.0, -2.0], dtype=torch.float64), torch.tensor([-1.0, -1.0], dtype=torch.float64)
    empty = torch.zeros(0, dtype=torch.float64)
    losses, _, rejected = kto_loss(pc, empty, rc, empty, beta=1.0, desirable_weight=2.0)
    close(losses, [2 * 0.5, 2 * (1 - 0.2689414)])  # r = 0, -1: 1 - sigma(r)
    assert rejected.shape == (0,)


@pytest.mark.parametrize("name", ["cdpo", "robust"])
def test_label_smoothing_zero_is_sigmoid(name: str) -> None:
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (-10 * torch.rand(16, generator=g, dtype=torch.float64) for _ in range(4))
    expected = LOSSES["sigmoid"].fn(pc, pr, rc, rr, beta=0.3)
    torch.testing.assert_close(LOSSES[name].fn(pc, pr, rc, rr, beta=0.3, label_smoothing=0.0), expected)


def test_robust_is_unbiased_under_label_flips() -> None:
    """Chowdhury et al.'s point: averaged over a flip with probability eps, the robust loss is the clean
    sigmoid loss. (1 - eps) L_rob(h) + eps L_rob(-h) = -log sigma(beta h) for every h."""
    h = torch.linspace(-20, 20, 41, dtype=torch.float64)
    zero = torch.zeros_like(h)
    eps, beta = 0.2, 0.5
    robust = LOSSES["robust"].fn
    mixed = (1 - eps) * robust(h, zero, zero, zero, beta=beta, label_smoothing=eps)[0] \
        + eps * robust(-h, zero, zero, zero, beta=beta, label_smoothing=eps)[0]
    torch.testing.assert_close(mixed, LOSSES["sigmoid"].fn(h, zero, zero, zero, beta=beta)[0])


KWARGS = {"cdpo": {"label_smoothing": 0.2}, "robust": {"label_smoothing": 0.2}, "simpo": {"gamma": 0.3},
          "kto": {"kl": 0.4}}


def test_extreme_margins_stay_finite() -> None:
    """logsigmoid, not log(sigmoid): a margin of +-1e4 nats gives a finite loss, not inf or nan."""
    big = torch.tensor([1e4, -1e4], dtype=torch.float64)
    zero = torch.zeros(2, dtype=torch.float64)
    for name in ("sigmoid", "cdpo", "robust", "hinge", "ipo"):
        assert torch.isfinite(LOSSES[name].fn(big, zero, zero, zero, beta=0.1, **KWARGS.get(name, {}))[0]).all(), name
    assert torch.isfinite(LOSSES["simpo"].fn(big, zero, beta=2.0)[0]).all()


def _inputs(name: str, n: int = 5) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    # Mean log-probs (IPO, SimPO, ORPO) in (-3, -0.1): ORPO needs p < 1.
    low, high = (-3.0, -0.1) if LOSSES[name].mean_logprobs else (-30.0, -1.0)
    return tuple((low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64)).requires_grad_()
                 for _ in range(4))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_match_finite_differences(name: str) -> None:
    """d loss / d (pc, pr[, rc, rr]) in float64 by gradcheck; reference-free losses only see pc, pr."""
    fn = LOSSES[name].fn
    inputs = _inputs(name)
    kwargs = {"beta": 0.1, **KWARGS.get(name, {})}
    if LOSSES[name].reference_free:
        assert torch.autograd.gradcheck(lambda pc, pr: fn(pc, pr, None, None, **kwargs)[0], inputs[:2])
    else:
        assert torch.autograd.gradcheck(lambda *x: fn(*x, **kwargs)[0], inputs)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_rewards_are_detached_and_loss_falls_as_chosen_rises(name: str) -> None:
    """Every loss decreases when the policy's chosen log-prob rises (what preference training wants), and
    the reported rewards carry no gradient. The reference equals the policy's rejected log-prob, so
    h = pc - pr stays below IPO's target margin 1 / (2 beta) = 5 (past it, IPO pulls the margin back)."""
    pc, pr, _, _ = (t.detach() for t in _inputs(name, n=3))
    rc = rr = pr
    kwargs = {"beta": 0.1, **KWARGS.get(name, {})}
    pc = pc.clone().requires_grad_()
    losses, chosen, rejected = LOSSES[name].fn(pc, pr, rc, rr, **kwargs)
    assert losses.shape[0] >= 3 and not chosen.requires_grad and not rejected.requires_grad
    (grad,) = torch.autograd.grad(losses.sum(), pc)
    assert (grad <= 0).all(), grad


# ---------------------------------------------------------------------- soft labels (p_chosen)

SOFT = [name for name, spec in LOSSES.items() if spec.soft_labels]


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


# Hand-chosen pairs, float64: h = (pc - pr) - (rc - rr) = 1, 4, -2, -0.5, 29, -30; p from certain to reversed.
PC_S = np.array([-1.0, -3.0, -8.0, -2.5, -1.0, -31.0])
PR_S = np.array([-2.0, -6.0, -4.0, -3.5, -30.0, -2.0])
RC_S = np.array([-1.5, -4.0, -5.0, -2.0, -2.0, -2.0])
RR_S = np.array([-1.5, -3.0, -3.0, -3.5, -2.0, -3.0])
P_S = np.array([0.9, 1.0, 0.75, 0.5, 0.6, 0.2])


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x.copy())


def test_soft_labels_in_the_table() -> None:
    """Robust DPO (a flip rate to correct for) and KTO (per-response losses) take none; the rest do."""
    assert SOFT == ["sigmoid", "hinge", "ipo", "cdpo", "simpo", "orpo"]


def test_soft_sigmoid_by_hand() -> None:
    """p = 0.9, beta 0.1, h 1: 0.9 * 0.644397 + 0.1 * 0.744397 = 0.654397, the hand-worked cDPO with
    eps = 0.1 above; rewards are those of the pair as labelled."""
    losses, chosen, rejected = soft_label_loss(LOSSES["sigmoid"].fn, torch.tensor([0.9]), PC, PR, RC, RR, beta=0.1)
    close(losses, 0.6543967)
    close(chosen, 0.05)
    close(rejected, -0.05)


def test_soft_sigmoid_is_per_pair_cdpo_against_numpy() -> None:
    """cDPO with eps = 1 - p per pair, computed in NumPy float64:
    -(1 - eps) log sigma(beta h) - eps log sigma(-beta h); and, pair by pair, llmlab's cdpo loss with
    label_smoothing = eps."""
    beta = 0.3
    h = (PC_S - PR_S) - (RC_S - RR_S)
    eps = 1.0 - P_S
    expected = -(1.0 - eps) * _log_sigmoid(beta * h) - eps * _log_sigmoid(-beta * h)
    losses, _, _ = soft_label_loss(LOSSES["sigmoid"].fn, _t(P_S), _t(PC_S), _t(PR_S), _t(RC_S), _t(RR_S), beta=beta)
    torch.testing.assert_close(losses, torch.from_numpy(expected), rtol=1e-12, atol=1e-12)
    for i in range(len(P_S)):
        row = [_t(x[i: i + 1]) for x in (PC_S, PR_S, RC_S, RR_S)]
        cdpo, _, _ = LOSSES["cdpo"].fn(*row, beta=beta, label_smoothing=float(eps[i]))
        torch.testing.assert_close(cdpo, torch.from_numpy(expected[i: i + 1]), rtol=1e-12, atol=1e-12)


def test_soft_labels_compose_with_cdpo_label_smoothing() -> None:
    """cdpo's assumed flip rate eps and a pair's doubt e = 1 - p: the label is wrong when exactly one flip
    happens, eps' = eps (1 - e) + e (1 - eps); NumPy float64."""
    beta, eps = 0.3, 0.15
    h = (PC_S - PR_S) - (RC_S - RR_S)
    e = 1.0 - P_S
    eps2 = eps * (1.0 - e) + e * (1.0 - eps)
    expected = -(1.0 - eps2) * _log_sigmoid(beta * h) - eps2 * _log_sigmoid(-beta * h)
    losses, _, _ = soft_label_loss(LOSSES["cdpo"].fn, _t(P_S), _t(PC_S), _t(PR_S), _t(RC_S), _t(RR_S), beta=beta,
                                   label_smoothing=eps)
    torch.testing.assert_close(losses, torch.from_numpy(expected), rtol=1e-12, atol=1e-12)


def test_soft_ipo_moves_the_target_margin() -> None:
    """p (h - c)^2 + (1 - p) (h + c)^2 in NumPy float64, c = 1 / (2 beta); its gradient in h vanishes at
    h = (2p - 1) c (p = 0.5: a margin of 0), where the loss is the constant 4 p (1 - p) c^2."""
    beta = 0.5
    c = 1.0 / (2.0 * beta)
    h = (PC_S - PR_S) - (RC_S - RR_S)
    expected = P_S * (h - c) ** 2 + (1.0 - P_S) * (h + c) ** 2
    losses, _, _ = soft_label_loss(LOSSES["ipo"].fn, _t(P_S), _t(PC_S), _t(PR_S), _t(RC_S), _t(RR_S), beta=beta)
    torch.testing.assert_close(losses, torch.from_numpy(expected), rtol=1e-12, atol=1e-12)
    target = torch.from_numpy((2.0 * P_S - 1.0) * c).requires_grad_()
    zero = torch.zeros_like(target)
    at_target, _, _ = soft_label_loss(LOSSES["ipo"].fn, _t(P_S), target, zero, zero, zero, beta=beta)
    (grad,) = torch.autograd.grad(at_target.sum(), target)
    torch.testing.assert_close(grad, zero, rtol=0, atol=1e-12)
    torch.testing.assert_close(at_target.detach(), torch.from_numpy(4 * P_S * (1 - P_S) * c**2), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", SOFT)
def test_soft_labels_of_one_are_the_hard_loss_exactly(name: str) -> None:
    """p = 1 everywhere: the same losses and gradients, bit for bit."""
    kwargs = {"beta": 0.1, **KWARGS.get(name, {})}
    fn = LOSSES[name].fn
    hard_inputs = _inputs(name, n=7)
    soft_inputs = tuple(x.detach().clone().requires_grad_() for x in hard_inputs)
    hard, hard_c, hard_r = fn(*hard_inputs, **kwargs)
    soft, soft_c, soft_r = soft_label_loss(fn, torch.ones(7, dtype=torch.float64), *soft_inputs, **kwargs)
    assert torch.equal(hard, soft) and torch.equal(hard_c, soft_c) and torch.equal(hard_r, soft_r)
    hard.sum().backward()
    soft.sum().backward()
    for a, b in zip(hard_inputs, soft_inputs, strict=True):
        assert (a.grad is None and b.grad is None) or torch.equal(a.grad, b.grad)


@pytest.mark.parametrize("name", SOFT)
def test_soft_label_gradients_match_finite_differences(name: str) -> None:
    fn = LOSSES[name].fn
    kwargs = {"beta": 0.1, **KWARGS.get(name, {})}
    p = torch.tensor([0.9, 0.6, 0.5, 0.75, 0.3], dtype=torch.float64)
    inputs = _inputs(name)
    if LOSSES[name].reference_free:
        assert torch.autograd.gradcheck(lambda pc, pr: soft_label_loss(fn, p, pc, pr, None, None, **kwargs)[0],
                                        inputs[:2])
    else:
        assert torch.autograd.gradcheck(lambda *x: soft_label_loss(fn, p, *x, **kwargs)[0], inputs)
