"""JAX attention (reference and the `lax.scan` FlashAttention forward) against llmlab's NumPy float64
oracle: MHA, GQA, MQA, prefill, one-token decode and a chunk against a longer cache, causal,
windowed and bidirectional, key padding, and key blocks of 1, 3, 4, 7 and more than S keys (most
not dividing S, so the last block is padded; the quick run takes one block size per case, the
slow one all five). float64 (jax_enable_x64) agrees to 1e-12; float32 inputs to 2e-6 of the
float64 oracle.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from llmlab.attention import reference as ref  # noqa: E402
from llmlab.attention.jax_attention import flash_attention, reference_attention  # noqa: E402
from llmlab.errors import UserError  # noqa: E402

CASES = {  # (B, Hq, Hkv, T, S, D, causal, window): k_block for the quick run
    "mha_prefill": ((2, 4, 4, 13, 13, 8, True, None), 3),
    "gqa_prefill": ((2, 4, 2, 16, 16, 8, True, None), 64),
    "mqa_decode": ((1, 4, 1, 1, 21, 8, True, None), 4),
    "gqa_chunk_vs_cache": ((1, 4, 2, 5, 19, 8, True, None), 4),
    "window": ((2, 2, 2, 17, 17, 8, True, 4), 1),
    "gqa_window_chunk": ((1, 4, 2, 6, 23, 8, True, 5), 3),
    "bidirectional": ((1, 2, 1, 11, 11, 8, False, None), 7),
    "bidirectional_window": ((1, 2, 1, 11, 11, 8, False, 3), 4),
}
K_BLOCKS = (1, 3, 4, 7, 64)  # the slow sweep: every case with every block size


@pytest.fixture(scope="module", autouse=True)
def _jax_flags() -> Iterator[None]:
    """Global flags, on for this module and restored after: float64 arrays need jax_enable_x64;
    jax_disable_most_optimizations halves XLA's compile time, which is nearly all of these tests'
    time (every shape and block size compiles anew), for tiny arrays that run in microseconds."""
    flags = {"jax_enable_x64": True, "jax_disable_most_optimizations": True}
    before = {name: jax.config.values[name] for name in flags}
    for name, value in flags.items():
        jax.config.update(name, value)
    yield
    for name, value in before.items():
        jax.config.update(name, value)


def draw(B: int, Hq: int, Hkv: int, T: int, S: int, D: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(B, Hq, T, D)), rng.normal(size=(B, Hkv, S, D)), rng.normal(size=(B, Hkv, S, D))


def oracle(q: np.ndarray, k: np.ndarray, v: np.ndarray, *, causal: bool, window: int | None,
           key_valid: np.ndarray | None = None) -> np.ndarray:
    mask = ref.attention_mask(q.shape[2], k.shape[2], causal=causal, window=window, key_valid=key_valid)
    return ref.grouped_attention(q, k, v, mask)[0]


def check_case(case: str, k_blocks: tuple[int, ...]) -> None:
    (B, Hq, Hkv, T, S, D, causal, window), _ = CASES[case]
    q, k, v = draw(B, Hq, Hkv, T, S, D)
    expected = oracle(q, k, v, causal=causal, window=window)
    args = (jnp.asarray(q), jnp.asarray(k), jnp.asarray(v))
    got = reference_attention(*args, causal=causal, window=window)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-12, rtol=0)
    for k_block in k_blocks:
        got = flash_attention(*args, causal=causal, window=window, k_block=k_block)
        np.testing.assert_allclose(np.asarray(got), expected, atol=1e-12, rtol=0, err_msg=f"k_block={k_block}")


@pytest.mark.parametrize("case", CASES)
def test_float64_matches_the_numpy_oracle(case: str):
    """Each case with one block size (XLA compiles every shape and block size anew: ~1-3 s each)."""
    check_case(case, (CASES[case][1],))


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_float64_matches_the_numpy_oracle_for_every_block_size(case: str):
    check_case(case, K_BLOCKS)


def test_key_padding_and_queries_that_see_nothing():
    """Row 1's first 6 of 14 keys are padding (left padding): its first 6 queries see no key and
    output zeros in the oracle; row 0 is unpadded."""
    B, Hq, Hkv, T, S, D = 2, 4, 2, 14, 14, 8
    q, k, v = draw(B, Hq, Hkv, T, S, D, seed=1)
    valid = np.ones((B, S), dtype=bool)
    valid[1, :6] = False
    expected = oracle(q, k, v, causal=True, window=None, key_valid=valid)
    assert np.all(expected[1, :, :6] == 0)
    args = (jnp.asarray(q), jnp.asarray(k), jnp.asarray(v))
    got = reference_attention(*args, key_padding_mask=jnp.asarray(valid))
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-12, rtol=0)
    got = flash_attention(*args, key_padding_mask=jnp.asarray(valid), k_block=4)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-12, rtol=0)


def test_float32_inputs_stay_float32_and_close_to_float64():
    q, k, v = draw(2, 4, 2, 16, 16, 16, seed=2)
    expected = oracle(q, k, v, causal=True, window=6)
    args = tuple(jnp.asarray(a, dtype=jnp.float32) for a in (q, k, v))
    for got in (reference_attention(*args, window=6), flash_attention(*args, window=6, k_block=5)):
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(got, dtype=np.float64), expected, atol=2e-6, rtol=0)


def test_explicit_scale():
    q, k, v = draw(1, 2, 2, 6, 6, 8, seed=3)
    expected = ref.grouped_attention(q, k, v, ref.attention_mask(6, 6), scale=0.1)[0]
    got = flash_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), scale=0.1, k_block=4)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-12, rtol=0)


def test_the_forward_is_one_scan_over_the_key_blocks():
    """19 keys in blocks of 3: one scan of 7 steps (the last block holds 1 key and 2 of padding)."""
    q, k, v = (jnp.asarray(a) for a in draw(1, 4, 2, 5, 19, 8))
    jaxpr = str(jax.make_jaxpr(lambda q, k, v: flash_attention(q, k, v, k_block=3))(q, k, v))
    assert jaxpr.count("scan[") == 1
    assert "length=7" in jaxpr


@pytest.mark.parametrize(("shapes", "kwargs", "message"), [
    (((1, 3, 4, 8), (1, 2, 4, 8)), {}, "Hq a multiple of Hkv"),
    (((1, 2, 5, 8), (1, 2, 4, 8)), {}, "S >= T"),
    (((1, 2, 4, 8), (1, 2, 4, 8)), {"window": 0}, "window must be at least 1"),
    (((1, 2, 4, 8), (1, 2, 4, 8)), {"k_block": 0}, "k_block must be positive"),
    (((2, 4, 8), (2, 4, 8)), {}, r"q must be \(B, Hq, T, D\)"),
])
def test_bad_shapes_are_one_line_errors(shapes: tuple, kwargs: dict, message: str):
    q, k = jnp.zeros(shapes[0]), jnp.zeros(shapes[1])
    with pytest.raises(UserError, match=message):
        flash_attention(q, k, k, **kwargs)


def test_llmlab_attention_imports_without_jax():
    """With jax made unimportable, the attention package and this module still import, and calling
    the JAX functions is a one-line UserError."""
    code = textwrap.dedent("""
        import sys
        sys.modules["jax"] = None  # import jax now raises ImportError
        import numpy as np
        import llmlab.attention, llmlab.attention.reference
        from llmlab.attention import jax_attention
        from llmlab.errors import UserError
        try:
            jax_attention.flash_attention(np.zeros((1, 1, 2, 4)), np.zeros((1, 1, 2, 4)), np.zeros((1, 1, 2, 4)))
        except UserError as e:
            print(e)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "JAX attention needs jax: pip install 'llmlab[jax]'"
