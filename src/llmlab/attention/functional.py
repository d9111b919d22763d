"""`attention(q, k, v, ...)`: one entry point, backends chosen by name.

    q: (B, Hq, T, D), k, v: (B, Hkv, S, D)    Hq a multiple of Hkv: MHA (=), GQA, MQA (Hkv = 1)
    S >= T: the queries are the last T positions (decode against a KV cache)

    backend   naive   materialises scores; the oracle; can return the weights
              sdpa    torch.nn.functional.scaled_dot_product_attention
              flash   tiled online softmax with a recomputing backward (flash.py)
              triton  the same algorithm as a Triton GPU kernel (triton_flash.py; CUDA or Triton's
                      CPU interpreter)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from llmlab.attention.flash import flash_attention
from llmlab.attention.masks import BlockLayout, MaskSpec, check_shapes
from llmlab.attention.naive import naive_attention
from llmlab.attention.sdpa import sdpa_attention
from llmlab.errors import UserError


def _triton_attention(*args, **kwargs) -> torch.Tensor:
    from llmlab.attention.triton_flash import triton_attention  # imports triton: only when asked for

    return triton_attention(*args, **kwargs)


BACKENDS: dict[str, Callable[..., torch.Tensor]] = {
    "naive": naive_attention,
    "sdpa": sdpa_attention,
    "flash": flash_attention,
    "triton": _triton_attention,
}
TILED = ("flash", "triton")  # the backends that take q_block / k_block


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = True, window: int | None = None,
              block_mask: BlockLayout | None = None, key_padding_mask: torch.Tensor | None = None,
              scale: float | None = None, backend: str = "sdpa", return_weights: bool = False,
              q_block: int | None = None, k_block: int | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention under the given masks; see the module docstring for shapes.

    `key_padding_mask` (B, S) is True for real tokens. A query that can see no key outputs
    zeros. `return_weights` needs the naive backend; `q_block`, `k_block` are the tile sizes
    of the tiled backends (default: flash 256, triton 64) and are ignored by the others.
    """
    if backend not in BACKENDS:
        raise UserError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    spec = MaskSpec(causal=causal, window=window, block=block_mask)
    check_shapes(q, k, v, spec, key_padding_mask)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if return_weights:
        if backend != "naive":
            raise UserError(f"return_weights needs backend='naive' (the {backend} backend never forms them)")
        return naive_attention(q, k, v, spec, key_padding_mask, scale, return_weights=True)
    if backend in TILED:
        tiles = {name: b for name, b in (("q_block", q_block), ("k_block", k_block)) if b is not None}
        if any(b < 1 for b in tiles.values()):
            raise UserError(f"tile sizes must be positive, got {tiles}")
        return BACKENDS[backend](q, k, v, spec, key_padding_mask, scale, **tiles)
    return BACKENDS[backend](q, k, v, spec, key_padding_mask, scale)  # tile sizes mean nothing here
