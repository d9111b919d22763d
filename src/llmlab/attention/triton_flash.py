"""The triton backend: a FlashAttention-2 style Triton kernel, forward and backward.

Same algorithm as flash.py (online softmax forward; backward recomputes probabilities
from the saved log-sum-exp), as GPU kernels (Dao 2023, "FlashAttention-2"):

    forward   one program per (query block, batch x query head): loops over the key blocks
              the mask allows (causal: up to the diagonal; window: the last W keys only)
    backward  dK, dV: one program per (key block, batch x kv head), looping over the query
              heads of its GQA group and the query blocks that can see it (no atomics);
              dQ: one program per (query block, batch x query head)

Supports causal, sliding window, key padding, MHA/GQA/MQA and decode (S >= T); block-sparse
layouts stay with the `flash` backend. Head dims must be powers of two (16 to 256).
Used only where triton can run: a CUDA tensor, or Triton's CPU interpreter
(TRITON_INTERPRET=1, how the tests check it on machines without a GPU).
"""

from __future__ import annotations

import os

import torch

from llmlab.attention.masks import MaskSpec
from llmlab.errors import UserError

try:  # an optional dependency: the backend reports itself unavailable without it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the machine
    triton = None


def available(device: torch.device) -> bool:
    return triton is not None and (device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1")


if triton is not None:

    @triton.jit
    def _allowed(pos_q, offs_n, S, WINDOW, valid_row, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
                 HAS_VALID: tl.constexpr):
        ok = offs_n[None, :] < S
        if CAUSAL:
            ok = ok & (offs_n[None, :] <= pos_q[:, None])
        if HAS_WINDOW:
            if CAUSAL:
                ok = ok & (pos_q[:, None] - offs_n[None, :] < WINDOW)
            else:
                ok = ok & (pos_q[:, None] - offs_n[None, :] < WINDOW) & (offs_n[None, :] - pos_q[:, None] < WINDOW)
        if HAS_VALID:
            ok = ok & (valid_row[None, :] != 0)
        return ok

    @triton.jit
    def _key_range(q_lo, q_hi, S, WINDOW, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
                   BLOCK_N: tl.constexpr):
        """[lo, hi) of key positions any query in positions [q_lo, q_hi] may see, lo block-aligned."""
        lo = 0
        hi = S
        if CAUSAL:
            hi = tl.minimum(S, q_hi + 1)
        if HAS_WINDOW:
            lo = tl.maximum(0, q_lo - WINDOW + 1)
            lo = (lo // BLOCK_N) * BLOCK_N
            if not CAUSAL:
                hi = tl.minimum(S, q_hi + WINDOW)
        return lo, hi

    @triton.jit
    def _fwd_kernel(Q, K, V, Out, LSE, VALID, scale, T, S, WINDOW, H, G,
                    sqb, sqh, sqt, skb, skh, sks, sob, soh, sot, svb,
                    CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_VALID: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr):
        pid_m = tl.program_id(0)
        pid_bh = tl.program_id(1)
        b = pid_bh // H
        h = pid_bh % H
        kvh = h // G
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, D)
        pos_q = offs_m + (S - T)
        q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :], mask=offs_m[:, None] < T,
                    other=0.0)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D], tl.float32)
        k_base = K + b * skb + kvh * skh
        v_base = V + b * skb + kvh * skh
        lo, hi = _key_range(pid_m * BLOCK_M + S - T, tl.minimum((pid_m + 1) * BLOCK_M, T) - 1 + S - T, S, WINDOW,
                            CAUSAL, HAS_WINDOW, BLOCK_N)
        for start_n in range(lo, hi, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            k = tl.load(k_base + offs_n[None, :] * sks + offs_d[:, None], mask=offs_n[None, :] < S, other=0.0)
            s = tl.dot(q, k) * scale  # (BLOCK_M, BLOCK_N)
            valid_row = offs_n
            if HAS_VALID:
                valid_row = tl.load(VALID + b * svb + offs_n, mask=offs_n < S, other=0)
            ok = _allowed(pos_q, offs_n, S, WINDOW, valid_row, CAUSAL, HAS_WINDOW, HAS_VALID)
            s = tl.where(ok, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.exp(s - m_safe[:, None])
            alpha = tl.exp(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(v_base + offs_n[:, None] * sks + offs_d[None, :], mask=offs_n[:, None] < S, other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        empty = l_i == 0.0
        l_safe = tl.where(empty, 1.0, l_i)
        acc = acc / l_safe[:, None]
        lse = tl.where(empty, float("inf"), m_i + tl.log(l_safe))
        tl.store(Out + b * sob + h * soh + offs_m[:, None] * sot + offs_d[None, :], acc.to(Out.dtype.element_ty),
                 mask=offs_m[:, None] < T)
        tl.store(LSE + pid_bh * T + offs_m, lse, mask=offs_m < T)

    @triton.jit
    def _bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, VALID, scale, T, S, WINDOW, H, G,
                         sqb, sqh, sqt, skb, skh, sks, svb,
                         CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_VALID: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr):
        pid_n = tl.program_id(0)
        pid_bk = tl.program_id(1)  # batch x kv head
        Hkv = H // G
        b = pid_bk // Hkv
        kvh = pid_bk % Hkv
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, D)
        k = tl.load(K + b * skb + kvh * skh + offs_n[:, None] * sks + offs_d[None, :], mask=offs_n[:, None] < S,
                    other=0.0)
        v = tl.load(V + b * skb + kvh * skh + offs_n[:, None] * sks + offs_d[None, :], mask=offs_n[:, None] < S,
                    other=0.0)
        valid_row = offs_n
        if HAS_VALID:
            valid_row = tl.load(VALID + b * svb + offs_n, mask=offs_n < S, other=0)
        dk = tl.zeros([BLOCK_N, D], tl.float32)
        dv = tl.zeros([BLOCK_N, D], tl.float32)
        for g in range(0, G):  # the query heads that share this kv head
            h = kvh * G + g
            for start_m in range(0, T, BLOCK_M):
                offs_m = start_m + tl.arange(0, BLOCK_M)
                pos_q = offs_m + (S - T)
                q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :],
                            mask=offs_m[:, None] < T, other=0.0)
                do = tl.load(DO + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :],
                             mask=offs_m[:, None] < T, other=0.0)
                lse = tl.load(LSE + (b * H + h) * T + offs_m, mask=offs_m < T, other=float("inf"))
                delta = tl.load(DELTA + (b * H + h) * T + offs_m, mask=offs_m < T, other=0.0)
                s = tl.dot(q, tl.trans(k)) * scale  # (BLOCK_M, BLOCK_N)
                ok = _allowed(pos_q, offs_n, S, WINDOW, valid_row, CAUSAL, HAS_WINDOW, HAS_VALID)
                ok = ok & (offs_m[:, None] < T)
                p = tl.where(ok, tl.exp(s - lse[:, None]), 0.0)
                dv += tl.dot(tl.trans(p.to(do.dtype)), do)
                dp = tl.dot(do, tl.trans(v))
                ds = p * (dp - delta[:, None])
                dk += tl.dot(tl.trans(ds.to(q.dtype)), q)
        tl.store(DK + b * skb + kvh * skh + offs_n[:, None] * sks + offs_d[None, :], (dk * scale).to(
            DK.dtype.element_ty), mask=offs_n[:, None] < S)
        tl.store(DV + b * skb + kvh * skh + offs_n[:, None] * sks + offs_d[None, :], dv.to(DV.dtype.element_ty),
                 mask=offs_n[:, None] < S)

    @triton.jit
    def _bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, VALID, scale, T, S, WINDOW, H, G,
                       sqb, sqh, sqt, skb, skh, sks, svb,
                       CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_VALID: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr):
        pid_m = tl.program_id(0)
        pid_bh = tl.program_id(1)
        b = pid_bh // H
        h = pid_bh % H
        kvh = h // G
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, D)
        pos_q = offs_m + (S - T)
        q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :], mask=offs_m[:, None] < T,
                    other=0.0)
        do = tl.load(DO + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :], mask=offs_m[:, None] < T,
                     other=0.0)
        lse = tl.load(LSE + pid_bh * T + offs_m, mask=offs_m < T, other=float("inf"))
        delta = tl.load(DELTA + pid_bh * T + offs_m, mask=offs_m < T, other=0.0)
        dq = tl.zeros([BLOCK_M, D], tl.float32)
        lo, hi = _key_range(pid_m * BLOCK_M + S - T, tl.minimum((pid_m + 1) * BLOCK_M, T) - 1 + S - T, S, WINDOW,
                            CAUSAL, HAS_WINDOW, BLOCK_N)
        for start_n in range(lo, hi, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            k = tl.load(K + b * skb + kvh * skh + offs_n[:, None] * sks + offs_d[None, :],
                        mask=offs_n[:, None] < S, other=0.0)
            v = tl.load(V + b * skb + kvh * skh + offs_n[:, None] * sks + offs_d[None, :],
                        mask=offs_n[:, None] < S, other=0.0)
            valid_row = offs_n
            if HAS_VALID:
                valid_row = tl.load(VALID + b * svb + offs_n, mask=offs_n < S, other=0)
            s = tl.dot(q, tl.trans(k)) * scale
            ok = _allowed(pos_q, offs_n, S, WINDOW, valid_row, CAUSAL, HAS_WINDOW, HAS_VALID)
            p = tl.where(ok, tl.exp(s - lse[:, None]), 0.0)
            dp = tl.dot(do, tl.trans(v))
            ds = p * (dp - delta[:, None])
            dq += tl.dot(ds.to(k.dtype), k)
        tl.store(DQ + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :], (dq * scale).to(
            DQ.dtype.element_ty), mask=offs_m[:, None] < T)


