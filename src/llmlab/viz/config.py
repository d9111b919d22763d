"""Configs of the viz commands: `llmlab viz attention` and `llmlab attention explain`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmlab.attention.whatif import ACCELERATORS, DTYPE_BYTES, PRESETS
from llmlab.config import check, require

MAX_TOKENS = 512  # the page embeds L * H * T * T weights; 512 tokens is ~10 MB of JSON
WORD = re.compile(r"\w+|[^\w\s]")


def split_words(text: str) -> list[str]:
    """Words and punctuation: "The cat's <b>mat</b>!" -> The cat ' s < b > mat < / b > !"""
    return WORD.findall(text)


@dataclass(frozen=True)
class VizAttentionConfig:
    """`llmlab viz attention`: attention maps of a trained model (--model) or of a random NumPy
    reference model over your text."""

    text: str = ""
    model: str = ""  # an llmlab or HF model folder; empty: the random reference model below
    layer: int | None = None  # 0-based; None: every layer in the PNG
    head: int | None = None  # 0-based; None: every head in the PNG
    seed: int = 0  # weights and token vectors
    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 64  # n_heads * head_dim
    causal: bool = True

    def __post_init__(self) -> None:
        require(bool(self.text.strip()), "text is empty: pass the text to look at with --text '...'")
        n_tokens = len(split_words(self.text))
        check(bool(self.model) or n_tokens <= MAX_TOKENS,
              f"text has {n_tokens} tokens; at most {MAX_TOKENS} fit in the maps")
        for name in ("n_layers", "n_heads", "d_model"):
            check(getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}")
        check(self.d_model % self.n_heads == 0,
              f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
        if self.model:  # the model's own layer and head counts are checked once it is loaded
            return
        check(self.layer is None or 0 <= self.layer < self.n_layers,
              f"layer {self.layer} is out of range: the model has {self.n_layers} layers, 0..{self.n_layers - 1}")
        check(self.head is None or 0 <= self.head < self.n_heads,
              f"head {self.head} is out of range: the model has {self.n_heads} heads, 0..{self.n_heads - 1}")


@dataclass(frozen=True)
class AttentionExplainConfig:
    """`llmlab attention explain`: FLOPs, bytes, KV cache and intensity of the attention variants."""

    seq_len: int = 4096
    n_heads: int = 32
    n_kv_heads: int = 8
    head_dim: int = 128
    window: int | None = None  # sliding window in tokens; None: no window rows
    dtype_bytes: int = 2  # 2: bf16 / fp16, 4: fp32, 1: fp8
    batch: int = 1
    n_layers: int = 1
    q_block: int = 128  # query rows per flash tile
    # Hardware what-ifs: named models (or "all") at seq_len tokens and `batch` print the whole-model decode
    # roofline (attention/whatif.py) instead of the one-layer table; the shape keys above are then unused.
    presets: tuple[str, ...] = ()
    dtypes: tuple[str, ...] = ("bf16", "fp8")
    accelerators: tuple[str, ...] = ("h100-sxm", "a100-80gb", "mi300x", "l4")

    def __post_init__(self) -> None:
        for name in ("seq_len", "n_heads", "n_kv_heads", "head_dim", "dtype_bytes", "batch", "n_layers",
                     "q_block"):
            check(getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}")
        for key, known in (("presets", (*PRESETS, "all")), ("dtypes", DTYPE_BYTES), ("accelerators", ACCELERATORS)):
            for name in getattr(self, key):
                check(name in known, f"{key}: unknown {name!r}; known: {', '.join(known)}")
        check(bool(self.dtypes) and bool(self.accelerators), "dtypes and accelerators need at least one name each")
        check(self.n_heads % self.n_kv_heads == 0,
              f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}: each K/V head "
              "serves n_heads / n_kv_heads query heads")
        check(self.window is None or self.window >= 1, f"window must be at least 1, got {self.window}")
