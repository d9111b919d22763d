"""One decode step (one new token per row against a filled KV cache), two ways, chosen by name.

    step = DECODE_STEPS["static"](model, cache, key_padding_mask=real)   # real (B, total) bool or None
    logits = step(token, pos)                                            # (B,), (B,) -> (B, vocab)

    forward   the model's own `forward` with T = 1: the reference, and what `Engine` did before
    static    the same arithmetic over the model's weights with everything that does not change
              between steps prepared once, as gpt-fast's static-cache decode (PyTorch team, 2023)

At batch 1 a small model's decode step is not bound by its matmuls but by the ~300 small tensor
ops around them, each a few microseconds of Python and dispatch. The static step removes them:

    per step, not per layer   RoPE as one (B, D, D) rotation matrix per row (RoFormer writes RoPE as
                              x R_m): each layer rotates q and k with one bmm instead of
                              chunk/neg/cat/mul/mul/add
    once per generation       the padding mask as an additive float mask over the whole cache, sliced
                              each step; the cache's per-layer views; transposed weight views
    fused                     residual adds into the output projections (addmm); SiLU in place
    fewer ops                 torch.mm on transposed weight views (F.linear transposes per call); RMSNorm
                              in 5 ops without Python scalars (`rms_norm`)
    skipped                   nn.Module calls, dropout (eval), shape checks that cannot fail here

The cache is the pre-allocated `KVCache` (static: no per-step allocation); this step writes each
new key and value into it in place and reads the first S positions as views. The sdpa backend is
called directly; the other backends go through `llmlab.attention.attention` with the same keys.
Float results differ from `forward` by rounding only (the rotation's sums and addmm's fused add
round differently); greedy tokens equal the naive generator's (tests/model/test_decode.py).

Left out: `torch.compile` (a C++ toolchain and minutes of compile time on CPU), CUDA graphs, and
the multi-token verify step of speculative decoding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.attention.functional import attention
from llmlab.attention.kv_cache import KVCache
from llmlab.model.llama import RMSNorm, Transformer

DecodeStep = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (token (B,), pos (B,)) -> logits (B, V)


def rotate_half_matrix(D: int, *, dtype: torch.dtype = torch.float32,
                       device: torch.device | None = None) -> torch.Tensor:
    """J (D, D) with x @ J = rotate_half(x) = cat(-x2, x1): column i < D/2 takes -x[i + D/2], column
    i >= D/2 takes x[i - D/2]. D = 4: x @ J = [-x2, -x3, x0, x1]."""
    h = D // 2
    J = torch.zeros(D, D, dtype=dtype, device=device)
    i = torch.arange(h, device=device)
    J[i + h, i] = -1.0
    J[i, i + h] = 1.0
    return J


def rotary_matrices(cos: torch.Tensor, sin: torch.Tensor, J: torch.Tensor) -> torch.Tensor:
    """R (B, D, D) with x @ R = x * cos + rotate_half(x) * sin for rows' cos, sin (B, D):
    R = diag(cos) + J diag(sin), so x @ R applies llama.apply_rotary in one matmul."""
    return torch.diag_embed(cos) + J * sin[:, None, :]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, mean_eps: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """llama.RMSNorm of rows x (B, d) in 5 ops: mean(x^2) + eps is one addmm of x^2 against a float32
    (d, 1) column of 1/d onto eps (1, 1). subtle: F.rms_norm and x.pow(2).mean() + eps each turn Python
    scalars into tensors on CPU (19-24 aten calls per norm), which adds up at 2 n_layers + 1 norms a step.
    Other dtypes normalise in float32 and cast back before the weight, as RMSNorm does."""
    inv_d, eps = mean_eps
    if x.dtype != torch.float32:
        xf = x.float()
        return (xf * torch.addmm(eps, xf * xf, inv_d).rsqrt_()).to(x.dtype) * weight
    return x * torch.addmm(eps, x * x, inv_d).rsqrt_() * weight  # (B, d) * (B, 1) * (d,)


def forward_step(model: Transformer, cache: KVCache, *, key_padding_mask: torch.Tensor | None) -> DecodeStep:
    """The model's forward with T = 1: the reference the static step is checked against."""

    def step(token: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        mask = None if key_padding_mask is None else key_padding_mask[:, :cache.length + 1]
        return model(token[:, None], positions=pos[:, None], cache=cache, key_padding_mask=mask).logits[:, -1]

    return step


def is_plain(model: Transformer) -> bool:
    """True when the static step computes what `forward` does: every layer is the model's own (no LoRA
    or other wrapper swapped in, no hooks) and dropout is off."""
    plain = [(m, nn.Linear) for b in model.blocks for m in (b.attn.qkv, b.attn.o, b.mlp.gate_up, b.mlp.down)]
    plain += [(m, RMSNorm) for b in model.blocks for m in (b.attn_norm, b.mlp_norm)]
    plain += [(model.head, nn.Linear), (model.norm, RMSNorm), (model.embed, nn.Embedding)]
    dropout = model.training and model.cfg.dropout > 0
    hooked = any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    return not dropout and not hooked and all(type(m) is kind for m, kind in plain)


def static_step(model: Transformer, cache: KVCache, *, key_padding_mask: torch.Tensor | None) -> DecodeStep:
    """The decode step with per-step overhead removed (module docstring). `key_padding_mask` (B, total)
    is True at real positions, the positions still to be generated included. A model that is not
    `is_plain` (LoRA layers during RL rollouts, hooks, dropout on) gets the forward step instead."""
    if not is_plain(model):
        return forward_step(model, cache, key_padding_mask=key_padding_mask)
    cfg = model.cfg
    B = cache.k.shape[1]
    Hq, Hkv, D = cfg.n_heads, cfg.kv_heads, cfg.head_dim
    gqa, window, backend, eps = Hq != Hkv, cfg.sliding_window, cfg.attention, cfg.norm_eps
    w = model.embed.weight
    J = rotate_half_matrix(D, dtype=w.dtype, device=w.device)
    cos, sin = model.cos.to(w.dtype), model.sin.to(w.dtype)  # (max_seq_len, D)
    # transposed weight views for torch.mm / addmm (F.linear transposes on every call); cache.k[i]:
    # (B, Hkv, max_len, D), a view written in place
    layers = [(b.attn_norm.weight, b.attn.qkv.weight.t(), b.attn.qkv.bias, b.attn.o.weight.t(), b.mlp_norm.weight,
               b.mlp.gate_up.weight.t(), b.mlp.down.weight.t(), cache.k[i], cache.v[i])
              for i, b in enumerate(model.blocks)]
    head_t, norm_w = model.head.weight.t(), model.norm.weight
    mean_eps = (torch.full((cfg.d_model, 1), 1.0 / cfg.d_model, device=w.device),
                torch.full((1, 1), eps, device=w.device))  # float32, whatever the weights' dtype
    additive = None  # sdpa: (B, 1, 1, total), 0 where a key is real, -inf at padding
    if key_padding_mask is not None:
        additive = torch.zeros(key_padding_mask.shape, dtype=w.dtype, device=w.device)
        additive = additive.masked_fill_(~key_padding_mask, float("-inf"))[:, None, None, :]

    def step(token: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        i = cache.length  # the new token's slot in the cache
        S = i + 1
        lo = max(0, S - window) if window is not None else 0  # decode sees the last `window` slots (masks.py)
        R = rotary_matrices(cos[pos], sin[pos], J)  # (B, D, D), shared by every layer
        x = F.embedding(token, w)  # (B, d)
        for attn_norm, qkv_t, qkv_b, o_t, mlp_norm, gate_up_t, down_t, k_cache, v_cache in layers:
            h = rms_norm(x, attn_norm, mean_eps)
            qkv = torch.mm(h, qkv_t) if qkv_b is None else torch.addmm(qkv_b, h, qkv_t)
            qkv = qkv.view(B, Hq + 2 * Hkv, D)  # (B, Hq + 2 Hkv, D)
            qk = torch.bmm(qkv[:, :Hq + Hkv], R)  # (B, Hq + Hkv, D): q and k heads rotated
            k_cache[:, :, i].copy_(qk[:, Hq:])
            v_cache[:, :, i].copy_(qkv[:, Hq + Hkv:])
            q = qk[:, :Hq, None]  # (B, Hq, 1, D)
            k, v = k_cache[:, :, lo:S], v_cache[:, :, lo:S]  # (B, Hkv, S - lo, D) views
            if backend == "sdpa":
                mask = None if additive is None else additive[..., lo:S]
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
            else:
                real = None if key_padding_mask is None else key_padding_mask[:, lo:S]
                y = attention(q, k, v, causal=True, key_padding_mask=real, backend=backend)
            x = torch.addmm(x, y.reshape(B, Hq * D), o_t)  # x + o(y): (B, d)
            gate, up = torch.mm(rms_norm(x, mlp_norm, mean_eps), gate_up_t).chunk(2, dim=-1)
            x = torch.addmm(x, F.silu(gate, inplace=True).mul_(up), down_t)  # x + down(silu(gate) * up)
        cache.advance(1)
        return torch.mm(rms_norm(x, norm_w, mean_eps), head_t)

    return step


DECODE_STEPS: dict[str, Callable[..., DecodeStep]] = {"forward": forward_step, "static": static_step}
