"""The decode steps (model/decode.py): the rotation matrix by hand and against `apply_rotary`, the static
step's logits against the model's forward step by step, and Engine(decode="static") against the naive
generator for every CPU attention backend, GQA, a sliding window and left padding."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from llmlab.errors import UserError
from llmlab.model.decode import DECODE_STEPS, rms_norm, rotary_matrices, rotate_half_matrix
from llmlab.model.generate import Engine, SamplingConfig, generate_naive
from llmlab.model.llama import apply_rotary

from .conftest import tiny_model

PROMPTS = ([5, 17, 3, 40, 22, 9, 1], [8], [30, 2, 61, 7])  # lengths 7, 1, 4: two rows are left-padded
GREEDY = SamplingConfig(max_new_tokens=10, temperature=0.0)


def test_rotate_half_matrix_by_hand() -> None:
    """D = 4, x = [1, 2, 3, 4]: rotate_half(x) = cat(-x[2:], x[:2]) = [-3, -4, 1, 2]."""
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert torch.equal(x @ rotate_half_matrix(4), torch.tensor([-3.0, -4.0, 1.0, 2.0]))


def test_rotary_matrices_equal_apply_rotary() -> None:
    """x @ R(pos) against llama.apply_rotary on the model's own tables, three rows at positions 0, 5, 63."""
    model = tiny_model()
    pos = torch.tensor([0, 5, 63])
    x = torch.randn(3, 6, model.cfg.head_dim, generator=torch.Generator().manual_seed(0))  # (B, heads, D)
    R = rotary_matrices(model.cos[pos], model.sin[pos], rotate_half_matrix(model.cfg.head_dim))
    want = apply_rotary(x, model.cos[pos][:, None], model.sin[pos][:, None])
    torch.testing.assert_close(torch.bmm(x, R), want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("fields", [{}, {"n_kv_heads": 2}, {"n_kv_heads": 1, "sliding_window": 3},
                                    {"attention": "naive", "n_kv_heads": 2}, {"attention": "flash"}],
                         ids=["mha", "gqa", "mqa_window3", "naive_gqa", "flash"])
def test_static_step_logits_equal_the_forward_step(fields: dict) -> None:
    """Same prefill, then 6 steps fed the same tokens: logits agree to float rounding (1e-5) at each step,
    on a left-padded batch, and both caches end with the same keys and values."""
    model = tiny_model(**fields)
    P, B = 7, len(PROMPTS)
    ids = torch.zeros(B, P, dtype=torch.long)
    real = torch.zeros(B, P + 6, dtype=torch.bool)
    for row, p in enumerate(PROMPTS):
        ids[row, P - len(p):] = torch.tensor(p)
        real[row, P - len(p):] = True
    positions = (real[:, :P].long().cumsum(1) - 1).clamp(min=0)
    real[:, P:] = True
    caches, steps = {}, {}
    with torch.inference_mode():
        for name in ("forward", "static"):
            caches[name] = model.new_cache(B, P + 6)
            model(ids, positions=positions, cache=caches[name], key_padding_mask=real[:, :P])
            steps[name] = DECODE_STEPS[name](model, caches[name], key_padding_mask=real)
        tokens = torch.randint(0, 64, (6, B), generator=torch.Generator().manual_seed(1))
        pos = positions[:, -1]
        for token in tokens:
            pos = pos + 1
            torch.testing.assert_close(steps["static"](token, pos), steps["forward"](token, pos), rtol=0, atol=1e-5)
    assert caches["static"].length == caches["forward"].length == P + 6
    torch.testing.assert_close(caches["static"].k, caches["forward"].k, rtol=0, atol=1e-5)
    torch.testing.assert_close(caches["static"].v, caches["forward"].v, rtol=0, atol=1e-5)


@pytest.mark.parametrize("attention", ["sdpa", "naive", "flash"])
@pytest.mark.parametrize("fields", [{"n_kv_heads": 2}, {"n_kv_heads": 1, "sliding_window": 4}], ids=["gqa", "window"])
def test_static_engine_greedy_equals_naive_for_every_backend(attention: str, fields: dict) -> None:
    model = tiny_model(seed=3, attention=attention, **fields)
    sampling = replace(GREEDY, repetition_penalty=1.3)
    want = generate_naive(model, PROMPTS, sampling)
    assert Engine(model, decode="static").generate(PROMPTS, sampling) == want
    assert Engine(model, decode="forward").generate(PROMPTS, sampling) == want


def test_unknown_decode_step_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown decode step 'turbo'; choose one of forward, static"):
        Engine(tiny_model(), decode="turbo")


def test_a_model_that_is_not_plain_gets_the_forward_step() -> None:
    """The static step reads weights directly, so a swapped-in layer (as LoRA swaps nn.Linear for its
    own module) must not be skipped: a doubled MLP output changes the tokens, and the engine follows it."""

    class Doubled(torch.nn.Module):
        def __init__(self, inner: torch.nn.Linear) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * self.inner(x)

    model = tiny_model(seed=4)
    plain = Engine(model).generate(PROMPTS, GREEDY)
    for block in model.blocks:
        block.mlp.down = Doubled(block.mlp.down)
    want = generate_naive(model, PROMPTS, GREEDY)
    assert want != plain  # so the swap matters
    assert Engine(model).generate(PROMPTS, GREEDY) == want


def test_rms_norm_equals_the_model_norm_in_float32_and_bfloat16() -> None:
    model = tiny_model()
    norm = model.blocks[0].attn_norm
    d = model.cfg.d_model
    mean_eps = (torch.full((d, 1), 1.0 / d), torch.full((1, 1), model.cfg.norm_eps))
    x = torch.randn(3, d, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        torch.testing.assert_close(rms_norm(x, norm.weight, mean_eps), norm(x), rtol=1e-6, atol=1e-6)
        norm16 = norm.to(torch.bfloat16)
        got = rms_norm(x.bfloat16(), norm16.weight, mean_eps)
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got, norm16(x.bfloat16()), rtol=0, atol=0.02)
