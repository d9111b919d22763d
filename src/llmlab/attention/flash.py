"""The flash backend: FlashAttention's algorithm (Dao et al. 2022; FA-2's loop order) in PyTorch.

Forward, for each tile of queries, over the tiles of keys it can see:

    s   = q_tile @ k_tile^T * scale                      # (tq, tk): the only scores in memory
    m'  = max(m, rowmax(s))                              # running max
    p   = exp(s - m'),  alpha = exp(m - m')              # rescale what was summed so far
    l   = alpha * l + rowsum(p)                          # running softmax denominator
    acc = alpha * acc + p @ v_tile
    out = acc / l,  lse = m + log(l)                     # lse saved for the backward

Backward recomputes each tile's probabilities from the saved log-sum-exp,
p = exp(s - lse), and accumulates dV = p^T dO, dS = p * (dO V^T - rowsum(dO * O)),
dQ = dS K * scale, dK = dS^T Q * scale. Neither pass holds a T x S matrix, so memory
is linear in T for training too. Tiles that the mask hides entirely (causal future,
out of window, empty blocks) are skipped; tiles it shows entirely need no mask.

GQA: the Hq / Hkv query heads of a group are one batch dimension G that broadcasts
against their shared key/value head, so K and V are read once per group.
Scores and softmax statistics are float32 (float64 for float64 inputs), as in FA.
A query that sees no key gets output 0 and lse = +inf, so its backward is 0 too.
"""

from __future__ import annotations

import math

import torch

from llmlab.attention.masks import MaskSpec

NEG_INF = float("-inf")


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _tile_scores(qt: torch.Tensor, kt: torch.Tensor, scale: float, tile: torch.Tensor | bool,
                 valid: torch.Tensor | None, acc: torch.dtype) -> torch.Tensor:
    """Masked scores of one tile: (B, Hkv, G, tq, tk) in the accumulation dtype."""
    s = (qt @ kt.transpose(-2, -1)).to(acc) * scale
    if tile is not True:
        s = s.masked_fill(~tile, NEG_INF)
    if valid is not None:
        s = s.masked_fill(~valid, NEG_INF)
    return s


def flash_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: MaskSpec, valid: torch.Tensor | None,
                  scale: float, q_block: int, k_block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """q: (B, Hkv, G, T, D); k, v: (B, Hkv, 1, S, D); valid: (B, 1, 1, 1, S) or None -> (out, lse)."""
    T, S = q.shape[-2], k.shape[-2]
    offset = S - T
    acc = _acc_dtype(q.dtype)
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:-1], dtype=acc, device=q.device)  # (B, Hkv, G, T)
    for i0 in range(0, T, q_block):
        i1 = min(i0 + q_block, T)
        qt = q[..., i0:i1, :]
        m = torch.full(qt.shape[:-1], NEG_INF, dtype=acc, device=q.device)  # (B, Hkv, G, tq)
        denom = torch.zeros_like(m)  # running softmax denominator (l in the paper)
        o = torch.zeros(qt.shape, dtype=acc, device=q.device)  # (B, Hkv, G, tq, D)
        for j0 in range(0, S, k_block):
            j1 = min(j0 + k_block, S)
            tile = spec.tile_mask(offset + i0, offset + i1, j0, j1, q.device)
            if tile is False:
                continue  # no query of this tile sees any key of that one
            s = _tile_scores(qt, k[..., j0:j1, :], scale, tile, None if valid is None else valid[..., j0:j1], acc)
            m_new = torch.maximum(m, s.amax(dim=-1))
            m_safe = m_new.masked_fill(m_new == NEG_INF, 0.0)  # subtle: exp(-inf - -inf) would be NaN
            p = torch.exp(s - m_safe[..., None])  # (B, Hkv, G, tq, tk)
            alpha = torch.exp(m - m_safe)  # 0 while m was -inf
            denom = alpha * denom + p.sum(dim=-1)
            o = o * alpha[..., None] + (p.to(v.dtype) @ v[..., j0:j1, :]).to(acc)
            m = m_new
        empty = denom == 0  # rows that saw no key
        denom = denom.masked_fill(empty, 1.0)
        out[..., i0:i1, :] = (o / denom[..., None]).to(q.dtype)
        lse[..., i0:i1] = torch.where(empty, math.inf, m + torch.log(denom))
    return out, lse