def _launch_args(q: torch.Tensor, k: torch.Tensor, spec: MaskSpec, valid: torch.Tensor | None) -> dict:
    Hq, T, D = q.shape[1], q.shape[2], q.shape[3]
    Hkv, S = k.shape[1], k.shape[2]
    return dict(T=T, S=S, WINDOW=spec.window or 0, H=Hq, G=Hq // Hkv,
                sqb=q.stride(0), sqh=q.stride(1), sqt=q.stride(2), skb=k.stride(0), skh=k.stride(1),
                sks=k.stride(2), CAUSAL=spec.causal, HAS_WINDOW=spec.window is not None,
                HAS_VALID=valid is not None, D=D)


class TritonFlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, valid, spec, scale, block_m, block_n):  # type: ignore[override]
        B, Hq, T = q.shape[:3]
        out = torch.empty_like(q)
        lse = torch.empty((B, Hq, T), dtype=torch.float32, device=q.device)
        args = _launch_args(q, k, spec, valid)
        valid_arg = valid if valid is not None else q  # an unused pointer when HAS_VALID is false
        _fwd_kernel[(triton.cdiv(T, block_m), B * Hq)](
            q, k, v, out, lse, valid_arg, scale, sob=out.stride(0), soh=out.stride(1), sot=out.stride(2),
            svb=valid.stride(0) if valid is not None else 0, BLOCK_M=block_m, BLOCK_N=block_n, **args)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.valid, ctx.spec, ctx.scale, ctx.blocks = valid, spec, scale, (block_m, block_n)
        return out

    @staticmethod
    def backward(ctx, dout):  # type: ignore[override]
        q, k, v, out, lse = ctx.saved_tensors
        dout = dout.contiguous()
        block_m, block_n = ctx.blocks
        B, Hq, T = q.shape[:3]
        Hkv, S = k.shape[1], k.shape[2]
        delta = (dout.float() * out.float()).sum(-1).contiguous()  # (B, Hq, T): rowsum(dO * O)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        valid = ctx.valid
        args = _launch_args(q, k, ctx.spec, valid)
        common = dict(svb=valid.stride(0) if valid is not None else 0, BLOCK_M=block_m, BLOCK_N=block_n, **args)
        valid_arg = valid if valid is not None else q
        _bwd_dkdv_kernel[(triton.cdiv(S, block_n), B * Hkv)](q, k, v, dout, lse, delta, dk, dv, valid_arg,
                                                             ctx.scale, **common)
        _bwd_dq_kernel[(triton.cdiv(T, block_m), B * Hq)](q, k, v, dout, lse, delta, dq, valid_arg, ctx.scale,
                                                          **common)
        return dq, dk, dv, None, None, None, None, None


def triton_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: MaskSpec,
                     key_padding_mask: torch.Tensor | None, scale: float, *, q_block: int = 64,
                     k_block: int = 64) -> torch.Tensor:
    if not available(q.device):
        raise UserError("the triton backend needs the triton package and a CUDA tensor "
                        "(or TRITON_INTERPRET=1 for Triton's CPU interpreter); use backend='flash'")
    if spec.block is not None:
        raise UserError("the triton backend has no block-sparse layouts; use backend='flash'")
    D = q.shape[-1]
    if D < 16 or D > 256 or D & (D - 1):
        raise UserError(f"the triton backend needs a power-of-two head dim in 16..256, got {D}")
    for name, b in (("q_block", q_block), ("k_block", k_block)):
        if b < 16 or b & (b - 1):
            raise UserError(f"triton {name} must be a power of two >= 16, got {b}")
    valid = None if key_padding_mask is None else key_padding_mask.to(torch.int8).contiguous()
    return TritonFlashAttention.apply(q.contiguous(), k.contiguous(), v.contiguous(), valid, spec, scale,
                                      q_block, k_block)


