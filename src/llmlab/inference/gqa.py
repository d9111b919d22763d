"""MHA -> GQA: fewer key/value heads from a trained checkpoint (Ainslie et al. 2023, "GQA: Training
Generalized Multi-Query Transformer Models from Multi-Head Checkpoints", arXiv:2305.13245).

    key heads   k0 k1 k2 k3 k4 k5 k6 k7        (n_heads = 8, MHA)
    groups      [k0 k1][k2 k3][k4 k5][k6 k7]    (G = 4: query heads 2j, 2j+1 will read kv head j)
    mean        mean(k0,k1) ...  mean(k6,k7)    the paper's choice: it keeps most of every head
    first       k0       k2       k4       k6   the naive baseline: the other heads are dropped

The paper mean-pools the key and value projection matrices of each group, then continues
pretraining ("uptraining") for a small share (5%) of the original steps; mean pooling beat
keeping the first head and random initialisation before uptraining (their Figure 4).

Grouping: the attention backends give query head h the kv head h // (n_heads / n_kv_heads)
(`repeat_interleave`, attention/naive.py), so a group is a run of *consecutive* heads: the
rows of a projection weight (n_kv_heads * head_dim, d_model) reshape as (G, heads per group,
head_dim, d_model). A checkpoint that is already GQA pools its kv heads further the same way
(G must divide its kv heads). The q and o projections, norms and MLP are untouched.

llmlab fuses q, k, v into one `qkv` matrix (model/llama.py): rows [0, d_model) are q, then
n_kv_heads * head_dim rows of k, then as many of v; biases (qkv_bias) the same.

Left out: the paper's uptraining recipe itself lives in `llmlab pretrain` (init=...); the
command that runs both, and the quality checks, are inference/convert.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from llmlab.errors import UserError
from llmlab.model.config import ModelConfig
from llmlab.model.llama import Transformer
from llmlab.model.weights import load_state


def _grouped(w: torch.Tensor, n_heads: int, n_groups: int) -> torch.Tensor:
    """(n_heads * D, ...) -> (n_groups, n_heads / n_groups, D, ...): consecutive heads share a group."""
    check_groups(n_heads, n_groups)
    return w.reshape(n_groups, n_heads // n_groups, w.shape[0] // n_heads, *w.shape[1:])


def mean_pool_heads(w: torch.Tensor, n_heads: int, n_groups: int) -> torch.Tensor:
    """A K or V projection weight (n_heads * D, d_model), or its bias (n_heads * D,), with the heads of
    each group averaged: (n_groups * D, ...). Example, n_heads 4, D 1, n_groups 2: rows [1, 3, 5, 7] -> [2, 6]."""
    g = _grouped(w, n_heads, n_groups)  # (G, n_heads / G, D, ...)
    return g.mean(dim=1).reshape(-1, *w.shape[1:])  # (G * D, ...)


def first_head_of_group(w: torch.Tensor, n_heads: int, n_groups: int) -> torch.Tensor:
    """The naive baseline: each group keeps its first head. Rows [1, 3, 5, 7] as above -> [1, 5]."""
    g = _grouped(w, n_heads, n_groups)  # (G, n_heads / G, D, ...)
    return g[:, 0].reshape(-1, *w.shape[1:])  # (G * D, ...)


POOLERS: dict[str, Callable[[torch.Tensor, int, int], torch.Tensor]] = {
    "mean": mean_pool_heads,
    "first": first_head_of_group,
}


def check_groups(n_heads: int, n_groups: int) -> None:
    """One line for a G that cannot group `n_heads` key/value heads."""
    if not 1 <= n_groups <= n_heads:
        raise UserError(f"n_kv_heads must be between 1 and the model's {n_heads} key/value heads, got {n_groups}")
    if n_heads % n_groups:
        raise UserError(f"n_kv_heads ({n_groups}) must divide the model's {n_heads} key/value heads")


def convert_qkv(w: torch.Tensor, cfg: ModelConfig, n_kv_heads: int, method: str) -> torch.Tensor:
    """The fused qkv weight (d_model + 2 kv_heads D, d_model) or bias of `cfg`'s model with its k and v
    rows pooled to `n_kv_heads` heads: (d_model + 2 n_kv_heads D, ...)."""
    pool = POOLERS[method]
    kv = cfg.kv_heads * cfg.head_dim
    q, k, v = w.split([cfg.d_model, kv, kv])
    return torch.cat([q, pool(k, cfg.kv_heads, n_kv_heads), pool(v, cfg.kv_heads, n_kv_heads)])


def convert_state(state: dict[str, torch.Tensor], cfg: ModelConfig, n_kv_heads: int, *,
                  method: str = "mean") -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """(state dict, config) of the model with `n_kv_heads` key/value heads; every tensor but the qkv
    projections is the same object as in `state`."""
    if method not in POOLERS:
        raise UserError(f"method must be one of {', '.join(POOLERS)}, got {method!r}")
    check_groups(cfg.kv_heads, n_kv_heads)
    out = dict(state)
    for name, tensor in state.items():
        if name.endswith(("attn.qkv.weight", "attn.qkv.bias")):
            out[name] = convert_qkv(tensor, cfg, n_kv_heads, method)
    return out, replace(cfg, n_kv_heads=n_kv_heads)


def convert_model(model: Transformer, n_kv_heads: int, *, method: str = "mean") -> Transformer:
    """A new Transformer with `n_kv_heads` key/value heads, in eval mode, on `model`'s device and dtype."""
    state, cfg = convert_state(model.state_dict(), model.cfg, n_kv_heads, method=method)
    w = model.embed.weight
    with torch.device("meta"):
        converted = Transformer(cfg)
    converted = converted.to_empty(device=w.device)
    if cfg.tie_embeddings:
        converted.head.weight = converted.embed.weight  # subtle: to_empty gives each module its own tensor
    load_state(converted, state, source="the converted weights")  # also recomputes the rotary tables
    return converted.to(w.dtype).eval()


def kv_bytes_per_token(cfg: ModelConfig, dtype_bytes: int) -> int:
    """KV-cache bytes one position costs: k and v, every layer, every kv head."""
    return 2 * cfg.n_layers * cfg.kv_heads * cfg.head_dim * dtype_bytes
