"""The naive backend: materialise the (T, S) score matrix, as the formula says.

Memory grows with T * S per head; it is the readable oracle of the fast backends and
the only one that can hand back the attention weights (for visualisation).
"""

from __future__ import annotations

import torch

from llmlab.attention.masks import MaskSpec, dense_mask


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: MaskSpec,
                    key_padding_mask: torch.Tensor | None, scale: float,
                    return_weights: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    Hq, T = q.shape[1], q.shape[2]
    Hkv, S = k.shape[1], k.shape[2]
    group = Hq // Hkv
    k = k.repeat_interleave(group, dim=1)  # (B, Hq, S, D): query head h reads kv head h // group
    v = v.repeat_interleave(group, dim=1)
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, Hq, T, S)
    mask = dense_mask(T, S, spec, key_padding_mask, q.device)  # (B or 1, 1, T, S) or None
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:  # a query with no visible key: zeros, not the NaN of softmax(-inf row)
        weights = weights.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
    out = weights @ v  # (B, Hq, T, D)
    return (out, weights) if return_weights else out
