"""The Llama-style model: config checks, parameter and FLOP counts, its parts against NumPy float64,
every attention backend against the others, a sliding window against an explicit dense-mask forward,
and the KV cache against a full forward.

Models are tiny (d_model 32, 2 layers, vocab 64) and seeded; weights are re-drawn with std 0.5 (norm
weights included) so that every part of the model moves the logits by a visible amount.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llmlab.errors import ConfigError, UserError
from llmlab.model.config import ModelConfig
from llmlab.model.llama import RMSNorm, Transformer, apply_rotary, rotary_tables

from .conftest import TINY, tiny_model


def tokens(B: int, T: int, seed: int = 1, vocab: int = 64) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------- config


@pytest.mark.parametrize(("fields", "named"), [
    ({"d_model": 30, "n_heads": 4}, "n_heads"),
    ({"d_model": 36, "n_heads": 4}, "head dimension"),  # head_dim 9: odd, no RoPE pairs
    ({"n_heads": 4, "n_kv_heads": 3}, "n_kv_heads"),
    ({"n_heads": 4, "n_kv_heads": 0}, "n_kv_heads"),
    ({"vocab_size": -1}, "vocab_size"),
    ({"n_layers": 0}, "n_layers"),
    ({"max_seq_len": 0}, "max_seq_len"),
    ({"d_ff": 0}, "d_ff"),
    ({"rope_theta": 0.0}, "rope_theta"),
    ({"norm_eps": 0.0}, "norm_eps"),
    ({"dropout": 1.0}, "dropout"),
    ({"init_std": -1.0}, "init_std"),
    ({"sliding_window": 0}, "sliding_window"),
])
def test_config_errors_name_the_field(fields: dict, named: str) -> None:
    with pytest.raises(ConfigError, match=named) as info:
        replace(TINY, **fields)
    assert "\n" not in str(info.value)


def test_default_d_ff_is_the_llama_rule() -> None:
    """8/3 * 256 = 682.7 -> 683 rounded up to a multiple of 64 = 704; 8/3 * 96 = 256 exactly."""
    assert ModelConfig(d_model=256).ff_dim == 704
    assert ModelConfig(d_model=96, n_heads=4).ff_dim == 256


@pytest.mark.parametrize("fields", [
    {}, {"n_kv_heads": 2}, {"n_kv_heads": 1}, {"tie_embeddings": False}, {"qkv_bias": True},
    {"n_kv_heads": 2, "qkv_bias": True, "tie_embeddings": False}, {"d_ff": None},
], ids=["mha", "gqa", "mqa", "untied", "qkv_bias", "gqa_bias_untied", "default_ff"])
def test_num_params_counts_the_built_model(fields: dict) -> None:
    cfg = replace(TINY, **fields)
    model = Transformer(cfg)
    assert cfg.num_params() == sum(p.numel() for p in model.parameters())  # parameters() dedups a tied head
    assert cfg.num_params(embeddings=False) == sum(p.numel() for n, p in model.named_parameters()
                                                   if n not in ("embed.weight", "head.weight"))


def test_flops_per_token_by_hand() -> None:
    """vocab 64, d 32, 2 layers, 4 heads, 2 kv heads (head_dim 8, kv width 16), d_ff 48, T = 10:
    per layer  qkv 32 * (32 + 2 * 16) = 2048, o 32 * 32 = 1024, MLP 3 * 32 * 48 = 4608 -> 7680
    matmul     2 * 7680 + head 32 * 64 = 2048 -> 17408 weights
    FLOPs      6 * 17408 = 104448, attention 12 * 2 * 32 * 10 = 7680 -> 112128."""
    cfg = replace(TINY, n_kv_heads=2)
    assert cfg.flops_per_token(10) == 112128.0


# ---------------------------------------------------------------------- parts against NumPy float64


def numpy_rope(x: np.ndarray, positions: np.ndarray, theta: float) -> np.ndarray:
    """Rotate-half RoPE in float64: dims i and i + D/2 rotate by position * theta^(-2i/D)."""
    D = x.shape[-1]
    inv_freq = theta ** (-np.arange(0, D, 2, dtype=np.float64) / D)  # (D/2,)
    ang = positions[:, None].astype(np.float64) * inv_freq[None]  # (T, D/2)
    cos, sin = np.cos(ang), np.sin(ang)
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return np.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


def test_apply_rotary_matches_numpy() -> None:
    cfg = replace(TINY, d_model=64, n_heads=4, max_seq_len=256, rope_theta=500.0)  # head_dim 16
    x = torch.randn(2, 4, 50, 16, generator=torch.Generator().manual_seed(0))
    positions = torch.tensor([3 * t + 1 for t in range(50)])  # not 0..T-1: the table is indexed
    cos, sin = rotary_tables(cfg)
    got = apply_rotary(x, cos[positions][None, None], sin[positions][None, None])
    want = numpy_rope(x.double().numpy(), positions.numpy(), 500.0)
    torch.testing.assert_close(got.double(), torch.from_numpy(want), rtol=0, atol=1e-4)


def test_rms_norm_matches_numpy() -> None:
    g = torch.Generator().manual_seed(0)
    norm = RMSNorm(24, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(24, generator=g))
    x = 3 * torch.randn(5, 7, 24, generator=g)
    xn, w = x.double().numpy(), norm.weight.detach().double().numpy()
    want = xn / np.sqrt((xn ** 2).mean(-1, keepdims=True) + 1e-5) * w
    torch.testing.assert_close(norm(x).double(), torch.from_numpy(want), rtol=0, atol=1e-5)


# ---------------------------------------------------------------------- backends and windows


def logits_and_grads(model: Transformer, idx: torch.Tensor, backend: str) -> tuple[torch.Tensor, dict]:
    model.cfg = replace(model.cfg, attention=backend)
    for block in model.blocks:
        block.attn.cfg = model.cfg
    model.zero_grad()
    logits = model(idx).logits
    (logits * torch.linspace(-1, 1, logits.shape[-1])).sum().backward()  # a loss that weighs every logit
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def available_backends() -> list:
    out = ["sdpa", "flash"]
    try:
        import triton  # noqa: F401
        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    return [*out, pytest.param("triton", marks=pytest.mark.skipif(not cuda, reason="triton needs CUDA here"))]


@pytest.mark.parametrize("backend", available_backends())
@pytest.mark.parametrize("fields", [{}, {"n_kv_heads": 2}, {"n_kv_heads": 1, "sliding_window": 5}],
                         ids=["mha", "gqa", "mqa_window"])
def test_backends_agree_on_logits_and_gradients(backend: str, fields: dict) -> None:
    model = tiny_model(**fields)
    idx = tokens(2, 19)
    if backend == "triton":
        model, idx = model.cuda(), idx.cuda()
    want_logits, want_grads = logits_and_grads(model, idx, "naive")
    logits, grads = logits_and_grads(model, idx, backend)
    torch.testing.assert_close(logits, want_logits, rtol=0, atol=1e-4)
    for name, g in grads.items():
        torch.testing.assert_close(g, want_grads[name], rtol=1e-4, atol=1e-4, msg=name)


def reference_forward(model: Transformer, idx: torch.Tensor, window: int | None) -> torch.Tensor:
    """The model written out with an explicit dense (T, T) mask: key j is visible from query i when
    j <= i and i - j < window; GQA by repeating kv heads; no llmlab attention code involved."""
    cfg = model.cfg
    B, T = idx.shape
    H, Hkv, D = cfg.n_heads, cfg.kv_heads, cfg.head_dim
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    allowed = (j <= i) & ((i - j < window) if window else True)  # (T, T)
    cos, sin = rotary_tables(cfg)
    cos, sin = cos[:T], sin[:T]

    def norm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg.norm_eps) * w

    def rope(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[..., : D // 2], x[..., D // 2:]
        return x * cos + torch.cat((-x2, x1), -1) * sin

    x = model.embed.weight[idx]
    for blk in model.blocks:
        h = norm(x, blk.attn_norm.weight)
        qkv = F.linear(h, blk.attn.qkv.weight, blk.attn.qkv.bias)
        q, k, v = qkv.split((H * D, Hkv * D, Hkv * D), -1)
        q = rope(q.view(B, T, H, D).transpose(1, 2))  # (B, H, T, D)
        k = rope(k.view(B, T, Hkv, D).transpose(1, 2)).repeat_interleave(H // Hkv, 1)
        v = v.view(B, T, Hkv, D).transpose(1, 2).repeat_interleave(H // Hkv, 1)
        scores = (q @ k.transpose(-1, -2)) / D ** 0.5
        att = scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v  # (B, H, T, D)
        x = x + att.transpose(1, 2).reshape(B, T, H * D) @ blk.attn.o.weight.T
        h = norm(x, blk.mlp_norm.weight)
        gate, up = (h @ blk.mlp.gate_up.weight.T).chunk(2, -1)
        x = x + (F.silu(gate) * up) @ blk.mlp.down.weight.T
    return norm(x, model.norm.weight) @ model.head.weight.T


@pytest.mark.parametrize("backend", ["sdpa", "flash", "naive"])
@pytest.mark.parametrize("fields", [{"sliding_window": 4}, {"sliding_window": 4, "n_kv_heads": 2},
                                    {"n_kv_heads": 2, "qkv_bias": True}], ids=["window", "window_gqa", "dense_bias"])
def test_model_matches_dense_mask_reference(backend: str, fields: dict) -> None:
    model = tiny_model(attention=backend, **fields)
    idx = tokens(2, 17)
    with torch.no_grad():
        want = reference_forward(model, idx, model.cfg.sliding_window)
        torch.testing.assert_close(model(idx).logits, want, rtol=0, atol=1e-4)
        if model.cfg.sliding_window:  # and the window matters: without it the logits differ
            assert (reference_forward(model, idx, None) - want).abs().max() > 1e-2


def test_hidden_states_and_attentions_shapes() -> None:
    model = tiny_model(n_kv_heads=2)
    out = model(tokens(2, 9), return_attention=True, return_hidden=True)
    assert len(out.hidden_states) == 3 and all(h.shape == (2, 9, 32) for h in out.hidden_states)
    assert len(out.attentions) == 2 and all(a.shape == (2, 4, 9, 9) for a in out.attentions)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, 4, 9))
    assert (out.attentions[0].triu(1) == 0).all()  # causal


def test_too_long_input_is_a_user_error() -> None:
    model = tiny_model()
    with pytest.raises(UserError, match="max_seq_len"):
        model(tokens(1, 65))
    with pytest.raises(UserError, match="max_seq_len"):
        model(tokens(1, 2), positions=torch.tensor([[0, 64]]))


# ---------------------------------------------------------------------- KV cache


@pytest.mark.parametrize("fields", [{}, {"n_kv_heads": 2}, {"n_kv_heads": 1, "sliding_window": 5},
                                    {"sliding_window": 3, "qkv_bias": True}],
                         ids=["mha", "gqa", "mqa_window5", "window3_bias"])
@pytest.mark.parametrize("backend", ["sdpa", "naive", "flash"])
def test_prefill_then_decode_equals_full_forward(fields: dict, backend: str) -> None:
    """Prefill 7 positions, then 1-token decodes to 20, then a 3-token chunk: each call's logits equal the
    full forward's at those positions (the windows 3 and 5 are much shorter than the 23 positions)."""
    model = tiny_model(attention=backend, **fields)
    idx = tokens(2, 23)
    with torch.no_grad():
        full = model(idx).logits
        cache = model.new_cache(2, 23)
        got = [model(idx[:, :7], cache=cache).logits]
        for t in range(7, 20):
            got.append(model(idx[:, t:t + 1], cache=cache).logits)
        got.append(model(idx[:, 20:], cache=cache).logits)
    assert cache.length == 23
    torch.testing.assert_close(torch.cat(got, dim=1), full, rtol=0, atol=1e-5)


def test_cache_overflow_is_a_user_error() -> None:
    model = tiny_model()
    cache = model.new_cache(1, 8)
    with torch.no_grad():
        model(tokens(1, 6), cache=cache)
        with pytest.raises(UserError, match="KV cache holds 8"):
            model(tokens(1, 3), cache=cache)


def test_logits_to_keep_equals_the_last_rows() -> None:
    model = tiny_model(n_kv_heads=2)
    idx = tokens(2, 9)
    with torch.no_grad():
        full = model(idx).logits
        last = model(idx, logits_to_keep=1).logits
    assert last.shape == (2, 1, 64)
    torch.testing.assert_close(last, full[:, -1:], rtol=0, atol=1e-6)
