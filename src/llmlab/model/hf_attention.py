"""llmlab's attention kernels inside Hugging Face models: `register_hf_attention()`.

After `register_hf_attention()`, any transformers model that dispatches through its
attention interface (Llama, Mistral, Qwen2, ...) can run on an llmlab backend:

    AutoModelForCausalLM.from_pretrained(path, attn_implementation="llmlab_tiled")

    HF name         llmlab backend
    llmlab_naive    naive   (materialises the scores; the oracle)
    llmlab_sdpa     sdpa    (torch.nn.functional.scaled_dot_product_attention)
    llmlab_tiled    flash   (tiled online softmax, flash.py)
    llmlab_triton   triton  (registered only where CUDA and triton are present)

subtle: the tiled backend is not called "llmlab_flash": transformers 5.x treats every
implementation whose name contains "flash" as a FlashAttention kernel
(`transformers.utils.generic.is_flash_attention_requested`) and tries to load one from the
`flash_attn` package or the Hub when the model is built, which fails for a local function.

The calling convention (transformers/integrations/sdpa_attention.py): the model calls
`fn(module, query, key, value, attention_mask, dropout=, scaling=, **kwargs)` with
query (B, Hq, T, D), key and value (B, Hkv, S, D), the queries being the last T of the S
cached positions, and expects (output (B, T, Hq, D), weights or None). GQA needs no
`repeat_kv`: llmlab's backends take Hkv < Hq directly.

Masks: each name is also registered in transformers' mask interface with `key_padding_mask`
below (HF's FlashAttention mask builder plus static caches), which hands the attention
function the 2D padding mask (B, S') (True = a real token, S' <= S: a static cache's unfilled
slots lie past it) or None, never a dense 4D mask. Causality comes from `module.is_causal` (or the
`is_causal` keyword), the window from the `sliding_window` keyword (Mistral's convention, the
same as llmlab's: p - j < W). That is exactly llmlab's `causal`, `window`, `key_padding_mask`.

What it leaves out, each refused in one line instead of computed wrongly: attention dropout
(training with attention_dropout > 0), soft-capping, attention sinks, custom 4D masks, and
packed sequences given by position_ids alone (no attention_mask). Attention weights are
never returned (`output_attentions` gives None, as with HF's sdpa). A query that can see no
key (a left-padding position) outputs zeros, where eager gives an average of masked keys:
only the real positions of a padded batch agree with eager.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from llmlab.attention.functional import attention
from llmlab.errors import UserError

HF_BACKENDS = {"llmlab_naive": "naive", "llmlab_sdpa": "sdpa", "llmlab_tiled": "flash", "llmlab_triton": "triton"}


def hf_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         attention_mask: torch.Tensor | None, *, backend: str, tiles: dict[str, int] | None = None,
                         dropout: float = 0.0, scaling: float | None = None, sliding_window: int | None = None,
                         is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """One HF attention call on an llmlab backend; see the module docstring for the convention.

    `tiles`: q_block / k_block for the tiled backends (flash, triton; the others ignore them).
    """
    if dropout > 0.0:
        raise UserError(f"llmlab attention has no dropout (got attention dropout {dropout}); use model.eval() "
                        "or attention_dropout=0")
    for unsupported in ("softcap", "s_aux"):
        if kwargs.get(unsupported) is not None:
            raise UserError(f"llmlab attention does not support {unsupported!r}; use attn_implementation='eager'")
    key_padding_mask = padding_mask(attention_mask, query, key, kwargs.get("position_ids"))
    S = key.shape[2] if key_padding_mask is None else key_padding_mask.shape[1]
    key, value = key[:, :, :S], value[:, :, :S]  # a static cache's unfilled slots lie past the mask
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    out = attention(query, key, value, causal=causal, window=sliding_window, key_padding_mask=key_padding_mask,
                    scale=scaling, backend=backend, **(tiles or {}))  # (B, Hq, T, D)
    return out.transpose(1, 2).contiguous(), None  # (B, T, Hq, D): HF's layout


def padding_mask(attention_mask: torch.Tensor | None, query: torch.Tensor, key: torch.Tensor,
                 position_ids: torch.Tensor | None) -> torch.Tensor | None:
    """HF's mask as llmlab's key_padding_mask (B, S') with S' <= S, or None for no padding."""
    if attention_mask is None:
        T = query.shape[2]
        if position_ids is not None and T > 1 and bool((position_ids.diff(dim=-1) != 1).any()):
            # subtle: HF's FlashAttention path reads packed sequences from position_ids; a mask-less
            # call here would let every packed sequence see the ones before it
            raise UserError("llmlab attention does not support packed sequences (position_ids that restart "
                            "inside a row); pass an attention_mask or use attn_implementation='sdpa'")
        return None
    if attention_mask.dim() != 2:
        raise UserError(f"llmlab attention takes a 2D padding mask; got a {attention_mask.dim()}D mask "
                        f"{tuple(attention_mask.shape)} (custom 4D masks need attn_implementation='sdpa' or 'eager')")
    if attention_mask.shape[1] > key.shape[2]:
        raise UserError(f"the padding mask covers {attention_mask.shape[1]} keys but only {key.shape[2]} were given")
    return attention_mask.to(torch.bool)


def key_padding_mask(batch_size: int, q_length: int, kv_length: int, q_offset: int | torch.Tensor = 0,
                     kv_offset: int = 0, attention_mask: torch.Tensor | None = None,
                     device: torch.device | str = "cpu", **kwargs: Any) -> torch.Tensor | None:
    """A transformers mask-interface function: the 2D padding mask (B, S') of the keys in use, or None.

    subtle: a static cache hands over all `kv_length` slots, filled or not, and generate drops an
    all-ones attention_mask; a mask of the `q_offset + q_length` filled slots tells the attention
    function where the keys end (HF's FlashAttention path needs the same, and keeps the mask).
    """
    from transformers.masking_utils import flash_attention_mask  # transformers: optional, see above

    mask = flash_attention_mask(batch_size, q_length, kv_length, q_offset, kv_offset, attention_mask=attention_mask)
    filled = int(q_offset) + q_length
    if mask is None and filled < kv_length:
        mask = torch.ones(batch_size, filled, dtype=torch.bool, device=device)
    return mask


def _bound(backend: str, tiles: dict[str, int]) -> Callable[..., tuple[torch.Tensor, None]]:
    def forward(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        return hf_attention_forward(*args, backend=backend, tiles=tiles, **kwargs)

    forward.__name__ = f"llmlab_{backend}_attention_forward"
    return forward


def register_hf_attention(*, q_block: int | None = None, k_block: int | None = None) -> list[str]:
    """Register llmlab's backends with transformers; returns the names registered.

    Registering again replaces the earlier functions (new tile sizes). `q_block`, `k_block`: the
    tile sizes of llmlab_tiled and llmlab_triton (default: theirs). `llmlab_triton` only where
    CUDA and triton are present (its kernel runs on CUDA tensors).
    """
    if any(b is not None and b < 1 for b in (q_block, k_block)):
        raise UserError(f"tile sizes must be positive, got q_block={q_block}, k_block={k_block}")
    tiles = {name: b for name, b in (("q_block", q_block), ("k_block", k_block)) if b is not None}
    try:  # transformers: an optional dependency, imported only by those who ask for it
        from transformers import AttentionInterface, AttentionMaskInterface
    except ImportError as e:
        raise UserError(f"register_hf_attention needs transformers 5.x (AttentionInterface and "
                        f"AttentionMaskInterface; tested with 5.25): {e}") from e

    names = []
    for name, backend in HF_BACKENDS.items():
        if backend == "triton" and not _triton_usable():
            continue
        AttentionInterface.register(name, _bound(backend, tiles))
        AttentionMaskInterface.register(name, key_padding_mask)
        names.append(name)
    return names


def _triton_usable() -> bool:
    if not torch.cuda.is_available():
        return False
    from llmlab.attention.triton_flash import available  # imports triton: only on a CUDA machine

    return available(torch.device("cuda"))
