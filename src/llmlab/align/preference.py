"""The glue between a `DPOConfig` and the pure losses of align/dpo.py: from the policy's (and the
reference's) log-probs of a micro-batch to its loss and logged metrics.

Everything loss-specific comes from the table `dpo.LOSSES`: which config fields the loss takes
(`LossSpec.params`), whether it wants per-token mean log-probs, KTO's KL estimate, and which field
weights the chosen responses' NLL (ORPO's `orpo_sft_weight`, RPO's `rpo_alpha` for the others),
and whether a pair's soft label p_chosen may enter (`LossSpec.soft_labels`, through dpo.soft_label_loss).
This module is the code that reads those fields off a config; it has no branch per loss name.
Left out: computing the log-probs (dpo_train.forward_sequences) and the KL estimate (the trainer's
mismatched pairs), which need the models.
"""

from __future__ import annotations

from typing import Any

import torch

from llmlab.align.config import DPOConfig
from llmlab.align.dpo import LOSSES, soft_label_loss
from llmlab.align.logprobs import nll_loss, target_count
from llmlab.errors import UserError


def loss_kwargs(cfg: DPOConfig) -> dict[str, Any]:
    """The keywords `LOSSES[cfg.loss].fn` is called with: beta and the spec's config fields, renamed to
    the function's keywords. `DPOConfig(loss="simpo", simpo_gamma=0.3)` -> {"beta": 0.1, "gamma": 0.3};
    `DPOConfig(loss="cdpo")` -> {"beta": 0.1, "label_smoothing": 0.1} (the config resolved its default)."""
    spec = LOSSES[cfg.loss]
    return {"beta": cfg.beta, **{keyword: getattr(cfg, name) for name, keyword in spec.params.items()}}


def nll_weight_of(cfg: DPOConfig) -> float:
    """Weight of the chosen responses' NLL added to the loss (0: none): ORPO's own term, or RPO's alpha
    for the others; the field is `LOSSES[cfg.loss].nll_weight_field`."""
    return float(getattr(cfg, LOSSES[cfg.loss].nll_weight_field))


def require_soft_labels(cfg: DPOConfig) -> None:
    """Raise a UserError unless `cfg`'s loss can train on soft labels (p_chosen < 1): its table entry
    takes them, and there is no NLL term, which would train on the chosen responses as if they were
    certainly the better (ORPO's orpo_sft_weight, RPO's rpo_alpha)."""
    spec = LOSSES[cfg.loss]
    fix = "data.soft_labels=false trains on the chosen/rejected labels alone"
    if not spec.soft_labels:
        takes = ", ".join(name for name, s in LOSSES.items() if s.soft_labels)
        raise UserError(f"the data has soft labels (p_chosen < 1), which loss {cfg.loss} does not take "
                        f"(the losses that do: {takes}); {fix}")
    if weight := nll_weight_of(cfg):
        raise UserError(f"the data has soft labels (p_chosen < 1), and {spec.nll_weight_field}={weight} would train "
                        f"on every chosen response as certainly the better: set {spec.nll_weight_field}=0, or {fix}")


def preference_loss(cfg: DPOConfig, sums: torch.Tensor, counts: torch.Tensor, ref: torch.Tensor | None, *,
                    logits: torch.Tensor | None = None, batch: dict[str, torch.Tensor] | None = None,
                    kl: torch.Tensor | None = None, n_pairs: int | None = None, n_nll_tokens: int | None = None,
                    p_chosen: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(mean loss, per-pair sums of the logged metrics) from the policy's summed log-probs and token
    counts of the 2B sequences (chosen first) and the reference's summed log-probs `ref` (2B,) or None.

    Losses on per-token means (IPO, SimPO, ORPO) divide both the policy's and the reference's sums by
    the response lengths; the logged logps are always the sums. With an NLL weight (`nll_weight_of`),
    `logits` (of the 2B sequences, possibly the last K positions only) and `batch` ("ids",
    "response_mask") are needed. `kl` is KTO's detached KL estimate (None: 0), logged as "kl".
    `p_chosen` (B,) holds the pairs' soft labels (None, or all 1: hard labels, `spec.fn` as it is);
    with any below 1 the loss is dpo.soft_label_loss, or a UserError where the loss takes none.

    The loss is the pairs' loss summed and divided by `n_pairs`, plus the NLL weight times the chosen
    tokens' NLL summed and divided by `n_nll_tokens`. By default these are this batch's own counts (the
    mean loss of the batch); a trainer accumulating micro-batches passes the global batch's counts
    (train/batches.py's rule), so the micro-batches' losses add up to the global batch's mean."""
    spec = LOSSES[cfg.loss]
    B = sums.shape[0] // 2
    pc, pr = sums[:B], sums[B:]
    rc, rr = (ref[:B], ref[B:]) if ref is not None else (None, None)
    if spec.mean_logprobs:
        nc, nr = counts[:B].clamp(min=1), counts[B:].clamp(min=1)
        pc, pr = pc / nc, pr / nr
        rc, rr = (rc / nc, rr / nr) if rc is not None and rr is not None else (None, None)
    kwargs = loss_kwargs(cfg)
    if spec.takes_kl and kl is not None:
        kwargs["kl"] = kl
    if p_chosen is not None and bool((p_chosen < 1).any()):
        require_soft_labels(cfg)
        losses, chosen_rewards, rejected_rewards = soft_label_loss(spec.fn, p_chosen, pc, pr, rc, rr, **kwargs)
    else:
        losses, chosen_rewards, rejected_rewards = spec.fn(pc, pr, rc, rr, **kwargs)
    per_pair = losses.numel() // B  # KTO's losses are per response: two per pair
    loss = losses.sum() / (per_pair * (n_pairs or B))
    extra: dict[str, torch.Tensor] = {}
    nll_weight = nll_weight_of(cfg)
    if nll_weight:
        if logits is None or batch is None:
            raise ValueError(f"loss {cfg.loss} with an NLL weight of {nll_weight} needs the logits and the batch")
        ids, mask = batch["ids"].to(logits.device), batch["response_mask"].to(logits.device)
        nll_sum = nll_loss(logits[:B], ids[:B], mask[:B], reduction="sum")
        nll = nll_sum / target_count(mask[:B])
        loss = loss + nll_weight * nll_sum / (n_nll_tokens or target_count(mask[:B]))
        extra["nll"] = nll.detach() * B
    if spec.takes_kl and kl is not None:
        extra["kl"] = kl.detach() * B
    margins = chosen_rewards - rejected_rewards
    stats = {"rewards/chosen": chosen_rewards.sum(), "rewards/rejected": rejected_rewards.sum(),
             "margin": margins.sum(), "accuracy": (margins > 0).float().sum(),
             "logps/chosen": sums[:B].detach().sum(), "logps/rejected": sums[B:].detach().sum(), **extra}
    return loss, stats
