"""Attention in JAX: a reference, and FlashAttention's forward as a `jax.lax.scan` over key blocks.

Same shapes and mask conventions as `llmlab.attention` (masks.py), so the NumPy oracle
(reference.py) checks both functions:

    q: (B, Hq, T, D), k, v: (B, Hkv, S, D), Hq a multiple of Hkv (MHA, GQA, MQA)
    S >= T: query i sits at position S - T + i (decode against a KV cache)
    causal: key j <= p;  window W: p - j < W (|p - j| < W without causal);  key_padding_mask (B, S)
    A query that can see no key outputs zeros.

`reference_attention` forms the (T, S) scores per head. `flash_attention` never does: it
scans the key blocks in order carrying three running quantities per query row, the
FlashAttention forward recurrence (Dao et al. 2022; FA-2's loop order):

    s   = q @ k_blk^T * scale                            # (T, kb): one block of scores
    m'  = max(m, rowmax(s))                              # running max
    p   = exp(s - m'),  alpha = exp(m - m')              # rescale what was summed so far
    l   = alpha * l + rowsum(p)                          # running softmax denominator
    acc = alpha * acc + p @ v_blk                        # rescaled accumulator
    out = acc / l

`scan` compiles the body once, whatever the number of blocks; S is padded up to a multiple of
the block size with keys the mask hides, so any block size works. GQA: the G = Hq / Hkv query
heads of a group attend to their key/value head through an einsum over a (B, Hkv, G, T, D) view,
so K and V are never repeated. Scores and the running statistics are float32 (float64 for float64
inputs: enable `jax_enable_x64`), as in FA.

What it leaves out: the backward pass (jax.grad differentiates through the scan, storing every
block's probabilities, not FA's recomputation), query tiling (all T queries ride in each step;
FA-2 runs query tiles as independent programs, which XLA vectorises here), skipping blocks the
mask hides, block-sparse layouts, dropout, and a Pallas kernel.

jax is optional (`pip install 'llmlab[jax]'`); `llmlab.attention` never imports this module.
"""

from __future__ import annotations

import math
from typing import Any

from llmlab.errors import UserError

try:  # an optional dependency: the functions below say so in one line without it
    import jax
    import jax.numpy as jnp
except ImportError:  # pragma: no cover - depends on the machine
    jax = None

Array = Any  # jax.Array; not imported for annotations, so that this module loads without jax


def reference_attention(q: Array, k: Array, v: Array, *, causal: bool = True, window: int | None = None,
                        key_padding_mask: Array | None = None, scale: float | None = None) -> Array:
    """softmax(q k^T * scale + mask) v with the whole score matrix; see the module docstring."""
    scale = _check(q, k, v, window, key_padding_mask, scale)
    return _reference_jit(q, k, v, key_padding_mask, causal=causal, window=window, scale=scale)


def flash_attention(q: Array, k: Array, v: Array, *, causal: bool = True, window: int | None = None,
                    key_padding_mask: Array | None = None, scale: float | None = None, k_block: int = 128) -> Array:
    """The same attention, a `lax.scan` over key blocks of `k_block` keys (any size >= 1)."""
    scale = _check(q, k, v, window, key_padding_mask, scale)
    if k_block < 1:
        raise UserError(f"k_block must be positive, got {k_block}")
    return _flash_jit(q, k, v, key_padding_mask, causal=causal, window=window, scale=scale, k_block=k_block)


def _check(q: Array, k: Array, v: Array, window: int | None, key_padding_mask: Array | None,
           scale: float | None) -> float:
    """One-line UserErrors for what cannot be attention; returns the scale (default 1/sqrt(D))."""
    if jax is None:
        raise UserError("JAX attention needs jax: pip install 'llmlab[jax]'")
    if q.ndim != 4 or k.ndim != 4 or k.shape != v.shape:
        raise UserError(f"q must be (B, Hq, T, D) and k, v (B, Hkv, S, D); got {q.shape}, {k.shape}, {v.shape}")
    (B, Hq, T, D), (Bk, Hkv, S, Dk) = q.shape, k.shape
    if Bk != B or Dk != D or Hq % Hkv or S < T:
        raise UserError(f"k, v {k.shape} do not fit q {q.shape}: same B and D, Hq a multiple of Hkv, S >= T")
    if window is not None and window < 1:
        raise UserError(f"window must be at least 1, got {window}")
    if key_padding_mask is not None and tuple(key_padding_mask.shape) != (B, S):
        raise UserError(f"key_padding_mask must be (B, S) = ({B}, {S}), got {tuple(key_padding_mask.shape)}")
    return 1.0 / math.sqrt(D) if scale is None else float(scale)


def _allowed(T: int, key_pos: Array, S: int, causal: bool, window: int | None) -> Array:
    """(T, n) bool: may query i (position S - T + i) see the keys at `key_pos` (n,)? Keys >= S are padding."""
    p = jnp.arange(S - T, S)[:, None]  # (T, 1) query positions
    j = key_pos[None, :]  # (1, n)
    ok = j < S
    if causal:
        ok &= j <= p
    if window is not None:
        ok &= (p - j < window) if causal else (jnp.abs(p - j) < window)
    return ok


