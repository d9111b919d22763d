"""`ModelConfig`: the shape of a Llama-style decoder, checked when it is built; and the configs of the
model commands (`llmlab generate`, `chat`, `export-hf`).

Field names follow the papers (d_model, n_heads, n_kv_heads, d_ff); `hf_io` maps them to
`LlamaConfig`'s names (hidden_size, num_attention_heads, ...). Sizes that cannot work
(heads not dividing d_model, an odd head dimension for RoPE, kv heads not dividing heads)
fail here with a one-line ConfigError instead of a shape error deep inside a forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmlab.config import check, require


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 8192  # 0: set by the command from its tokenizer (llmlab pretrain)
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 8
    n_kv_heads: int | None = None  # None: = n_heads (MHA); fewer: GQA; 1: MQA
    d_ff: int | None = None  # None: the Llama rule, ~8/3 d_model rounded up to a multiple of 64
    max_seq_len: int = 512
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    attention: Literal["sdpa", "flash", "naive", "triton"] = "sdpa"
    sliding_window: int | None = None  # each token sees the W most recent positions, itself included
    dropout: float = 0.0  # on the embeddings and on each residual branch
    init_std: float = 0.02
    qkv_bias: bool = False  # biases on the q, k, v projections, as Qwen2 (Llama has none)

    def __post_init__(self) -> None:
        check(self.vocab_size >= 0, f"model.vocab_size must be >= 0 (0: the tokenizer's), got {self.vocab_size}")
        for name in ("d_model", "n_layers", "n_heads", "max_seq_len"):
            check(getattr(self, name) >= 1, f"model.{name} must be at least 1, got {getattr(self, name)}")
        check(self.d_model % self.n_heads == 0,
              f"model.n_heads ({self.n_heads}) must divide model.d_model ({self.d_model})")
        check(self.head_dim % 2 == 0, f"the head dimension d_model / n_heads = {self.head_dim} must be even "
              "for rotary embeddings")
        check(self.kv_heads >= 1 and self.n_heads % self.kv_heads == 0,
              f"model.n_kv_heads ({self.n_kv_heads}) must divide model.n_heads ({self.n_heads})")
        check(self.ff_dim >= 1, f"model.d_ff must be at least 1, got {self.d_ff}")
        check(self.rope_theta > 0, f"model.rope_theta must be positive, got {self.rope_theta}")
        check(self.norm_eps > 0, f"model.norm_eps must be positive, got {self.norm_eps}")
        check(0.0 <= self.dropout < 1.0, f"model.dropout must be in [0, 1), got {self.dropout}")
        check(self.init_std > 0, f"model.init_std must be positive, got {self.init_std}")
        check(self.sliding_window is None or self.sliding_window >= 1,
              f"model.sliding_window must be at least 1, got {self.sliding_window}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def ff_dim(self) -> int:
        if self.d_ff is not None:
            return self.d_ff
        return -(-int(8 * self.d_model / 3) // 64) * 64  # Llama: 2/3 of 4 d_model, rounded up to 64

    def num_params(self, *, embeddings: bool = True) -> int:
        """Parameters of the model built from this config (tied head counted once)."""
        d, kv = self.d_model, self.kv_heads * self.head_dim
        per_layer = d * (d + 2 * kv) + d * d + 3 * d * self.ff_dim + 2 * d  # qkv, o, gate/up/down, 2 norms
        per_layer += (d + 2 * kv) if self.qkv_bias else 0
        n = self.n_layers * per_layer + d  # + final norm
        emb = self.vocab_size * d
        head = 0 if self.tie_embeddings else self.vocab_size * d
        return n + (emb + head if embeddings else 0)

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs (forward + backward) per token, as in PaLM (Chowdhery et al. 2022, app. B):
        6 per weight of every matmul (the output head included, the embedding lookup not) plus
        12 * n_layers * d_model * seq_len for the attention scores and weighted sums, without
        halving for the causal mask, so figures compare with published MFU numbers."""
        d, kv = self.d_model, self.kv_heads * self.head_dim
        matmul = self.n_layers * (d * (d + 2 * kv) + d * d + 3 * d * self.ff_dim) + d * self.vocab_size
        return 6.0 * matmul + 12.0 * self.n_layers * d * seq_len


# ---------------------------------------------------------------------- commands


@dataclass(frozen=True)
class SamplingOptions:
    """The sampling flags shared by `generate` and `chat`."""

    model: str = ""
    max_new_tokens: int = 128
    temperature: float = 0.8  # 0: greedy
    top_k: int | None = None
    top_p: float | None = 0.95
    repetition_penalty: float = 1.0
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self) -> None:
        require(bool(self.model), "model is required (--model DIR: an llmlab model folder or a local HF folder)")
        check(self.max_new_tokens >= 1, f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        check(self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}")
        check(self.top_k is None or self.top_k >= 1, f"top_k must be at least 1, got {self.top_k}")
        check(self.top_p is None or 0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")
        check(self.repetition_penalty > 0, f"repetition_penalty must be positive, got {self.repetition_penalty}")


@dataclass(frozen=True)
class GenerateTextConfig(SamplingOptions):
    """`llmlab generate`."""

    prompt: str = ""
    chat: bool = False  # wrap the prompt as one user turn of the model's chat template


@dataclass(frozen=True)
class ChatConfig(SamplingOptions):
    """`llmlab chat`."""

    system: str = ""  # an optional system message


@dataclass(frozen=True)
class ExportHFConfig:
    """`llmlab export-hf`."""

    model: str = ""
    out: str = ""

    def __post_init__(self) -> None:
        require(bool(self.model), "model is required (--model DIR)")
        require(bool(self.out), "out is required (--out HF_DIR)")
