"""Which key each query may see: causal, sliding window, block-sparse layouts, padding.

Expressed once and used by every backend. Positions follow the KV-cache convention:
with T queries and S >= T keys, query i sits at position S - T + i, so one-token
decode (T = 1) sees the whole cache and prefill (T = S) is the usual square.

    causal         key j <= query position p
    window W       p - j < W: the W most recent keys, itself included (Mistral's convention);
                   without causal, |p - j| < W
    block layout   layout[p // bs, j // bs] (Sparse Transformer / Longformer / BigBird)
    key padding    key_padding_mask[b, j] (True = a real token, as HF's attention_mask)

The flash backend asks `tile_mask` per (query tile, key tile): tiles that no query can
see are skipped without computing a score, and tiles that every query sees need no mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llmlab.errors import UserError


@dataclass(frozen=True)
class BlockLayout:
    """A block-sparse layout over absolute positions: block (i, j) is visible iff layout[i, j]."""

    layout: torch.Tensor  # (n_blocks, n_blocks) bool
    block_size: int

    def __post_init__(self) -> None:
        if self.layout.dim() != 2 or self.layout.shape[0] != self.layout.shape[1] or self.layout.dtype != torch.bool:
            raise UserError(f"a block layout is a square bool matrix, got {tuple(self.layout.shape)} "
                            f"{self.layout.dtype}")
        if self.block_size < 1:
            raise UserError(f"block_size must be positive, got {self.block_size}")

    @property
    def max_positions(self) -> int:
        return self.layout.shape[0] * self.block_size


def local_strided(n_blocks: int, block_size: int, *, local: int, stride: int) -> BlockLayout:
    """Sparse Transformer (Child et al. 2019), strided form in blocks: the `local` most recent
    blocks, plus every block that ends a stride (j % stride == stride - 1) as a summary column."""
    if local < 1 or stride < 1:
        raise UserError(f"local and stride must be at least 1, got local={local}, stride={stride}")
    i = torch.arange(n_blocks)[:, None]
    j = torch.arange(n_blocks)[None, :]
    layout = ((i - j).abs() < local) | (j % stride == stride - 1)
    return BlockLayout(layout, block_size)


def local_global(n_blocks: int, block_size: int, *, local: int, n_global: int) -> BlockLayout:
    """Longformer (Beltagy et al. 2020) in blocks: a band of `local` blocks each side, plus the first
    `n_global` blocks, which see everything and are seen by everything."""
    i = torch.arange(n_blocks)[:, None]
    j = torch.arange(n_blocks)[None, :]
    layout = ((i - j).abs() < local) | (i < n_global) | (j < n_global)
    return BlockLayout(layout, block_size)


def bigbird(n_blocks: int, block_size: int, *, local: int, n_global: int, n_random: int,
            generator: torch.Generator) -> BlockLayout:
    """BigBird (Zaheer et al. 2020): local + global blocks, plus `n_random` random blocks per row."""
    layout = local_global(n_blocks, block_size, local=local, n_global=n_global).layout.clone()
    for row in range(n_blocks):
        picks = torch.randperm(n_blocks, generator=generator)[:n_random]
        layout[row, picks] = True
    return BlockLayout(layout, block_size)


@dataclass(frozen=True)
class MaskSpec:
    """The position-dependent part of a mask (padding is per batch row and handled apart)."""

    causal: bool = True
    window: int | None = None
    block: BlockLayout | None = None

    def allowed(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """(tq, tk) bool for query positions q_pos (tq,) and key positions k_pos (tk,)."""
        p = q_pos[:, None]
        j = k_pos[None, :]
        ok = torch.ones(p.shape[0], j.shape[1], dtype=torch.bool, device=q_pos.device)
        if self.causal:
            ok &= j <= p
        if self.window is not None:
            ok &= (p - j < self.window) if self.causal else ((p - j).abs() < self.window)
        if self.block is not None:
            bs = self.block.block_size
            ok &= self.block.layout.to(q_pos.device)[p // bs, j // bs]
        return ok

    def tile_mask(self, q_lo: int, q_hi: int, k_lo: int, k_hi: int, device: torch.device) -> torch.Tensor | bool:
        """For queries at positions [q_lo, q_hi) and keys [k_lo, k_hi): False if no query sees any key
        (skip the tile), True if every query sees every key (no mask needed), else the (tq, tk) mask."""
        qa, qb, ka, kb = q_lo, q_hi - 1, k_lo, k_hi - 1  # inclusive bounds
        if self.causal and ka > qb:  # every key is in every query's future
            return False
        if self.window is not None and (qa - kb >= self.window or (not self.causal and ka - qb >= self.window)):
            return False  # every key is out of every query's window
        full = not self.causal or kb <= qa
        if self.window is not None:
            farthest = qb - ka if self.causal else max(qb - ka, kb - qa)
            full = full and farthest < self.window
        if full and self.block is None:
            return True
        mask = self.allowed(torch.arange(q_lo, q_hi, device=device), torch.arange(k_lo, k_hi, device=device))
        if not bool(mask.any()):
            return False
        return True if bool(mask.all()) else mask

    @property
    def is_trivial(self) -> bool:
        return not self.causal and self.window is None and self.block is None


def dense_mask(T: int, S: int, spec: MaskSpec, key_padding_mask: torch.Tensor | None = None,
               device: torch.device | None = None) -> torch.Tensor | None:
    """(B or 1, 1, T, S) bool, True where attention is allowed; None when nothing is masked."""
    if spec.is_trivial and key_padding_mask is None:
        return None
    mask = spec.allowed(torch.arange(S - T, S, device=device), torch.arange(S, device=device))[None, None]
    if key_padding_mask is not None:
        mask = mask & key_padding_mask.to(device=mask.device, dtype=torch.bool)[:, None, None, :]
    return mask  # (B or 1, 1, T, S)


def check_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: MaskSpec,
                 key_padding_mask: torch.Tensor | None) -> None:
    """One-line UserErrors for shapes that cannot be attention."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise UserError(f"q, k, v must be (B, H, T, D); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    B, Hq, T, D = q.shape
    _, Hkv, S, _ = k.shape
    if k.shape != v.shape or k.shape[0] != B or k.shape[3] != D:
        raise UserError(f"k and v must be (B, Hkv, S, D) matching q {tuple(q.shape)}; got {tuple(k.shape)}, "
                        f"{tuple(v.shape)}")
    if Hkv == 0 or Hq % Hkv:
        raise UserError(f"query heads ({Hq}) must be a multiple of key/value heads ({Hkv})")
    if S < T:
        raise UserError(f"fewer keys ({S}) than queries ({T}): queries are the last T of S positions")
    if spec.window is not None and spec.window < 1:
        raise UserError(f"window must be at least 1, got {spec.window}")
    if spec.block is not None and spec.block.max_positions < S:
        raise UserError(f"the block layout covers {spec.block.max_positions} positions, fewer than S = {S}")
    if key_padding_mask is not None and tuple(key_padding_mask.shape) != (B, S):
        raise UserError(f"key_padding_mask must be (B, S) = ({B}, {S}), got {tuple(key_padding_mask.shape)}")
