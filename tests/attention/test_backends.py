"""The three attention backends (naive, sdpa, flash) against the float64 NumPy oracle.

The matrix, every cell one test:

    backend  naive | sdpa | flash
    heads    MHA (Hq, Hkv) = (4, 4) | GQA (4, 2) | MQA (4, 1)
    mask     causal | full | sliding window W = 5 (causal) | W = 5 both ways | local_strided (causal)
             | local_global (bidirectional) | left padding (causal) | right padding (causal)
             | right padding (bidirectional)
    length   37 (odd) | 64 (even)
    mode     prefill (T = S = length) | decode (T = 1) | chunk (T = 5 against S = length)

Flash runs with q_block = 16 and k_block = 8: neither divides 37, and block-sparse layouts use
blocks of 6, so tiles are skipped, shown whole, masked in part and cut short at the end.
Inputs are unit scale (torch.randn), so absolute errors are errors relative to the data.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llmlab.attention import attention, local_global, local_strided
from llmlab.attention import reference as ref

BACKENDS = ("naive", "sdpa", "flash")
HEADS = {"mha": (4, 4), "gqa": (4, 2), "mqa": (4, 1)}
MASKS = ("causal", "full", "window", "window_bidir", "strided", "local_global", "pad_left", "pad_right", "pad_right_bidir")
LENGTHS = (37, 64)
MODES = ("prefill", "decode", "chunk")
B, D = 2, 16
TILES = {"q_block": 16, "k_block": 8}  # small and odd-ish: partial tiles everywhere
BLOCK = 6  # block-sparse block size: divides neither the lengths nor the flash tiles
FP32_ATOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one thread (tests/conftest.py)


def queries(mode: str, length: int) -> int:
    return {"prefill": length, "decode": 1, "chunk": 5}[mode]


def mask_kwargs(name: str, S: int) -> dict:
    """attention() keyword arguments of a named mask for S keys (batch of B = 2 rows)."""
    n_blocks = math.ceil(S / BLOCK)
    if name == "causal":
        return {"causal": True}
    if name == "full":
        return {"causal": False}
    if name == "window":
        return {"causal": True, "window": 5}
    if name == "window_bidir":  # |p - j| < 5: keys ahead of the query too (an encoder's local attention)
        return {"causal": False, "window": 5}
    if name == "strided":
        return {"causal": True, "block_mask": local_strided(n_blocks, BLOCK, local=2, stride=3)}
    if name == "local_global":
        return {"causal": False, "block_mask": local_global(n_blocks, BLOCK, local=1, n_global=1)}
    valid = torch.ones(B, S, dtype=torch.bool)
    if name == "pad_left":  # row 0: 11 pads, row 1: 3 pads, at the start (HF left padding for generation)
        valid[0, :11] = False
        valid[1, :3] = False
        return {"causal": True, "key_padding_mask": valid}
    if name in ("pad_right", "pad_right_bidir"):  # row 0: 6 pads at the end, row 1: none
        valid[0, -6:] = False
        return {"causal": name == "pad_right", "key_padding_mask": valid}
    raise ValueError(name)


def reference_mask(T: int, S: int, kw: dict) -> np.ndarray:
    """The same mask built by the NumPy oracle's definitions: (B or 1, T, S)."""
    block = kw.get("block_mask")
    valid = kw.get("key_padding_mask")
    return ref.attention_mask(T, S, causal=kw.get("causal", True), window=kw.get("window"),
                              layout=None if block is None else block.layout.numpy(),
                              block_size=None if block is None else block.block_size,
                              key_valid=None if valid is None else valid.numpy())