def flash_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                   dout: torch.Tensor, spec: MaskSpec, valid: torch.Tensor | None, scale: float, q_block: int,
                   k_block: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    T, S = q.shape[-2], k.shape[-2]
    offset = S - T
    acc = _acc_dtype(q.dtype)
    delta = (dout.to(acc) * out.to(acc)).sum(dim=-1)  # (B, Hkv, G, T): rowsum(dO * O)
    dq = torch.zeros(q.shape, dtype=acc, device=q.device)
    dk = torch.zeros(k.shape, dtype=acc, device=q.device)
    dv = torch.zeros(v.shape, dtype=acc, device=q.device)
    for j0 in range(0, S, k_block):
        j1 = min(j0 + k_block, S)
        kt, vt = k[..., j0:j1, :], v[..., j0:j1, :]
        for i0 in range(0, T, q_block):
            i1 = min(i0 + q_block, T)
            tile = spec.tile_mask(offset + i0, offset + i1, j0, j1, q.device)
            if tile is False:
                continue
            qt, dot = q[..., i0:i1, :], dout[..., i0:i1, :].to(acc)
            s = _tile_scores(qt, kt, scale, tile, None if valid is None else valid[..., j0:j1], acc)
            p = torch.exp(s - lse[..., i0:i1, None])  # masked: exp(-inf) = 0; empty rows: lse = +inf
            # subtle: the G query heads of a group share kt, vt, so their dK and dV contributions add up.
            dv[..., j0:j1, :] += torch.einsum("bhgqk,bhgqd->bhkd", p, dot)[:, :, None]
            dp = dot @ vt.to(acc).transpose(-2, -1)  # (B, Hkv, G, tq, tk)
            ds = p * (dp - delta[..., i0:i1, None])
            dq[..., i0:i1, :] += (ds @ kt.to(acc)) * scale
            dk[..., j0:j1, :] += torch.einsum("bhgqk,bhgqd->bhkd", ds, qt.to(acc))[:, :, None] * scale
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


class FlashAttentionFunction(torch.autograd.Function):
    """Autograd wrapper: saves q, k, v, out and lse (all linear in T); backward recomputes tiles."""

    @staticmethod
    def forward(ctx, q, k, v, valid, spec, scale, q_block, k_block):  # type: ignore[override]
        out, lse = flash_forward(q, k, v, spec, valid, scale, q_block, k_block)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.valid, ctx.spec, ctx.scale, ctx.blocks = valid, spec, scale, (q_block, k_block)
        return out

    @staticmethod
    def backward(ctx, dout):  # type: ignore[override]
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = flash_backward(q, k, v, out, lse, dout.contiguous(), ctx.spec, ctx.valid, ctx.scale,
                                    *ctx.blocks)
        return dq, dk, dv, None, None, None, None, None


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: MaskSpec,
                    key_padding_mask: torch.Tensor | None, scale: float, *, q_block: int = 256,
                    k_block: int = 256) -> torch.Tensor:
    """q: (B, Hq, T, D), k, v: (B, Hkv, S, D) -> (B, Hq, T, D)."""
    B, Hq, T, D = q.shape
    Hkv = k.shape[1]
    q5 = q.reshape(B, Hkv, Hq // Hkv, T, D)  # (B, Hkv, G, T, D): head h = kv head h // G, member h % G
    k5, v5 = k.unsqueeze(2), v.unsqueeze(2)  # (B, Hkv, 1, S, D)
    valid = None if key_padding_mask is None else key_padding_mask.to(torch.bool)[:, None, None, None, :]
    out = FlashAttentionFunction.apply(q5, k5, v5, valid, spec, scale, q_block, k_block)
    return out.reshape(B, Hq, T, D)
