"""Per-sequence log-probabilities of response tokens under a causal LM: the quantity every
offline alignment loss is built from.

    ids      [p p p r r r <pad>]        prompt, response, padding (right-padded)
    mask     [0 0 0 1 1 1 0]            True on the tokens whose log-prob counts
    logits at position t predict ids[t + 1], so token t's log-prob comes from logits[t - 1]

`token_logprobs` is the pure function (logits in, per-token log-probs out); `sequence_logprobs`
sums them under the mask and also returns the token count, so callers get both the sum
(DPO, the reward of a sequence) and the mean (IPO, SimPO, ORPO) from one pass.
`model_logits` runs an llmlab Transformer or a transformers causal LM the same way.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Literal

import torch
import torch.nn.functional as F

from llmlab.model.llama import Transformer


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log p(ids[:, t] | ids[:, :t]) for t >= 1, as (B, T - 1); logits (B, T, V) in any float dtype.

    Computed as logit - logsumexp in float32: log_softmax over the whole (B, T, V) tensor would
    materialise a second vocabulary-sized tensor.
    """
    logits = logits[:, :-1].float()  # (B, T-1, V): position t predicts token t + 1
    targets = ids[:, 1:].unsqueeze(-1)  # (B, T-1, 1)
    return logits.gather(-1, targets).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def logits_to_keep(mask: torch.Tensor) -> int:
    """How many final positions' logits score every masked token: from the position before the
    earliest masked token to the end (right-padded batches; prompts come first)."""
    first = int(mask.to(torch.int8).argmax(dim=1)[mask.any(dim=1)].min()) if bool(mask.any()) else mask.shape[1]
    return mask.shape[1] - max(first - 1, 0)


def _crop(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ids and mask of the positions `logits` covers: the last K of T when the head ran on K rows."""
    K = logits.shape[1]
    return ids[:, -K:], mask[:, -K:]


def masked_token_logprobs(logits: torch.Tensor, ids: torch.Tensor,
                          mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token log-probs (B, K-1), mask on them (B, K-1) as 0/1 of their dtype) of the positions
    `logits` covers (the last K of T; position t's log-prob is that of ids[:, T-K+1+t])."""
    ids, mask = _crop(logits, ids, mask)
    per_token = token_logprobs(logits, ids)
    return per_token, mask[:, 1:].to(per_token.dtype)


def sequence_logprobs(logits: torch.Tensor, ids: torch.Tensor,
                      mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of the masked tokens' log-probs (B,), number of masked tokens (B,)).

    `mask` (B, T) is True on the tokens to score; the first position `logits` covers is never scored
    (nothing before it is predicted). `logits` may cover only the last K positions (logits_to_keep).
    """
    per_token, m = masked_token_logprobs(logits, ids, mask)
    # subtle: summed in float64, so a row's total does not depend on how long its batch is padded or
    # cropped (float32 reductions group terms by length); the policy and a precomputed reference
    # then agree to the last bit on the same sequence
    return (per_token.double() * m).sum(dim=-1).to(per_token.dtype), m.sum(dim=-1)


def model_logits(model: Any, ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                 keep: int = 0) -> torch.Tensor:
    """Logits (B, T, V) of an llmlab Transformer or a Hugging Face causal LM on right-padded ids;
    with keep = k > 0, of the last k positions only (B, k, V) where the model supports it.

    Right padding needs no position bookkeeping: real tokens come first, so their positions are
    0..n-1 either way; the padding is masked as keys (and its outputs are never scored).
    """

    base = getattr(model, "module", model)  # DDP / FSDP wrappers
    base = getattr(base, "_orig_mod", base)  # torch.compile
    if isinstance(base, Transformer):
        padded = attention_mask is not None and not bool(attention_mask.all())
        return model(ids, key_padding_mask=attention_mask.bool() if padded else None, logits_to_keep=keep).logits
    if keep and _takes_logits_to_keep(type(base)):
        return model(input_ids=ids, attention_mask=attention_mask, logits_to_keep=keep).logits
    return model(input_ids=ids, attention_mask=attention_mask).logits


@functools.cache
def _takes_logits_to_keep(cls: type) -> bool:
    """Whether an HF model class's forward accepts `logits_to_keep` (asked once per class, not per step)."""
    return "logits_to_keep" in inspect.signature(cls.forward).parameters


def nll_loss(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, *,
             reduction: Literal["mean", "sum"] = "mean") -> torch.Tensor:
    """Next-token cross-entropy over the masked tokens of the whole batch (the SFT loss), their mean
    or their sum: every response token weighs the same, however long its sequence. The trainers take
    the sum and scale it by train/batches.py's rule, so the mean is over the global batch, not over
    each micro-batch. `logits` may cover the last K positions only."""
    ids, mask = _crop(logits, ids, mask)
    targets = ids[:, 1:].masked_fill(~mask[:, 1:].bool(), -100)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100,
                           reduction=reduction)


def sequence_mean_nll(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each sequence's mean cross-entropy over its masked tokens (B,); 0 for a sequence with none.
    Summed over sequences and divided by their number, every sequence weighs the same however long
    its answer (SFT's loss_norm=sequence)."""
    total, count = sequence_logprobs(logits, ids, mask)
    return -total / count.clamp(min=1)


def target_count(mask: torch.Tensor) -> int:
    """The number of masked tokens `nll_loss` predicts (position 0 is never a target)."""
    return int(mask[:, 1:].sum())
