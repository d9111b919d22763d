"""Response log-probs of a policy or of a frozen reference, one implementation for every trainer
that compares the two (DPO and its family, eval-prefs, and the online RL trainers to come).

    forward_tokens         per-token response log-probs of a collated batch (the online RL losses)
    forward_sequences      (summed response log-probs, token counts, logits) of a collated batch
    reference_logprobs     a frozen model's summed log-probs of every pair, computed once
                           (`reference=precompute`: the reference then leaves memory)
    mismatched_responses   KTO's KL-estimate inputs: prompt i with the chosen response of row i + 1

The logits are computed for the response rows only (`logits_to_keep`), since the prompt's rows
feed no loss; log-probs are summed in float32 (logprobs.sequence_logprobs).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from llmlab.align.data import PairExample, collate_pairs
from llmlab.align.logprobs import logits_to_keep, masked_token_logprobs, model_logits, sequence_logprobs
from llmlab.train.precision import autocast_for


def _response_logits(model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device,
                     autocast: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits of the response rows (`logits_to_keep`), ids, response mask) of a collated batch."""
    ids = batch["ids"].to(device, non_blocking=True)
    mask = batch["response_mask"].to(device, non_blocking=True)
    attention = batch["attention_mask"].to(device, non_blocking=True)
    with autocast:
        logits = model_logits(model, ids, attention, keep=logits_to_keep(mask))
    return logits, ids, mask


def forward_tokens(model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device, autocast: Any, *,
                   temperature: float = 1.0, vocab_limit: int | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-token log-probs (N, K-1), the response mask on them (N, K-1), logits (N, K, V)) of a collated
    batch, for the last K positions (the response rows). Sampled text is scored as it was sampled:
    logits divided by the sampling `temperature` (as TRL does), over the first `vocab_limit` ids only
    (the tokenizer's: a wider embedding's extra rows are never sampled)."""
    logits, ids, mask = _response_logits(model, batch, device, autocast)
    return sampled_token_logprobs(logits, ids, mask, temperature=temperature, vocab_limit=vocab_limit)


def sampled_token_logprobs(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, *, temperature: float = 1.0,
                           vocab_limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """forward_tokens' result from logits already computed (PPO's policy-with-value forward)."""
    if vocab_limit is not None and vocab_limit < logits.shape[-1]:
        logits = logits[..., :vocab_limit]
    if temperature != 1.0:
        logits = logits / temperature
    per_token, m = masked_token_logprobs(logits, ids, mask)
    return per_token, m, logits


def forward_sequences(model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device,
                      autocast: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(summed response log-probs (N,), response token counts (N,), logits) of a collated batch."""
    logits, ids, mask = _response_logits(model, batch, device, autocast)
    sums, counts = sequence_logprobs(logits, ids, mask)
    return sums, counts, logits


def kl_batch(examples: list[PairExample], responses: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Prompt i + mismatched response i, collated like pairs (the chosen half is all we need)."""
    mismatched = [PairExample(e.prompt_ids, r, r) for e, r in zip(examples, responses, strict=True)]
    full = collate_pairs(mismatched, pad_id)
    return {k: v[: len(examples)] for k, v in full.items()}


def mismatched_responses(examples: list[PairExample], max_length: int) -> list[list[int]]:
    """Row i's prompt gets row i + 1's chosen response (cut to fit): the KTO KL estimate's input."""
    n = len(examples)
    return [examples[(i + 1) % n].chosen_ids[: max_length - len(e.prompt_ids)] for i, e in enumerate(examples)]


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
            batch = kl_batch(chunk, kl_responses[start: start + len(chunk)], pad_id)
            out[start: start + len(chunk), 2] = forward_sequences(model, batch, device, autocast)[0].float().cpu()
        if progress is not None:
            progress(len(chunk))
    return out
