"""A pre-allocated key/value cache: the memory that makes decoding one token cost O(S), not O(S^2).

    k, v: (n_layers, B, n_kv_heads, max_len, head_dim), written in place

Prefill writes the prompt's keys and values at [0, T); each decode step writes one more
position. All rows share one length: prompts of different lengths are left-padded and the
padding is masked by the caller's key_padding_mask, so every step is a single batched call.
With GQA the cache holds only the n_kv_heads heads, which is GQA's memory saving.

`Cache` is what the model asks of any cache (`length`, `attend`, `advance`), so another storage
(the paged pool of llmlab.inference.paged_cache, with its own attention) plugs into the same forward.

Left out: ring-buffer storage (a sliding window still keeps every position, the mask hides the
old ones) and quantised caches.
"""

from __future__ import annotations

from typing import Protocol

import torch

from llmlab.attention.functional import attention
from llmlab.errors import UserError


class Cache(Protocol):
    """What `Transformer.forward` uses of a cache: each layer hands over its queries and new keys and
    values, the cache stores the keys and values and returns the attention output over every position it
    holds; `advance` follows the last layer."""

    length: int  # positions filled so far: the default positions of the next call start here

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               **kwargs) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]: ...

    def advance(self, n: int) -> None: ...


class KVCache:
    def __init__(self, n_layers: int, batch: int, n_kv_heads: int, max_len: int, head_dim: int, *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> None:
        shape = (n_layers, batch, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0  # positions filled so far, the same for every layer once a forward is done

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new positions' k, v (B, Hkv, T, D) for `layer`; return all keys and values so far."""
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise UserError(f"the KV cache holds {self.max_len} positions; {end} were asked for")
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]  # (B, Hkv, end, D) views

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               **kwargs) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, Hkv, T, D) of `layer`; `attention(q, ...)` over every cached position (kwargs:
        its masks, backend and return_weights)."""
        k, v = self.update(layer, k, v)
        return attention(q, k, v, **kwargs)

    def select_rows(self, index: torch.Tensor) -> None:
        """Keep rows `index` (B',) of the batch, in that order (a row may repeat): after one prefill of
        each distinct prompt, the rows that sample from the same prompt get copies of its cache."""
        self.k = self.k.index_select(1, index)
        self.v = self.v.index_select(1, index)

    def advance(self, n: int) -> None:
        """Mark `n` more positions as filled (the model calls this after its last layer)."""
        self.length += n
