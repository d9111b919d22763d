"""The sdpa backend: PyTorch's fused `scaled_dot_product_attention`.

PyTorch picks its kernel (flash, memory-efficient, or math) by device and mask. A
plain causal prefill uses `is_causal` (the fast path); every other mask becomes a
boolean `attn_mask` from `masks.dense_mask`. GQA uses `enable_gqa` (PyTorch >= 2.5).
Rows with no visible key are set to zero afterwards, as in the other backends.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llmlab.attention.masks import MaskSpec, dense_mask


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: MaskSpec,
                   key_padding_mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    T, S = q.shape[2], k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    plain_causal = spec == MaskSpec(causal=True) and key_padding_mask is None and T == S and scale != 0
    # subtle: with scale 0 PyTorch's CPU causal kernel computes -inf * 0 = NaN; the mask path is right
    if spec == MaskSpec(causal=True) and key_padding_mask is None and T == 1:  # decode: sees every key
        return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=gqa)
    if plain_causal:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    mask = dense_mask(T, S, spec, key_padding_mask, q.device)  # (B or 1, 1, T, S) or None
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
    if mask is not None:
        out = out.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)  # subtle: SDPA gives NaN there
    return out
