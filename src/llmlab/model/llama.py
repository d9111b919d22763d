"""A Llama-style decoder in one file: RMSNorm, rotary embeddings, GQA attention, SwiGLU, pre-norm blocks.

    tokens -> embedding -> [ x + Attn(RMSNorm(x)) ; x + MLP(RMSNorm(x)) ] x n_layers -> RMSNorm -> head -> logits

The architecture is Llama's (Touvron et al. 2023), so a checkpoint moves to and from
`transformers.LlamaForCausalLM` by renaming and splitting tensors (model/hf_io.py):
rotary embeddings use the "rotate half" layout HF uses, RMSNorm multiplies by its weight
after normalising in float32, and the head is tied to the embedding or not.

Two storage choices differ from HF for speed, not maths: q, k, v come from one fused
matmul (`qkv`), and the MLP's gate and up projections from another (`gate_up`); the HF
export splits them. Attention goes through `llmlab.attention`, so the backend (sdpa,
flash, naive, triton) and a sliding window are configuration, and the naive backend can
return every layer's attention weights for visualisation.

Left out: attention-probability dropout (dropout acts on embeddings and residual
branches), rope scaling for long contexts, and mixture-of-experts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from llmlab.attention.functional import attention
from llmlab.attention.kv_cache import Cache, KVCache
from llmlab.errors import UserError
from llmlab.model.config import ModelConfig


@dataclass
class ModelOutput:
    logits: torch.Tensor  # (B, T, vocab)
    attentions: list[torch.Tensor] | None = None  # per layer (B, n_heads, T, S), with return_attention
    hidden_states: list[torch.Tensor] | None = None  # n_layers + 1 of (B, T, d), HF's convention


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight (Zhang & Sennrich 2019), computed in float32 as HF does."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:  # subtle: skipping the no-op casts matters in one-token decode
            return self.weight * F.rms_norm(x, (x.shape[-1],), eps=self.eps)
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)


def rotary_tables(cfg: ModelConfig, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (max_seq_len, head_dim) for RoPE (Su et al. 2021) in the "rotate half" layout:
    frequency i pairs dimension i with dimension i + head_dim/2."""
    D = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, D, 2, dtype=torch.int64, device=device).float() / D))
    angles = torch.outer(torch.arange(cfg.max_seq_len, device=device).float(), inv_freq)  # (T, D/2)
    angles = torch.cat((angles, angles), dim=-1)  # (T, D)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (..., D) by the angles of its positions; cos, sin (..., D) broadcast against x."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        kv_dim = self.n_kv_heads * self.head_dim
        self.qkv = nn.Linear(cfg.d_model, cfg.d_model + 2 * kv_dim, bias=cfg.qkv_bias)
        self.o = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, layer: int,
                cache: Cache | None, key_padding_mask: torch.Tensor | None,
                return_weights: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, C = x.shape
        Hq, Hkv = self.n_heads, self.n_kv_heads
        qkv = self.qkv(x).view(B, T, Hq + 2 * Hkv, self.head_dim)  # (B, T, Hq + 2 Hkv, D)
        qk = apply_rotary(qkv[:, :, :Hq + Hkv], cos, sin)  # q and k heads rotated in one go
        q = qk[:, :, :Hq].transpose(1, 2)  # (B, Hq, T, D)
        k = qk[:, :, Hq:].transpose(1, 2)  # (B, Hkv, T, D)
        v = qkv[:, :, Hq + Hkv:].transpose(1, 2)  # (B, Hkv, T, D)
        how = dict(causal=True, window=self.cfg.sliding_window, key_padding_mask=key_padding_mask,
                   backend="naive" if return_weights else self.cfg.attention, return_weights=return_weights)
        # with a cache, the queries attend to the cached positions and these T (the cache stores k, v)
        out = cache.attend(layer, q, k, v, **how) if cache is not None else attention(q, k, v, **how)
        y, weights = out if return_weights else (out, None)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, Hq * D)
        return self.o(y), weights


