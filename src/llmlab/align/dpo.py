"""The DPO family of preference losses, as pure functions, and `LOSSES`: the table, by name, of how a
trainer calls each one (`LossSpec`: its config fields, its log-probs, whether it needs a reference).

Every function takes the policy's and the reference's log-probs of the chosen and rejected
responses, (B,) each, and returns `(losses (B,), chosen_rewards (B,), rejected_rewards (B,))`,
the rewards being the detached implicit rewards beta * (log pi - log pi_ref) that the metrics
and the evaluation report. Which log-probs to pass is the caller's business and is written
in each docstring: summed over the response tokens (DPO, hinge, cDPO, robust), or averaged
per token (IPO as in TRL, SimPO, ORPO).

Notation: h = (pi_c - pi_r) - (ref_c - ref_r), the margin of the policy's log-ratio over the
reference's; sigma is the logistic function.

Soft labels (a pair's p = P(chosen is the better), the data's "p_chosen"): `soft_label_loss` takes the
expected loss over the label, p L(chosen, rejected) + (1 - p) L(rejected, chosen), for the losses whose
table entry says `soft_labels`. For sigmoid DPO that is cDPO with a per-pair eps = 1 - p; with cdpo's own
eps the two compose (see soft_label_loss); for IPO the target margin moves to (2p - 1) / (2 beta).

The table is the one source of truth about the variants: align/preference.py (the trainer's glue)
and align/config.py (which fields a loss accepts, and their defaults) read it; config.LossName
repeats its names for `--loss` (a test checks that they agree).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

Loss = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _rewards(beta: float, pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    return beta * (pc - rc).detach(), beta * (pr - rr).detach()


def sigmoid_loss(pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor, *, beta: float) -> Loss:
    """DPO (Rafailov et al. 2023, https://arxiv.org/abs/2305.18290): -log sigma(beta h).
    Log-probs summed over response tokens."""
    h = (pc - pr) - (rc - rr)
    return -F.logsigmoid(beta * h), *_rewards(beta, pc, pr, rc, rr)


def hinge_loss(pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor, *, beta: float) -> Loss:
    """SLiC-HF (Zhao et al. 2023, https://arxiv.org/abs/2305.10425) in DPO form, as TRL:
    max(0, 1 - beta h). Summed log-probs."""
    h = (pc - pr) - (rc - rr)
    return torch.relu(1.0 - beta * h), *_rewards(beta, pc, pr, rc, rr)


def ipo_loss(pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor, *, beta: float) -> Loss:
    """IPO (Azar et al. 2023, https://arxiv.org/abs/2310.12036, eq. 17): (h - 1 / (2 beta))^2, which
    pulls the margin to a finite target instead of to infinity. Pass per-token mean log-probs:
    TRL does, with the IPO authors' agreement, so beta does not depend on response length."""
    h = (pc - pr) - (rc - rr)
    return (h - 1.0 / (2.0 * beta)) ** 2, *_rewards(beta, pc, pr, rc, rr)


def cdpo_loss(pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor, *, beta: float,
              label_smoothing: float) -> Loss:
    """Conservative DPO (Mitchell 2023, https://ericmitchell.ai/cdpo.pdf): each label is taken to be
    flipped with probability eps, so the target is the eps-smoothed cross-entropy
    -(1 - eps) log sigma(beta h) - eps log sigma(-beta h). Summed log-probs."""
    h = (pc - pr) - (rc - rr)
    eps = label_smoothing
    losses = -(1.0 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    return losses, *_rewards(beta, pc, pr, rc, rr)


def robust_loss(pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor, *, beta: float,
                label_smoothing: float) -> Loss:
    """Robust DPO (Chowdhury et al. 2024, https://arxiv.org/abs/2403.00409): an unbiased estimate of
    the clean-label loss under flip rate eps < 1/2:
    (-(1 - eps) log sigma(beta h) + eps log sigma(-beta h)) / (1 - 2 eps). Summed log-probs."""
    h = (pc - pr) - (rc - rr)
    eps = label_smoothing
    losses = (-(1.0 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1.0 - 2.0 * eps)
    return losses, *_rewards(beta, pc, pr, rc, rr)


def simpo_loss(pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor | None = None, rr: torch.Tensor | None = None,
               *, beta: float, gamma: float = 0.5) -> Loss:
    """SimPO (Meng et al. 2024, https://arxiv.org/abs/2405.14734): reference-free and length-normalised,
    -log sigma(beta (pi_c - pi_r) - gamma) with per-token mean log-probs and a target margin gamma
    (the paper's gamma; TRL's `simpo_gamma` is gamma / beta). The reference arguments are ignored;
    rewards are beta * mean log-prob."""
    losses = -F.logsigmoid(beta * (pc - pr) - gamma)
    return losses, beta * pc.detach(), beta * pr.detach()


def orpo_loss(pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor | None = None, rr: torch.Tensor | None = None,
              *, beta: float) -> Loss:
    """ORPO's odds-ratio term (Hong et al. 2024, https://arxiv.org/abs/2403.07691), reference-free:
    -beta log sigma(log odds(c) - log odds(r)), odds(y) = p / (1 - p) with p = exp(mean log-prob).
    The full ORPO objective adds the chosen responses' SFT loss; the trainer adds it (it needs
    the logits, not only the log-probs). Pass per-token mean log-probs (< 0)."""
    log_odds = (pc - pr) - (torch.log1p(-torch.exp(pc)) - torch.log1p(-torch.exp(pr)))
    return -beta * F.logsigmoid(log_odds), beta * pc.detach(), beta * pr.detach()


def kto_loss(pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor, *, beta: float,
             kl: torch.Tensor | float = 0.0, desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> Loss:
    """KTO (Ethayarajh et al. 2024, https://arxiv.org/abs/2402.01306), for unpaired data: `pc`/`rc` are
    the log-probs of desirable responses and `pr`/`rr` of undesirable ones (any counts, either may
    be empty). With r = log pi - log pi_ref and z = max(kl, 0) the reference point (the trainer
    estimates KL(pi || pi_ref) on mismatched prompt/response pairs, detached):
        desirable:   w_d (1 - sigma(beta (r - z)))      undesirable:   w_u (1 - sigma(beta (z - r)))
    Losses are returned concatenated, desirable first. Summed log-probs."""
    z = torch.clamp(torch.as_tensor(kl, dtype=pc.dtype, device=pc.device), min=0.0).detach()
    chosen_r, rejected_r = pc - rc, pr - rr
    losses = torch.cat([desirable_weight * (1.0 - torch.sigmoid(beta * (chosen_r - z))),
                        undesirable_weight * (1.0 - torch.sigmoid(beta * (z - rejected_r)))])
    return losses, beta * chosen_r.detach(), beta * rejected_r.detach()


def soft_label_loss(fn: Callable[..., Loss], p_chosen: torch.Tensor, pc: torch.Tensor, pr: torch.Tensor,
                    rc: torch.Tensor | None, rr: torch.Tensor | None, **kwargs: object) -> Loss:
    """The expected loss of `fn` when each pair's label is right with probability p_chosen (B,):

        p L(pc, pr, rc, rr) + (1 - p) L(pr, pc, rr, rc)

    the second term being the loss had the label said the opposite. Rewards are those of the pair as
    labelled. p = 1 gives `fn`'s losses exactly (1 * x + 0 * y = x for a finite y). What this is per loss:

        sigmoid   -p log sigma(beta h) - (1 - p) log sigma(-beta h): cDPO (Mitchell 2023) with a per-pair
                  eps = 1 - p, the form TRL's label_smoothing = eps gives (tests/align/test_trl_parity.py)
        cdpo      cDPO with eps' = eps + e - 2 eps e, e = 1 - p: the label is wrong when exactly one of two
                  independent flips happens (the config's assumed rate eps, the labeller's doubt e);
                  rows without p_chosen (p = 1) keep the config's eps, as before
        ipo       p (h - c)^2 + (1 - p) (h + c)^2 = (h - (2p - 1) c)^2 + 4 p (1 - p) c^2, c = 1 / (2 beta):
                  the target margin moves from c to (2p - 1) c (0 for a coin flip), the gradient is that
                  of the shifted square
        hinge, simpo, orpo's odds-ratio term: the same mixture of the pair and its swap

    Robust DPO and KTO take no soft labels (their table entries say so): robust's eps is a flip rate
    to be corrected for, not a target, and KTO's losses are per response, not per pair.
    """
    losses, chosen_rewards, rejected_rewards = fn(pc, pr, rc, rr, **kwargs)
    swapped, _, _ = fn(pr, pc, rr, rc, **kwargs)
    return expected_over_label(p_chosen, losses, swapped), chosen_rewards, rejected_rewards


def expected_over_label(p_chosen: torch.Tensor, as_labelled: torch.Tensor, swapped: torch.Tensor) -> torch.Tensor:
    """p L(chosen, rejected) + (1 - p) L(rejected, chosen): a pair's loss in expectation over a label that
    is right with probability p (the soft-label rule of DPO's losses and of reward_model's Bradley-Terry).

    >>> expected_over_label(torch.tensor([1.0, 0.25]), torch.tensor([2.0, 2.0]), torch.tensor([6.0, 6.0]))
    tensor([2., 5.])
    """
    p = p_chosen.to(device=as_labelled.device, dtype=as_labelled.dtype)
    return p * as_labelled + (1.0 - p) * swapped


DEFAULT_LABEL_SMOOTHING = 0.1  # cdpo / robust with label_smoothing unset; at 0 both are plain sigmoid DPO


@dataclass(frozen=True)
class LossSpec:
    """How a trainer calls one loss: `fn(pc, pr, rc, rr, beta=..., **{params[f]: cfg.f})`.

    Field names are those of align.config.DPOConfig; align/preference.py is the code that reads them.
    """

    fn: Callable[..., Loss]
    params: Mapping[str, str] = field(default_factory=dict)  # DPOConfig field -> fn's keyword, beyond beta
    defaults: Mapping[str, float] = field(default_factory=dict)  # DPOConfig field -> its value when left unset (None)
    reference_free: bool = False  # no reference model: fn ignores rc, rr
    mean_logprobs: bool = False  # defined on per-token mean log-probs, not sums
    takes_kl: bool = False  # gets the trainer's detached KL(pi || pi_ref) estimate as `kl` (KTO's reference point)
    nll_weight_field: str = "rpo_alpha"  # DPOConfig field weighting the chosen responses' NLL added to the loss
    soft_labels: bool = True  # a pair's soft label p_chosen enters through soft_label_loss; False: refused


# subtle: the order is align.config.LossName's (a test checks), which is the order `--help` lists.
LOSSES: dict[str, LossSpec] = {
    "sigmoid": LossSpec(sigmoid_loss),
    "hinge": LossSpec(hinge_loss),
    "ipo": LossSpec(ipo_loss, mean_logprobs=True),
    "cdpo": LossSpec(cdpo_loss, {"label_smoothing": "label_smoothing"},
                     defaults={"label_smoothing": DEFAULT_LABEL_SMOOTHING}),
    "robust": LossSpec(robust_loss, {"label_smoothing": "label_smoothing"},
                       defaults={"label_smoothing": DEFAULT_LABEL_SMOOTHING}, soft_labels=False),
    "simpo": LossSpec(simpo_loss, {"simpo_gamma": "gamma"}, reference_free=True, mean_logprobs=True),
    "orpo": LossSpec(orpo_loss, reference_free=True, mean_logprobs=True, nll_weight_field="orpo_sft_weight"),
    "kto": LossSpec(kto_loss, {"kto_desirable_weight": "desirable_weight",
                               "kto_undesirable_weight": "undesirable_weight"}, takes_kl=True, soft_labels=False),
}
