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

GQA ("packed" as in FA's decode kernels): the Hq / Hkv query heads that share a key/value
head become extra rows of one query matrix, ordered by position, so K and V are read once
per group and every product is a plain batched matmul. A query tile is q_block positions
(times the G heads of the group); a short query tile (decode) gets a long key tile, up to
q_block x k_block keys, so one-token decode is a few large matmuls rather than many small ones.
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
    """Masked scores of one tile: (B, Hkv, rows, tk) in the accumulation dtype."""
    s = (qt @ kt.transpose(-2, -1)).to(acc) * scale
    if tile is not True:
        s = s.masked_fill(~tile, NEG_INF)
    if valid is not None:
        s = s.masked_fill(~valid, NEG_INF)
    return s


def _tiles(T: int, S: int, G: int, q_block: int, k_block: int) -> tuple[int, int]:
    """(rows per query tile, keys per key tile): q_block positions x G heads of a group per query
    tile, so a GQA tile does an MHA tile's work per head; a short query tile (decode) gets up to
    q_block x k_block keys, so decoding is a few long matmuls."""
    positions = min(q_block, T)
    keys = min(S, max(k_block, (q_block * k_block) // positions))
    return positions * G, keys


def _row_mask(spec: MaskSpec, r0: int, r1: int, G: int, offset: int, k0: int, k1: int,
              device: torch.device) -> torch.Tensor | bool:
    """tile_mask for packed rows [r0, r1) (row r is position offset + r // G), expanded to rows."""
    tile = spec.tile_mask(offset + r0 // G, offset + (r1 - 1) // G + 1, k0, k1, device)
    if isinstance(tile, bool) or G == 1:
        return tile
    return tile.repeat_interleave(G, dim=0)  # (positions, tk) -> (rows, tk)


def flash_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: MaskSpec, valid: torch.Tensor | None,
                  scale: float, G: int, q_block: int, k_block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """q: (B, Hkv, T * G, D) packed rows; k, v: (B, Hkv, S, D); valid: (B, 1, 1, S) or None -> (out, lse)."""
    R, S = q.shape[-2], k.shape[-2]
    T = R // G
    offset = S - T
    rows, keys = _tiles(T, S, G, q_block, k_block)
    acc = _acc_dtype(q.dtype)
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:-1], dtype=acc, device=q.device)  # (B, Hkv, R)
    for r0 in range(0, R, rows):
        r1 = min(r0 + rows, R)
        qt = q[..., r0:r1, :]
        m = torch.full(qt.shape[:-1], NEG_INF, dtype=acc, device=q.device)  # (B, Hkv, tr)
        denom = torch.zeros_like(m)  # running softmax denominator (l in the paper)
        o = torch.zeros(qt.shape, dtype=acc, device=q.device)  # (B, Hkv, tr, D)
        for j0 in range(0, S, keys):
            j1 = min(j0 + keys, S)
            tile = _row_mask(spec, r0, r1, G, offset, j0, j1, q.device)
            if tile is False:
                continue  # no query of this tile sees any key of that one
            s = _tile_scores(qt, k[..., j0:j1, :], scale, tile, None if valid is None else valid[..., j0:j1], acc)
            m_new = torch.maximum(m, s.amax(dim=-1))
            m_safe = m_new.masked_fill(m_new == NEG_INF, 0.0)  # subtle: exp(-inf - -inf) would be NaN
            p = torch.exp(s - m_safe[..., None])  # (B, Hkv, tr, tk)
            alpha = torch.exp(m - m_safe)  # 0 while m was -inf
            denom = alpha * denom + p.sum(dim=-1)
            o = o * alpha[..., None] + (p.to(v.dtype) @ v[..., j0:j1, :]).to(acc)
            m = m_new
        empty = denom == 0  # rows that saw no key
        denom = denom.masked_fill(empty, 1.0)
        out[..., r0:r1, :] = (o / denom[..., None]).to(q.dtype)
        lse[..., r0:r1] = torch.where(empty, math.inf, m + torch.log(denom))
    return out, lse


def flash_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                   dout: torch.Tensor, spec: MaskSpec, valid: torch.Tensor | None, scale: float, G: int,
                   q_block: int, k_block: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    R, S = q.shape[-2], k.shape[-2]
    T = R // G
    offset = S - T
    rows, keys = _tiles(T, S, G, q_block, k_block)
    acc = _acc_dtype(q.dtype)
    delta = torch.empty(q.shape[:-1], dtype=acc, device=q.device)  # (B, Hkv, R): rowsum(dO * O)
    for r0 in range(0, R, rows):  # tile by tile: dO * O in one go would be a full-size temporary
        r1 = min(r0 + rows, R)
        delta[..., r0:r1] = (dout[..., r0:r1, :].to(acc) * out[..., r0:r1, :].to(acc)).sum(dim=-1)
    dq = torch.zeros(q.shape, dtype=acc, device=q.device)
    dk = torch.zeros(k.shape, dtype=acc, device=q.device)
    dv = torch.zeros(v.shape, dtype=acc, device=q.device)
    for j0 in range(0, S, keys):
        j1 = min(j0 + keys, S)
        kt, vt = k[..., j0:j1, :].to(acc), v[..., j0:j1, :].to(acc)
        for r0 in range(0, R, rows):
            r1 = min(r0 + rows, R)
            tile = _row_mask(spec, r0, r1, G, offset, j0, j1, q.device)
            if tile is False:
                continue
            qt, dot = q[..., r0:r1, :].to(acc), dout[..., r0:r1, :].to(acc)
            s = _tile_scores(qt, kt, scale, tile, None if valid is None else valid[..., j0:j1], acc)
            p = torch.exp(s - lse[..., r0:r1, None])  # masked: exp(-inf) = 0; empty rows: lse = +inf
            # The rows of all G heads of a group are in this tile, so dK and dV sum over them here.
            dv[..., j0:j1, :] += p.transpose(-2, -1) @ dot
            ds = p * (dot @ vt.transpose(-2, -1) - delta[..., r0:r1, None])
            dq[..., r0:r1, :] += (ds @ kt) * scale
            dk[..., j0:j1, :] += (ds.transpose(-2, -1) @ qt) * scale
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


class FlashAttentionFunction(torch.autograd.Function):
    """Autograd wrapper: saves q, k, v, out and lse (all linear in T); backward recomputes tiles."""

    @staticmethod
    def forward(ctx, q, k, v, valid, spec, scale, G, q_block, k_block):  # type: ignore[override]
        out, lse = flash_forward(q, k, v, spec, valid, scale, G, q_block, k_block)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.valid, ctx.spec, ctx.scale, ctx.tiles = valid, spec, scale, (G, q_block, k_block)
        return out

    @staticmethod
    def backward(ctx, dout):  # type: ignore[override]
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = flash_backward(q, k, v, out, lse, dout.contiguous(), ctx.spec, ctx.valid, ctx.scale,
                                    *ctx.tiles)
        return dq, dk, dv, None, None, None, None, None, None


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: MaskSpec,
                    key_padding_mask: torch.Tensor | None, scale: float, *, q_block: int = 256,
                    k_block: int = 256) -> torch.Tensor:
    """q: (B, Hq, T, D), k, v: (B, Hkv, S, D) -> (B, Hq, T, D)."""
    B, Hq, T, D = q.shape
    Hkv = k.shape[1]
    G = Hq // Hkv
    # (B, Hkv, G, T, D) -> (B, Hkv, T, G, D) -> rows: row t * G + g is query head kv * G + g at position t
    packed = q.reshape(B, Hkv, G, T, D).transpose(2, 3).reshape(B, Hkv, T * G, D)
    valid = None if key_padding_mask is None else key_padding_mask.to(torch.bool)[:, None, None, :]
    out = FlashAttentionFunction.apply(packed, k, v, valid, spec, scale, G, q_block, k_block)
    return out.reshape(B, Hkv, T, G, D).transpose(2, 3).reshape(B, Hq, T, D)