class MLP(nn.Module):
    """SwiGLU (Shazeer 2020): down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_up = nn.Linear(cfg.d_model, 2 * cfg.ff_dim, bias=False)
        self.down = nn.Linear(cfg.ff_dim, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, **kwargs) -> tuple[torch.Tensor,
                                                                                              torch.Tensor | None]:
        a, weights = self.attn(self.attn_norm(x), cos, sin, **kwargs)
        x = x + self.dropout(a)
        x = x + self.dropout(self.mlp(self.mlp_norm(x)))
        return x, weights


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.vocab_size < 1:
            raise ValueError("model.vocab_size 0 (the tokenizer's) must be resolved before a model is built")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        self.gradient_checkpointing = False  # training: recompute each block's activations in backward
        cos, sin = rotary_tables(cfg)
        self.register_buffer("cos", cos, persistent=False)  # derived from the config, never saved
        self.register_buffer("sin", sin, persistent=False)
        if not self.embed.weight.is_meta:  # a model built on "meta" is about to be loaded: nothing to draw
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, init_std) weights; the two projections that write into the residual stream are
        scaled by 1/sqrt(2 n_layers) (GPT-2) so the stream's variance does not grow with depth."""
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p) if name.endswith("norm.weight") else nn.init.zeros_(p)
            elif name.endswith(("attn.o.weight", "mlp.down.weight")):
                nn.init.normal_(p, std=std / math.sqrt(2 * self.cfg.n_layers))
            else:
                nn.init.normal_(p, std=std)

    def new_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        """An empty KV cache for `batch` rows, on the model's device and in its dtype."""
        cfg, w = self.cfg, self.embed.weight
        return KVCache(cfg.n_layers, batch, cfg.kv_heads, max_len or cfg.max_seq_len, cfg.head_dim,
                       dtype=w.dtype, device=w.device)

    def forward(self, idx: torch.Tensor, *, positions: torch.Tensor | None = None, cache: Cache | None = None,
                key_padding_mask: torch.Tensor | None = None, return_attention: bool = False,
                return_hidden: bool = False, logits_to_keep: int = 0) -> ModelOutput:
        """Logits for token ids `idx` (B, T).

        positions (B, T): each token's position for RoPE; default `cache.length + arange(T)`.
            Left-padded batches pass per-row positions so every prompt starts at 0.
        cache: keys and values of earlier positions; this call appends T positions to it. Any `Cache`:
            the contiguous `KVCache`, or a paged cache (llmlab.inference) that passes `positions`.
        key_padding_mask (B, S): True for real tokens over all S = cached + T positions.
        logits_to_keep: k > 0 computes the head for the last k positions only (B, k, vocab), as HF's
            argument of that name: a prefill needs 1 row, a preference loss only the response rows,
            and the head is the largest matmul of a small model.
        """
        B, T = idx.shape
        offset = cache.length if cache is not None else 0
        if positions is None:
            if offset + T > self.cfg.max_seq_len:
                raise UserError(f"sequence of {offset + T} tokens is longer than max_seq_len = "
                                f"{self.cfg.max_seq_len}")
            positions = torch.arange(offset, offset + T, device=idx.device).expand(B, T)
        elif positions.numel() and int(positions.max()) >= self.cfg.max_seq_len:
            raise UserError(f"position {int(positions.max())} is beyond max_seq_len = {self.cfg.max_seq_len}")
        cos, sin = self.cos[positions][:, :, None], self.sin[positions][:, :, None]  # (B, T, 1, D)
        if cos.dtype != self.embed.weight.dtype:
            cos, sin = cos.to(self.embed.weight.dtype), sin.to(self.embed.weight.dtype)
        x = self.dropout(self.embed(idx))  # (B, T, d)
        hidden = [x] if return_hidden else None
        attentions = [] if return_attention else None
        # Checkpointing trades a second forward per block for not storing its activations (Chen et al. 2016).
        checkpointed = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for layer, block in enumerate(self.blocks):
            run = partial(checkpoint, block, use_reentrant=False) if checkpointed else block
            x, weights = run(x, cos, sin, layer=layer, cache=cache, key_padding_mask=key_padding_mask,
                             return_weights=return_attention)
            if attentions is not None:
                attentions.append(weights)
            if hidden is not None and layer < self.cfg.n_layers - 1:
                hidden.append(x)
        x = self.norm(x)
        if hidden is not None:
            hidden.append(x)  # HF: the last entry is after the final norm
        if cache is not None:
            cache.advance(T)
        return ModelOutput(self.head(x[:, -logits_to_keep:] if logits_to_keep else x), attentions, hidden)
