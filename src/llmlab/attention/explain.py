"""What one attention layer costs: FLOPs, bytes moved, KV-cache size and arithmetic intensity.

Back-of-the-envelope numbers for the variants in `llmlab.attention`, exact where a count
is exact (the visible (query, key) pairs of a mask) and idealised where traffic depends on
a kernel and a cache hierarchy (every tensor is read from memory once per pass, caches
never help). It is the roofline picture the FlashAttention paper (Dao et al., 2022,
https://arxiv.org/abs/2205.14135) argues from, in a table a user can recompute by hand:

    variant            FLOPs                 bytes moved (x dtype_bytes)
    naive  prefill     4 H D P               Q + K + V + O + 4 H T T   (scores and probs: written, read)
    flash  prefill     4 H D P               Q + O + n_tiles (K + V)    (no T x T matrix)
    window prefill     4 H D P_W             Q + O + n_tiles (K + V) over a band of q_block + W - 1 keys
    decode (1 token)   4 H D S               q + o + K + V of the cache (S = seq_len keys)

with Q, O = H T D and K, V = G T D elements (per sequence, per layer), and everything
multiplied by `batch` and `n_layers`. What leaves it out: the projections and the MLP
(this is attention only), the softmax's exp and max (a few FLOPs per pair, not
multiply-adds), rotary embeddings, and the masked half of the diagonal tiles that real
kernels compute and then throw away.
"""

from __future__ import annotations

import math
from typing import Any

# Balance points (dense bf16 peak / HBM bandwidth) quoted in the note under the table.
NOTE = ("note: intensity = FLOPs per byte moved. Below a machine's balance point (peak FLOP/s / memory "
        "bandwidth: ~150 FLOP/B on an A100, ~300 on an H100, dense bf16) a kernel is memory-bound and fewer "
        "bytes (flash, GQA, a window, a smaller dtype) make it faster; above it, it is compute-bound.")


def visible_pairs(T: int, S: int | None = None, *, window: int | None = None) -> int:
    """How many (query, key) pairs a causal mask lets through: T queries at positions S - T .. S - 1, S keys.

    Same rule as `reference.attention_mask` (key j visible to query p when j <= p and p - j < W),
    counted in closed form, not by building the mask:

        causal prefill (S = T):          1 + 2 + ... + T = T (T + 1) / 2        T=4 -> 10
        causal, window W < T:            1 + ... + W + (T - W) W                T=4, W=2 -> 1+2+2+2 = 7
        one query over S keys, window W: min(S, W)
    """
    S = T if S is None else S
    # query i (0-based among the T) sits at position p = S - T + i and sees min(p + 1, W) keys
    first = S - T + 1  # keys seen by the first query, without a window
    if window is None or window >= S:
        return T * first + T * (T - 1) // 2
    W = window
    ramp = max(0, min(T, W - first + 1))  # queries still below W visible keys: first, first + 1, ..
    return ramp * first + ramp * (ramp - 1) // 2 + (T - ramp) * W