def _grouped(q: Array, Hkv: int) -> Array:
    B, Hq, T, D = q.shape
    return q.reshape(B, Hkv, Hq // Hkv, T, D)  # (B, Hkv, G, T, D): head h reads kv head h // G


def _acc_dtype(dtype: Any) -> Any:
    return jnp.promote_types(dtype, jnp.float32)  # float32, or float64 for float64 inputs


def _reference(q: Array, k: Array, v: Array, key_padding_mask: Array | None, *, causal: bool,
               window: int | None, scale: float) -> Array:
    B, Hq, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    acc = _acc_dtype(q.dtype)
    s = jnp.einsum("bhgtd,bhsd->bhgts", _grouped(q, Hkv), k, preferred_element_type=acc) * scale
    mask = _allowed(T, jnp.arange(S), S, causal, window)[None, None, None]  # (1, 1, 1, T, S)
    if key_padding_mask is not None:
        mask = mask & key_padding_mask.astype(bool)[:, None, None, None, :]  # (B, 1, 1, T, S)
    s = jnp.where(mask, s, -jnp.inf)
    m = s.max(axis=-1, keepdims=True)
    e = jnp.exp(s - jnp.where(jnp.isfinite(m), m, 0.0))  # a row of -inf: shift by 0, exp gives 0s
    denom = e.sum(axis=-1, keepdims=True)
    weights = e / jnp.where(denom > 0, denom, 1.0)  # (B, Hkv, G, T, S); empty rows stay 0
    out = jnp.einsum("bhgts,bhsd->bhgtd", weights, v.astype(acc))
    return out.reshape(B, Hq, T, D).astype(q.dtype)


def _flash(q: Array, k: Array, v: Array, key_padding_mask: Array | None, *, causal: bool,
           window: int | None, scale: float, k_block: int) -> Array:
    B, Hq, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    acc = _acc_dtype(q.dtype)
    n = -(-S // k_block)  # blocks, the last one padded
    pad = n * k_block - S
    valid = jnp.ones((B, S), bool) if key_padding_mask is None else key_padding_mask.astype(bool)
    k_blocks = jnp.pad(k, ((0, 0), (0, 0), (0, pad), (0, 0))).reshape(B, Hkv, n, k_block, D).transpose(2, 0, 1, 3, 4)
    v_blocks = jnp.pad(v, ((0, 0), (0, 0), (0, pad), (0, 0))).reshape(B, Hkv, n, k_block, D).transpose(2, 0, 1, 3, 4)
    valid_blocks = jnp.pad(valid, ((0, 0), (0, pad))).reshape(B, n, k_block).transpose(1, 0, 2)  # (n, B, kb)
    positions = jnp.arange(n * k_block).reshape(n, k_block)  # (n, kb)
    qg = _grouped(q, Hkv)  # (B, Hkv, G, T, D)

    def step(carry: tuple[Array, Array, Array], block: tuple[Array, ...]) -> tuple[tuple[Array, Array, Array], None]:
        m, denom, o = carry  # running max, denominator, accumulator: (B, Hkv, G, T), same, (B, Hkv, G, T, D)
        kb, vb, valid_b, pos = block  # (B, Hkv, kb, D), (B, Hkv, kb, D), (B, kb), (kb,)
        s = jnp.einsum("bhgtd,bhsd->bhgts", qg, kb, preferred_element_type=acc) * scale  # (B, Hkv, G, T, kb)
        mask = _allowed(T, pos, S, causal, window)[None, None, None] & valid_b[:, None, None, None, :]
        s = jnp.where(mask, s, -jnp.inf)
        m_new = jnp.maximum(m, s.max(axis=-1))
        m_safe = jnp.where(m_new == -jnp.inf, 0.0, m_new)  # subtle: exp(-inf - -inf) would be NaN
        p = jnp.exp(s - m_safe[..., None])
        alpha = jnp.exp(m - m_safe)  # 0 while m was -inf
        denom = alpha * denom + p.sum(axis=-1)
        o = alpha[..., None] * o + jnp.einsum("bhgts,bhsd->bhgtd", p, vb.astype(acc))
        return (m_new, denom, o), None

    stats = qg.shape[:-1]  # (B, Hkv, G, T)
    init = (jnp.full(stats, -jnp.inf, acc), jnp.zeros(stats, acc), jnp.zeros(qg.shape, acc))
    (_, denom, o), _ = jax.lax.scan(step, init, (k_blocks, v_blocks, valid_blocks, positions))
    out = o / jnp.where(denom > 0, denom, 1.0)[..., None]  # rows that saw no key: 0 / 1
    return out.reshape(B, Hq, T, D).astype(q.dtype)


if jax is not None:
    _reference_jit = jax.jit(_reference, static_argnames=("causal", "window", "scale"))
    _flash_jit = jax.jit(_flash, static_argnames=("causal", "window", "scale", "k_block"))
