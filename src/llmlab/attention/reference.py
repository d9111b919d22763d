"""Attention from scratch in NumPy: the oracle for every PyTorch backend.

Reads like the formula, float64 by default:

    Q = X W_q,  K = X W_k,  V = X W_v                      # (T, d_model) @ (d_model, H * d_k)
    A = softmax(Q K^T / sqrt(d_k) + M)                      # M: 0 where allowed, -inf where masked
    out = A V,  heads concatenated,  then @ W_o

`mask` below is boolean, True where a query may attend to a key. A query whose every
key is masked gets zero weights and a zero output (never NaN). Positions follow the
KV-cache convention of `llmlab.attention`: with T queries and S >= T keys, query i
sits at position S - T + i.

What it leaves out: dropout, biases, rotary embeddings (the model adds those), speed.
"""

from __future__ import annotations

import math

import numpy as np


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """exp(x - max) / sum: the max shift keeps exp from overflowing; all -inf rows give zeros."""
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)  # a row of -inf: shift by 0, exp gives 0s
    e = np.exp(x - m)
    s = np.sum(e, axis=axis, keepdims=True)
    return np.divide(e, s, out=np.zeros_like(e), where=s > 0)


def attention_mask(T: int, S: int, *, causal: bool = True, window: int | None = None,
                   layout: np.ndarray | None = None, block_size: int | None = None,
                   key_valid: np.ndarray | None = None) -> np.ndarray:
    """Boolean (B or 1, T, S): which key each query may see, by the definitions, one rule at a time.

    causal: key j <= query position p;   window W: p - j < W (and j - p < W when not causal);
    layout (n_blocks, n_blocks) with block_size: layout[p // bs, j // bs];   key_valid (B, S).
    """
    p = np.arange(S - T, S)[:, None]  # (T, 1) query positions
    j = np.arange(S)[None, :]  # (1, S) key positions
    allowed = np.ones((T, S), dtype=bool)
    if causal:
        allowed &= j <= p
    if window is not None:
        allowed &= (p - j < window) & ((j - p < window) if not causal else True)
    if layout is not None:
        assert block_size is not None
        allowed &= layout[p // block_size, j // block_size]
    allowed = allowed[None]  # (1, T, S)
    if key_valid is not None:
        allowed = allowed & key_valid[:, None, :].astype(bool)  # (B, T, S)
    return allowed


def scaled_dot_product_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None,
                                 scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """softmax(q k^T * scale + mask) v for q: (..., T, d), k, v: (..., S, d); returns (out, weights)."""
    d_k = q.shape[-1]
    scale = 1.0 / math.sqrt(d_k) if scale is None else scale  # a Python float: keeps float32 float32
    scores = q @ np.swapaxes(k, -1, -2) * scale  # (..., T, S)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    weights = softmax(scores, axis=-1)  # (..., T, S)
    return weights @ v, weights  # (..., T, d), (..., T, S)


def grouped_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None,
                      scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """q: (B, Hq, T, d), k, v: (B, Hkv, S, d), Hq a multiple of Hkv; mask (B or 1, T, S).

    Each group of Hq / Hkv query heads shares one key/value head (MQA when Hkv = 1).
    """
    group = q.shape[1] // k.shape[1]
    k = np.repeat(k, group, axis=1)  # (B, Hq, S, d): head h reads kv head h // group
    v = np.repeat(v, group, axis=1)
    return scaled_dot_product_attention(q, k, v, None if mask is None else mask[:, None], scale)


def multi_head_attention(x: np.ndarray, w_q: np.ndarray, w_k: np.ndarray, w_v: np.ndarray, w_o: np.ndarray, *,
                         n_heads: int, n_kv_heads: int | None = None, causal: bool = True,
                         dtype: type = np.float64) -> tuple[np.ndarray, np.ndarray]:
    """Multi-head self-attention of x: (T, d_model); returns (out (T, d_model), weights (H, T, T)).

    w_q: (d_model, H * d_k), w_k and w_v: (d_model, Hkv * d_k), w_o: (H * d_k, d_model).
    """
    n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
    x, w_q, w_k, w_v, w_o = (a.astype(dtype) for a in (x, w_q, w_k, w_v, w_o))
    T = x.shape[0]
    d_k = w_q.shape[1] // n_heads
    q = (x @ w_q).reshape(T, n_heads, d_k).transpose(1, 0, 2)  # (H, T, d_k)
    k = (x @ w_k).reshape(T, n_kv_heads, d_k).transpose(1, 0, 2)  # (Hkv, T, d_k)
    v = (x @ w_v).reshape(T, n_kv_heads, d_k).transpose(1, 0, 2)  # (Hkv, T, d_k)
    mask = attention_mask(T, T, causal=causal)  # (1, T, T)
    out, weights = grouped_attention(q[None], k[None], v[None], mask)  # (1, H, T, d_k), (1, H, T, T)
    merged = out[0].transpose(1, 0, 2).reshape(T, n_heads * d_k)  # (T, H * d_k): heads side by side
    return merged @ w_o, weights[0]