@cache
def inputs(heads: str, length: int, mode: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded unit-scale fp32 q (B, Hq, T, D), k, v (B, Hkv, S, D); cached, never modified by a test."""
    Hq, Hkv = HEADS[heads]
    T, S = queries(mode, length), length
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Hq, T, D, generator=g)
    k = torch.randn(B, Hkv, S, D, generator=g)
    v = torch.randn(B, Hkv, S, D, generator=g)
    return q, k, v


def oracle(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kw: dict,
           scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 NumPy output (B, Hq, T, D) and weights (B, Hq, T, S) for any input dtype."""
    mask = reference_mask(q.shape[2], k.shape[2], kw)
    out, weights = ref.grouped_attention(*(t.detach().double().numpy() for t in (q, k, v)), mask, scale)
    return torch.from_numpy(out), torch.from_numpy(weights)


def run(backend: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kw: dict, **extra) -> torch.Tensor:
    tiles = TILES if backend == "flash" else {}
    return attention(q, k, v, backend=backend, **kw, **{**tiles, **extra})  # extra may override the tiles


# ---------------------------------------------------------------------------------------------- forward


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("heads", HEADS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_matches_float64_reference(backend: str, heads: str, mask: str, length: int, mode: str) -> None:
    """fp32 output within max abs error 1e-5 of the float64 NumPy oracle, no NaN anywhere.

    Why 1e-5: a row of the output is a convex combination of unit-scale values, and fp32
    rounds at 2^-24 ~ 6e-8 relative; the scores (|s| < ~10), the exp, and a sum over <= 64
    keys each add a few ulps, so errors are ~1e-6 at worst (measured max over the matrix: 6.9e-7).
    """
    q, k, v = inputs(heads, length, mode)
    kw = mask_kwargs(mask, length)
    out = run(backend, q, k, v, kw)
    expected, _ = oracle(q, k, v, kw)
    assert out.dtype == torch.float32
    assert out.shape == q.shape
    assert not out.isnan().any()
    torch.testing.assert_close(out.double(), expected, atol=FP32_ATOL, rtol=0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_matches_reference_to_rounding(backend: str, mask: str, mode: str) -> None:
    """In float64 every backend is the same formula up to rounding: 1e-12 leaves no room for a
    small systematic error (a wrong tile edge, a stale running max) that 1e-5 in fp32 could hide."""
    q, k, v = (t.double() for t in inputs("gqa", 37, mode))
    kw = mask_kwargs(mask, 37)
    expected, _ = oracle(q, k, v, kw)
    torch.testing.assert_close(run(backend, q, k, v, kw), expected, atol=1e-12, rtol=0)


def empty_rows_case() -> tuple[dict, list[list[int]]]:
    """Causal, window 3, T = S = 24, and padding that hides every key some queries may see:

        row 0: every key is padding           -> all 24 queries see nothing
        row 1: keys 0..9 and 14..18 padding   -> queries 0..9 (causal: keys 0..p, all pads) and
               16, 17, 18 (window 3: keys p-2..p, all in 14..18) see nothing; query 14 still sees
               12, 13 and query 15 sees 13, query 19 sees itself.
    """
    valid = torch.ones(2, 24, dtype=torch.bool)
    valid[0] = False
    valid[1, :10] = False
    valid[1, 14:19] = False
    return {"causal": True, "window": 3, "key_padding_mask": valid}, [list(range(24)), [*range(10), 16, 17, 18]]


@pytest.mark.parametrize("heads", HEADS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_fully_masked_rows_are_exact_zeros(backend: str, heads: str) -> None:
    """A query with no visible key outputs exactly 0 (never NaN), in every backend; the others
    still match the oracle. Gradients stay finite, are exactly 0 for those queries, and exactly 0
    for padded keys (nobody reads them)."""
    kw, empty = empty_rows_case()
    Hq, Hkv = HEADS[heads]
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, Hq, 24, D, generator=g, requires_grad=True)
    k = torch.randn(2, Hkv, 24, D, generator=g, requires_grad=True)
    v = torch.randn(2, Hkv, 24, D, generator=g, requires_grad=True)
    mask = reference_mask(24, 24, kw)
    assert [np.flatnonzero(~mask[b].any(-1)).tolist() for b in range(2)] == empty  # the docstring's count

    out = run(backend, q, k, v, kw)
    assert torch.isfinite(out).all()
    expected, _ = oracle(q, k, v, kw)
    torch.testing.assert_close(out.detach().double(), expected, atol=FP32_ATOL, rtol=0)
    for b, rows in enumerate(empty):
        torch.testing.assert_close(out[b, :, rows], torch.zeros(Hq, len(rows), D), atol=0, rtol=0)

    dq, dk, dv = torch.autograd.grad((out * torch.randn(out.shape, generator=g)).sum(), (q, k, v))
    for grad in (dq, dk, dv):
        assert torch.isfinite(grad).all()
    for b, rows in enumerate(empty):
        torch.testing.assert_close(dq[b, :, rows], torch.zeros(Hq, len(rows), D), atol=0, rtol=0)
    pads = ~kw["key_padding_mask"]  # (B, S)
    for grad in (dk, dv):  # (B, Hkv, S, D) -> (B, S, Hkv, D)[pads]: (n_pads, Hkv, D)
        torch.testing.assert_close(grad.transpose(1, 2)[pads], torch.zeros(int(pads.sum()), Hkv, D), atol=0, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_with_every_key_padded_is_zero(backend: str) -> None:
    """One-token decode whose whole cache is padding (row 0) gives 0; row 1 is unaffected."""
    q, k, v = inputs("gqa", 37, "decode")
    valid = torch.ones(B, 37, dtype=torch.bool)
    valid[0] = False
    kw = {"causal": True, "key_padding_mask": valid}
    out = run(backend, q, k, v, kw)
    torch.testing.assert_close(out[0], torch.zeros_like(out[0]), atol=0, rtol=0)
    torch.testing.assert_close(out.double(), oracle(q, k, v, kw)[0], atol=FP32_ATOL, rtol=0)


# --------------------------------------------------------------------------------------------- backward


def grads(backend: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kw: dict,
          upstream: torch.Tensor, **extra) -> tuple[torch.Tensor, ...]:
    """d/d(q, k, v) of (out * upstream).sum(): a random upstream gradient, so every output counts."""
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out = run(backend, q, k, v, kw, **extra)
    return torch.autograd.grad((out * upstream).sum(), (q, k, v))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("heads", HEADS)
@pytest.mark.parametrize("backend", ["sdpa", "flash"])
def test_grads_match_naive(backend: str, heads: str, mask: str, length: int, mode: str) -> None:
    """Gradients w.r.t. q, k, v of flash and sdpa equal naive's (autograd through the formula), fp32,
    over the whole forward matrix, within 1e-5 of the gradient's magnitude (measured <= 8.8e-7)."""
    q, k, v = inputs(heads, length, mode)
    kw = mask_kwargs(mask, length)
    upstream = torch.randn(q.shape, generator=torch.Generator().manual_seed(7))
    expected = grads("naive", q, k, v, kw, upstream)
    actual = grads(backend, q, k, v, kw, upstream)
    for name, got, want in zip("qkv", actual, expected, strict=True):
        assert torch.isfinite(got).all(), name
        # dk, dv sum over up to 4 heads x 64 queries, so they can be ~10x larger than dq
        atol = 1e-5 * max(1.0, want.abs().max().item())
        torch.testing.assert_close(got, want, atol=atol, rtol=0, msg=lambda m, n=name: f"d{n}: {m}")


def test_flash_grads_match_float64_oracle() -> None:
    """Flash's hand-written backward against autograd of the naive backend in float64: both are
    exact formulas, so they agree to rounding (1e-10), on a GQA, left-padded, windowed chunk."""
    q, k, v = (t.double() for t in inputs("gqa", 37, "chunk"))
    kw = {**mask_kwargs("pad_left", 37), "window": 9}
    upstream = torch.randn(q.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for got, want in zip(grads("flash", q, k, v, kw, upstream), grads("naive", q, k, v, kw, upstream), strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


GRADCHECK_MASKS = {
    "causal": (9, {"causal": True}),
    "full": (9, {"causal": False}),
    "window": (9, {"causal": True, "window": 3}),
    "block_sparse": (9, {"causal": True, "block_mask": local_strided(3, 4, local=1, stride=2)}),
    "padding": (9, {"causal": True, "key_padding_mask": torch.tensor([[False, False] + [True] * 7])}),
    "decode_chunk": (3, {"causal": True}),
}


@pytest.mark.parametrize("case", GRADCHECK_MASKS)
def test_flash_gradcheck_float64(case: str) -> None:
    """torch.autograd.gradcheck: flash's backward equals finite differences of its forward, float64,
    B = 1, Hq = 2, Hkv = 1, S = 9, D = 4, tiles 4 x 3 (padding: the first two queries see nothing)."""
    T, kw = GRADCHECK_MASKS[case]
    g = torch.Generator().manual_seed(5)
    q = torch.randn(1, 2, T, 4, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 1, 9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 1, 9, 4, generator=g, dtype=torch.float64, requires_grad=True)

    def f(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return attention(q, k, v, backend="flash", q_block=4, k_block=3, **kw)

    assert torch.autograd.gradcheck(f, (q, k, v), eps=1e-6, atol=1e-7, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ bf16

BF16_ATOL = 2e-2


def check_bfloat16(backend: str, heads: str, mask: str, length: int, mode: str) -> None:
    q, k, v = (t.to(torch.bfloat16) for t in inputs(heads, length, mode))
    kw = mask_kwargs(mask, length)
    out = run(backend, q, k, v, kw)
    assert out.dtype == torch.bfloat16
    expected, _ = oracle(q, k, v, kw)  # float64 from the same bf16-rounded inputs: only the kernel's error
    err = (out.double() - expected).abs().max().item()
    assert err < BF16_ATOL, f"bf16 max abs error {err:.3g} >= {BF16_ATOL}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_bfloat16_close_to_float64_reference(backend: str, mask: str, mode: str) -> None:
    """bf16 outputs within 2e-2 of the float64 oracle run on the same bf16-rounded inputs (GQA, 64;
    `-m slow` runs every head layout and length).

    bf16 keeps 8 significant bits: each rounding is off by up to 2^-8 ~ 3.9e-3 relative. The output
    is rounded once (|out| < ~3: up to ~8e-3 absolute, the error of rounding the exact answer itself),
    flash also rounds its probabilities to bf16 before p @ v (<= 3.9e-3 * max|v|, errors of mixed sign),
    and scores q k^T come out of a bf16 matmul (|s| ~ 3: ~1e-2 error in a logit moves p by ~1% of
    itself); naive also rounds its softmax weights to bf16. Three roundings of a unit-scale quantity sum
    to ~1.5e-2. Measured max over the full matrix (`-m slow`): sdpa 8.1e-3 (it computes in fp32 and
    rounds once), flash 1.5e-2, naive 1.7e-2. The assertion is on the measured max error so a failure
    prints it.
    """
    check_bfloat16(backend, "gqa", mask, 64, mode)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("heads", HEADS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_bfloat16_full_matrix(backend: str, heads: str, mask: str, length: int, mode: str) -> None:
    check_bfloat16(backend, heads, mask, length, mode)


@pytest.mark.slow
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize(("backend", "tiles"), [
    ("sdpa", {}),
    ("flash", {"q_block": 256, "k_block": 256}),
    ("flash", {"q_block": 64, "k_block": 32}),
], ids=["sdpa", "flash-256x256", "flash-64x32"])
def test_long_sequence(backend: str, tiles: dict, mask: str) -> None:
    """S = 300, D = 64, a 40-token chunk and prefill, flash with the default tile size (256: one full,
    one partial) and with 64 x 32: output vs the oracle and gradients vs naive, as in the matrix."""
    g = torch.Generator().manual_seed(11)
    kw = mask_kwargs(mask, 300)
    for T in (300, 40):
        q = torch.randn(B, 4, T, 64, generator=g)
        k, v = torch.randn(B, 2, 300, 64, generator=g), torch.randn(B, 2, 300, 64, generator=g)
        out = run(backend, q, k, v, kw, **tiles)
        torch.testing.assert_close(out.double(), oracle(q, k, v, kw)[0], atol=FP32_ATOL, rtol=0)
        upstream = torch.randn(q.shape, generator=g)
        for got, want in zip(grads(backend, q, k, v, kw, upstream, **tiles), grads("naive", q, k, v, kw, upstream),
                             strict=True):
            torch.testing.assert_close(got, want, atol=1e-5 * max(1.0, want.abs().max().item()), rtol=0)


# -------------------------------------------------------------------------------------- other options


@pytest.mark.parametrize("tiles", [(64, 64), (1000, 1000), (37, 1000), (1, 1), (5, 37)])
@pytest.mark.parametrize("mask", ["causal", "window", "strided", "pad_left"])
def test_flash_any_tile_size_equals_naive(tiles: tuple[int, int], mask: str) -> None:
    """Tiles larger than T and S (one tile), exactly T, and 1 x 1 (every score its own tile) all give
    naive's output: the tiling changes the summation order, nothing else."""
    q, k, v = inputs("gqa", 37, "prefill")
    kw = mask_kwargs(mask, 37)
    out = attention(q, k, v, backend="flash", q_block=tiles[0], k_block=tiles[1], **kw)
    torch.testing.assert_close(out, attention(q, k, v, backend="naive", **kw), atol=1e-6, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_scale_override(backend: str) -> None:
    """scale=0.3 replaces 1/sqrt(D) (= 0.25 here) and matches the oracle with the same scale; the
    default scale gives a different answer, so the override is really used."""
    q, k, v = inputs("gqa", 37, "chunk")
    kw = mask_kwargs("window", 37)
    out = run(backend, q, k, v, kw, scale=0.3)
    torch.testing.assert_close(out.double(), oracle(q, k, v, kw, scale=0.3)[0], atol=FP32_ATOL, rtol=0)
    assert (out - run(backend, q, k, v, kw)).abs().max() > 1e-2




@pytest.mark.parametrize("window", [None, 5])
@pytest.mark.parametrize("backend", ["naive", "sdpa", "flash"])
def test_scale_zero_is_running_mean(backend: str, window: int | None) -> None:
    """scale = 0 makes every score 0, so a causal query at position p weighs its visible keys equally:
    out[p] = (v[0] + ... + v[p]) / (p + 1), a running mean (cumsum / count); with window W it is the
    mean of v[max(0, p - W + 1)..p] (difference of cumsums / min(p + 1, W))."""
    q, k, v = inputs("mqa", 37, "prefill")
    out = run(backend, q, k, v, {"causal": True, "window": window}, scale=0.0)
    csum = torch.cat([torch.zeros(B, 1, 1, D), v.cumsum(dim=2)], dim=2)  # (B, 1, S + 1, D): csum[j] = sum v[:j]
    p = torch.arange(37)
    lo = torch.zeros_like(p) if window is None else torch.clamp(p - window + 1, min=0)  # first visible key
    mean = (csum[:, :, p + 1] - csum[:, :, lo]) / (p + 1 - lo)[:, None]  # (B, 1, S, D)
    torch.testing.assert_close(out, mean.expand_as(out), atol=1e-5, rtol=0)


@pytest.mark.parametrize("mask", ["causal", "full", "window", "strided", "pad_left"])
def test_naive_weights(mask: str) -> None:
    """return_weights: each row sums to 1 over its visible keys, hidden keys get exactly 0, rows
    with no visible key are all 0, and the weights equal the float64 oracle's."""
    q, k, v = inputs("gqa", 37, "chunk")
    kw = mask_kwargs(mask, 37)
    out, weights = attention(q, k, v, backend="naive", return_weights=True, **kw)
    assert weights.shape == (B, 4, 5, 37)
    visible = torch.from_numpy(reference_mask(5, 37, kw))[:, None].expand_as(weights)  # (B, Hq, T, S)
    torch.testing.assert_close(weights[~visible], torch.zeros(int((~visible).sum())), atol=0, rtol=0)
    row_sums = weights.sum(dim=-1)
    torch.testing.assert_close(row_sums, visible.any(dim=-1).float(), atol=1e-6, rtol=0)
    expected_out, expected_weights = oracle(q, k, v, kw)
    torch.testing.assert_close(weights.double(), expected_weights, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.double(), expected_out, atol=FP32_ATOL, rtol=0)
    torch.testing.assert_close(out, attention(q, k, v, backend="naive", **kw), atol=0, rtol=0)


def test_naive_weights_of_empty_rows_are_zero() -> None:
    kw, empty = empty_rows_case()
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 2, 24, 4, generator=g) for _ in range(3))
    _, weights = attention(q, k, v, backend="naive", return_weights=True, **kw)
    for b, rows in enumerate(empty):
        torch.testing.assert_close(weights[b, :, rows], torch.zeros(2, len(rows), 24), atol=0, rtol=0)
    torch.testing.assert_close(weights.double(), oracle(q, k, v, kw)[1], atol=1e-6, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_padding_mask_equals_bool(backend: str) -> None:
    """HF hands attention_mask as int64 0/1; it means the same as the bool mask."""
    q, k, v = inputs("gqa", 37, "prefill")
    kw = mask_kwargs("pad_left", 37)
    as_int = {**kw, "key_padding_mask": kw["key_padding_mask"].long()}
    torch.testing.assert_close(run(backend, q, k, v, as_int), run(backend, q, k, v, kw), atol=0, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(backend: str) -> None:
    """Models make q by viewing (B, T, H, D) as (B, H, T, D) without a copy: same answer, and flash's
    head reshape (B, Hq) -> (B, Hkv, G) still pairs query head h with kv head h // G."""
    q, k, v = inputs("gqa", 37, "chunk")
    q_t, k_t, v_t = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))  # (B, H, T, D) strides
    assert not q_t.is_contiguous()
    kw = mask_kwargs("strided", 37)
    torch.testing.assert_close(run(backend, q_t, k_t, v_t, kw), run(backend, q, k, v, kw), atol=1e-6, rtol=0)


def test_sdpa_backend_is_torch_sdpa_on_plain_causal_prefill() -> None:
    """The fast path (is_causal, enable_gqa) is PyTorch's kernel on repeated kv heads."""
    q, k, v = inputs("gqa", 64, "prefill")
    expected = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1),
                                              is_causal=True)
    torch.testing.assert_close(attention(q, k, v, backend="sdpa"), expected, atol=1e-6, rtol=0)