def explain(seq_len: int, n_heads: int, n_kv_heads: int, head_dim: int, *, window: int | None = None,
            batch: int = 1, dtype_bytes: int = 2, n_layers: int = 1, q_block: int = 128) -> list[dict[str, Any]]:
    """One row per variant: FLOPs, bytes moved, FLOP/byte, and KV-cache bytes (per token and for seq_len).

    T = seq_len, H = n_heads, G = n_kv_heads, D = head_dim, b = dtype_bytes; every count is per
    sequence and per layer, then multiplied by batch * n_layers (the KV cache by n_layers, and its
    total by batch as well).

    FLOPs: 2 per multiply-add, two matmuls (Q K^T and P V), each D multiply-adds per visible pair:
        flops = 2 * 2 * D * H * pairs,   pairs = visible_pairs(...)   (causal prefill: T (T + 1) / 2)
    Bytes (reads and writes of memory, each tensor once per pass, caches ignored):
        naive:  b (2 H T D + 2 G T D) + 4 b H T T. The full T x T scores are written, read by the
                softmax, written again as probabilities and read by P V; the masked half is stored too.
        flash:  b (2 H T D) + n_tiles * b (2 G T D), n_tiles = ceil(T / q_block): each query tile
                streams all of K and V once. This is the non-causal bound; a causal kernel skipping
                tiles above the diagonal reads about half. The G heads' K/V are read once per group
                (the query heads of a group share the tile).
        window: as flash, but a tile of q_block queries needs only the band of min(T, q_block + W - 1) keys.
        decode: one new query against S = seq_len cached keys (the cache includes the new token):
                b (2 H D) + b (2 G S D), no score matrix (the S scores per head are negligible).
    KV cache: kv_bytes_per_token = 2 (K and V) * G * D * b * n_layers; kv_cache_bytes = that * seq_len
    * batch (with a window the cache keeps only the last min(W, seq_len) tokens).

    Worked example, T=4, H=2, G=1, D=8, b=2, causal, one sequence, one layer:
        pairs = 10, flops = 4 * 2 * 8 * 10 = 640
        naive bytes = 2 (2*2*4*8 + 2*1*4*8) + 4*2*2*4*4 = 2 (128 + 64) + 256 = 640,  intensity 1.0
        kv_bytes_per_token = 2 * 1 * 8 * 2 = 32
    """
    T, H, G, D, b = seq_len, n_heads, n_kv_heads, head_dim, dtype_bytes
    if min(T, H, G, D, b, batch, n_layers, q_block) < 1 or H % G or (window is not None and window < 1):
        raise ValueError(f"explain: sizes must be positive and n_heads a multiple of n_kv_heads, got T={T} "
                         f"H={H} G={G} D={D} window={window} dtype_bytes={b} batch={batch} "
                         f"n_layers={n_layers} q_block={q_block}")
    scale = batch * n_layers  # every per-sequence, per-layer count is multiplied by this
    n_tiles = math.ceil(T / q_block)

    def row(variant: str, phase: str, *, kv_heads: int, queries: int, keys: int, pairs: int, bytes_: int,
            cached_tokens: int) -> dict[str, Any]:
        flops = 4 * H * D * pairs * scale
        per_token = 2 * kv_heads * D * b * n_layers
        moved = bytes_ * scale
        return {"variant": variant, "phase": phase, "heads": H, "kv_heads": kv_heads, "queries": queries,
                "keys": keys, "pairs": pairs, "flops": flops, "bytes": moved, "intensity": flops / moved,
                "kv_bytes_per_token": per_token, "kv_cache_bytes": per_token * cached_tokens * batch}

    qo = 2 * H * T * D * b  # read Q, write O
    kv = 2 * G * T * D * b  # read K and V once
    pairs = visible_pairs(T)
    rows = [
        row("naive", "prefill", kv_heads=G, queries=T, keys=T, pairs=pairs, bytes_=qo + kv + 4 * H * T * T * b,
            cached_tokens=T),
        row("flash", "prefill", kv_heads=G, queries=T, keys=T, pairs=pairs, bytes_=qo + n_tiles * kv,
            cached_tokens=T),
    ]
    if window is not None:
        band = min(T, q_block + window - 1)  # keys one query tile can see
        rows.append(row(f"flash, window {window}", "prefill", kv_heads=G, queries=T, keys=T,
                        pairs=visible_pairs(T, window=window), bytes_=qo + n_tiles * 2 * G * band * D * b,
                        cached_tokens=min(T, window)))

    def decode(variant: str, kv_heads: int, keys: int) -> dict[str, Any]:
        return row(variant, "decode", kv_heads=kv_heads, queries=1, keys=keys, pairs=keys,
                   bytes_=2 * H * D * b + 2 * kv_heads * keys * D * b, cached_tokens=keys)

    if G != H:
        rows.append(decode("MHA", H, T))  # the same model with one K/V head per query head, for comparison
    rows.append(decode(_kv_name(H, G), G, T))
    if window is not None:
        rows.append(decode(f"{_kv_name(H, G)}, window {window}", G, min(T, window)))
    return rows


def _kv_name(n_heads: int, n_kv_heads: int) -> str:
    if n_kv_heads == n_heads:
        return "MHA"
    return "MQA" if n_kv_heads == 1 else f"GQA {n_heads}:{n_kv_heads}"


def format_explain(rows: list[dict[str, Any]], *, header: str = "") -> str:
    """A markdown table (readable as plain text) with human units, and the note on intensity under it."""
    columns = ("variant", "phase", "kv heads", "keys", "GFLOP", "MB moved", "FLOP/B", "KV KB/token", "KV cache MB")
    body = [
        (r["variant"], r["phase"], str(r["kv_heads"]), f"{r['keys']:,}", _num(r["flops"] / 1e9),
         _num(r["bytes"] / 1e6), _num(r["intensity"]), _num(r["kv_bytes_per_token"] / 1e3),
         _num(r["kv_cache_bytes"] / 1e6))
        for r in rows
    ]
    widths = [max(len(c), *(len(line[i]) for line in body)) for i, c in enumerate(columns)]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) if i < 2 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ("-" if i < 2 else ":") for i, w in enumerate(widths)) + "|"
    lines = ([header, ""] if header else []) + [line(columns), rule, *(line(cells) for cells in body)]
    return "\n".join([*lines, "", NOTE]) + "\n"


def _num(x: float) -> str:
    """3 significant digits, thousands separators for big numbers: 0.00064, 1.5, 42.7, 1,234."""
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"
