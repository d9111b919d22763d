"""Masks: `MaskSpec.allowed` and `dense_mask` against the NumPy oracle's definitions, the per-tile
answers flash relies on (`tile_mask`), the block layouts written out by hand, and the one-line
UserErrors for shapes that cannot be attention.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmlab.attention import BlockLayout, attention, bigbird, local_global, local_strided
from llmlab.attention import reference as ref
from llmlab.attention.masks import MaskSpec, dense_mask
from llmlab.errors import UserError

SHAPES = [(1, 1), (1, 9), (4, 4), (3, 10), (10, 10), (13, 40), (40, 40)]  # (T, S), S >= T


def layout_for(name: str, S: int, block_size: int) -> BlockLayout | None:
    n_blocks = -(-S // block_size)  # ceil: the layout must cover all S positions
    if name == "none":
        return None
    if name == "strided":
        return local_strided(n_blocks, block_size, local=2, stride=3)
    if name == "local_global":
        return local_global(n_blocks, block_size, local=1, n_global=2)
    if name == "bigbird":
        return bigbird(n_blocks, block_size, local=1, n_global=1, n_random=2,
                       generator=torch.Generator().manual_seed(S))
    raise ValueError(name)


def oracle_mask(T: int, S: int, spec: MaskSpec, key_valid: torch.Tensor | None = None) -> torch.Tensor:
    """reference.attention_mask (NumPy, written from the definitions) as a (B or 1, T, S) tensor."""
    block = spec.block
    return torch.from_numpy(ref.attention_mask(
        T, S, causal=spec.causal, window=spec.window,
        layout=None if block is None else block.layout.numpy(),
        block_size=None if block is None else block.block_size,
        key_valid=None if key_valid is None else key_valid.numpy()))


# ---------------------------------------------------------------------------------- allowed, dense_mask


@pytest.mark.parametrize("layout", ["none", "strided", "local_global", "bigbird"])
@pytest.mark.parametrize("window", [None, 1, 2, 5, 100])
@pytest.mark.parametrize("causal", [True, False])
def test_allowed_matches_reference(causal: bool, window: int | None, layout: str) -> None:
    """MaskSpec.allowed over the query positions S-T..S-1 equals the oracle, for every (T, S) in
    SHAPES and block sizes 1, 3, 4 (1: the layout is per position; 3, 4 divide neither 10 nor 13)."""
    for (T, S), block_size in itertools.product(SHAPES, (1, 3, 4)):
        spec = MaskSpec(causal=causal, window=window, block=layout_for(layout, S, block_size))
        got = spec.allowed(torch.arange(S - T, S), torch.arange(S))
        assert torch.equal(got, oracle_mask(T, S, spec)[0]), (T, S, block_size)


def test_hand_written_masks() -> None:
    """T = 2 queries at positions 2, 3 over S = 4 keys:

        causal          [[1 1 1 0],      causal, window 2   [[0 1 1 0],
                         [1 1 1 1]]                          [0 0 1 1]]
        window 2 alone  [[0 1 1 1],      (|p - j| < 2: query 2 sees 1, 2, 3; query 3 sees 2, 3)
                         [0 0 1 1]]
    """
    q_pos, k_pos = torch.arange(2, 4), torch.arange(4)
    expected = {
        MaskSpec(causal=True): [[1, 1, 1, 0], [1, 1, 1, 1]],
        MaskSpec(causal=True, window=2): [[0, 1, 1, 0], [0, 0, 1, 1]],
        MaskSpec(causal=False, window=2): [[0, 1, 1, 1], [0, 0, 1, 1]],
        MaskSpec(causal=False): [[1, 1, 1, 1], [1, 1, 1, 1]],
    }
    for spec, rows in expected.items():
        assert spec.allowed(q_pos, k_pos).int().tolist() == rows, spec
        assert oracle_mask(2, 4, spec)[0].int().tolist() == rows, spec


@pytest.mark.parametrize("causal", [True, False])
def test_dense_mask_with_padding(causal: bool) -> None:
    """dense_mask (B, 1, T, S) = position mask & key_padding_mask[b, j], as the oracle's key_valid."""
    valid = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    spec = MaskSpec(causal=causal, window=3)
    got = dense_mask(3, 7, spec, valid)
    assert got is not None
    assert got.shape == (2, 1, 3, 7)
    assert torch.equal(got[:, 0], oracle_mask(3, 7, spec, valid))


def test_dense_mask_is_none_when_nothing_is_masked() -> None:
    assert dense_mask(5, 5, MaskSpec(causal=False)) is None
    assert dense_mask(5, 5, MaskSpec(causal=False), torch.ones(1, 5, dtype=torch.bool)) is not None
    assert MaskSpec(causal=False).is_trivial
    assert not MaskSpec(causal=False, window=3).is_trivial


# -------------------------------------------------------------------------------------------- tile_mask


@st.composite
def tile_cases(draw: st.DrawFn) -> tuple[MaskSpec, int, int, int, int, int, int]:
    S = draw(st.integers(1, 48))
    T = draw(st.integers(1, S))
    causal = draw(st.booleans())
    window = draw(st.one_of(st.none(), st.integers(1, 20)))
    block_size = draw(st.integers(1, 8))
    layout = draw(st.sampled_from(["none", "strided", "local_global", "bigbird"]))
    spec = MaskSpec(causal=causal, window=window, block=layout_for(layout, S, block_size))
    # tiles of 1..8 (where edge cases live: a tile just inside a window, one key past the diagonal)
    # or of any size up to the end
    q_lo = draw(st.integers(S - T, S - 1))
    q_hi = draw(st.one_of(st.integers(q_lo + 1, min(q_lo + 8, S)), st.integers(q_lo + 1, S)))
    k_lo = draw(st.integers(0, S - 1))
    k_hi = draw(st.one_of(st.integers(k_lo + 1, min(k_lo + 8, S)), st.integers(k_lo + 1, S)))
    return spec, T, S, q_lo, q_hi, k_lo, k_hi


@settings(max_examples=400, deadline=None)
@given(tile_cases())
def test_tile_mask_agrees_with_dense_mask(case: tuple[MaskSpec, int, int, int, int, int, int]) -> None:
    """For any tile [q_lo, q_hi) x [k_lo, k_hi) of positions, with D the oracle's dense mask
    restricted to the tile: False <=> D has no True (flash skips it), True <=> D is all True (no
    mask needed), otherwise the tensor equals D. Both directions: a skipped visible tile drops keys,
    a missed skip only costs time, but the contract says exact, so we hold it to exact."""
    spec, T, S, q_lo, q_hi, k_lo, k_hi = case
    dense = oracle_mask(T, S, spec)[0]  # (T, S), row i = position S - T + i
    sub = dense[q_lo - (S - T):q_hi - (S - T), k_lo:k_hi]
    check_tile(spec.tile_mask(q_lo, q_hi, k_lo, k_hi, torch.device("cpu")), sub)


def check_tile(got: torch.Tensor | bool, sub: torch.Tensor, where: object = None) -> None:
    """The three answers are exact: each branch also rules out the other two (a non-empty tile that
    is all True has some True, so neither False nor a tensor may be returned for it, and so on)."""
    if got is False:
        assert not sub.any(), f"skipped a tile with visible keys {where}"
    elif got is True:
        assert sub.all(), f"unmasked a tile with hidden keys {where}"
    else:
        assert isinstance(got, torch.Tensor) and got.dtype == torch.bool, where
        assert torch.equal(got, sub), where
        assert sub.any() and not sub.all(), f"a tensor for a tile that is all one value {where}"


@pytest.mark.parametrize("layout", ["none", "strided"])
@pytest.mark.parametrize("causal", [True, False])
def test_tile_mask_every_tile_of_a_small_grid(causal: bool, layout: str) -> None:
    """Exhaustive where hypothesis samples: every tile [q_lo, q_hi) x [k_lo, k_hi) of an S = 8 grid
    (T = 8 and T = 3), windows None, 1, 2, 3, 5, block size 2. Same contract as above."""
    cpu = torch.device("cpu")
    for T, window in itertools.product((8, 3), (None, 1, 2, 3, 5)):
        spec = MaskSpec(causal=causal, window=window, block=layout_for(layout, 8, 2))
        dense = oracle_mask(T, 8, spec)[0]
        for q_lo, k_lo in itertools.product(range(8 - T, 8), range(8)):
            for q_hi, k_hi in itertools.product(range(q_lo + 1, 9), range(k_lo + 1, 9)):
                sub = dense[q_lo - (8 - T):q_hi - (8 - T), k_lo:k_hi]
                check_tile(spec.tile_mask(q_lo, q_hi, k_lo, k_hi, cpu), sub, (T, window, q_lo, q_hi, k_lo, k_hi))


def test_tile_mask_hand_cases() -> None:
    """Causal, window 4, tiles of 4 x 4 at the diagonal and off it:

        queries 8..11, keys 12..15: all in the future                 -> False (skip)
        queries 8..11, keys 0..3:   8 - 3 = 5 >= 4, out of window     -> False (skip)
        queries 8..11, keys 4..7:   p - j from 1 to 7: mixed          -> tensor, row 8 sees 5, 6, 7
        queries 8..11, keys 8..11:  the diagonal: lower triangle      -> tensor
        non-causal, no window                                         -> True
    """
    spec = MaskSpec(causal=True, window=4)
    cpu = torch.device("cpu")
    assert spec.tile_mask(8, 12, 12, 16, cpu) is False
    assert spec.tile_mask(8, 12, 0, 4, cpu) is False
    below = spec.tile_mask(8, 12, 4, 8, cpu)
    assert isinstance(below, torch.Tensor)
    assert below.int().tolist() == [[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]]
    diagonal = spec.tile_mask(8, 12, 8, 12, cpu)
    assert isinstance(diagonal, torch.Tensor)
    assert torch.equal(diagonal, torch.ones(4, 4, dtype=torch.bool).tril())
    assert MaskSpec(causal=False).tile_mask(0, 4, 8, 12, cpu) is True
    assert MaskSpec(causal=True).tile_mask(8, 12, 0, 8, cpu) is True


# ----------------------------------------------------------------------------------------------- layouts


def test_local_strided_by_hand() -> None:
    """local_strided(4 blocks, local=1, stride=2): the diagonal (|i - j| < 1) plus the columns that
    end a stride (j % 2 == 1: blocks 1 and 3), summary columns for every row:

              j=0 1 2 3
        i=0   [ 1 1 0 1 ]
        i=1   [ 0 1 0 1 ]
        i=2   [ 0 1 1 1 ]
        i=3   [ 0 1 0 1 ]
    """
    layout = local_strided(4, 16, local=1, stride=2)
    assert layout.block_size == 16
    assert layout.max_positions == 64
    assert layout.layout.dtype == torch.bool
    assert layout.layout.int().tolist() == [[1, 1, 0, 1], [0, 1, 0, 1], [0, 1, 1, 1], [0, 1, 0, 1]]


def test_local_strided_wider_band_by_hand() -> None:
    """local=2 adds the first off-diagonals; stride=3 marks column 2 (j % 3 == 2):

        [ 1 1 1 0 0 ]
        [ 1 1 1 0 0 ]
        [ 0 1 1 1 0 ]
        [ 0 0 1 1 1 ]
        [ 0 0 1 1 1 ]
    """
    layout = local_strided(5, 1, local=2, stride=3).layout
    assert layout.int().tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1],
                                     [0, 0, 1, 1, 1]]


def test_local_global_by_hand() -> None:
    """local_global(5 blocks, local=2, n_global=1): band |i - j| < 2, plus row 0 and column 0:

        [ 1 1 1 1 1 ]   <- the global block sees everything
        [ 1 1 1 0 0 ]
        [ 1 1 1 1 0 ]
        [ 1 0 1 1 1 ]
        [ 1 0 0 1 1 ]   <- everyone sees the global block
    """
    layout = local_global(5, 8, local=2, n_global=1).layout
    assert layout.int().tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 0, 1, 1, 1],
                                     [1, 0, 0, 1, 1]]


def test_block_layout_through_allowed() -> None:
    """local_strided(4, block 2, local=1, stride=2) without causal, over S = 8 positions: position p
    sees key j iff layout[p // 2, j // 2]; each layout entry becomes a 2 x 2 block."""
    spec = MaskSpec(causal=False, block=local_strided(4, 2, local=1, stride=2))
    got = spec.allowed(torch.arange(8), torch.arange(8))
    expected = torch.tensor([[1, 1, 0, 1], [0, 1, 0, 1], [0, 1, 1, 1], [0, 1, 0, 1]], dtype=torch.bool)
    assert torch.equal(got, expected.repeat_interleave(2, 0).repeat_interleave(2, 1))


def test_bigbird_is_seeded_and_contains_local_global() -> None:
    """Same seed, same layout; each row adds at most n_random blocks to local_global (random picks
    may land on blocks already visible); a different seed gives a different layout (checked for
    these two seeds; 16 blocks make a coincidence astronomically unlikely, and it is deterministic)."""
    def make(seed: int) -> torch.Tensor:
        return bigbird(16, 4, local=1, n_global=1, n_random=3, generator=torch.Generator().manual_seed(seed)).layout

    a, b, c = make(0), make(0), make(1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    base = local_global(16, 4, local=1, n_global=1).layout
    assert torch.equal(a & base, base)  # a superset of local + global
    extra = (a & ~base).sum(dim=1)
    assert (extra <= 3).all()
    assert extra.sum() > 0


def test_block_layout_validation() -> None:
    with pytest.raises(UserError, match="square bool matrix"):
        BlockLayout(torch.ones(2, 3, dtype=torch.bool), 4)
    with pytest.raises(UserError, match="square bool matrix"):
        BlockLayout(torch.ones(2, 2), 4)
    with pytest.raises(UserError, match="block_size must be positive"):
        BlockLayout(torch.ones(2, 2, dtype=torch.bool), 0)


# ---------------------------------------------------------------------------------------------- errors


def qkv(B: int = 1, Hq: int = 4, T: int = 5, Hkv: int = 2, S: int = 7, D: int = 8) -> tuple[torch.Tensor, ...]:
    return torch.zeros(B, Hq, T, D), torch.zeros(B, Hkv, S, D), torch.zeros(B, Hkv, S, D)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"window": 0}, r"window must be at least 1, got 0"),
    ({"window": -3, "causal": False}, r"window must be at least 1, got -3"),
    ({"block_mask": local_strided(1, 6, local=1, stride=1)}, r"block layout covers 6 positions, fewer than S = 7"),
    ({"key_padding_mask": torch.ones(7, dtype=torch.bool)}, r"key_padding_mask must be \(B, S\) = \(1, 7\), got \(7,\)"),
    ({"key_padding_mask": torch.ones(1, 5, dtype=torch.bool)}, r"key_padding_mask must be \(B, S\) = \(1, 7\), got \(1, 5\)"),
    ({"backend": "Flash"}, r"unknown attention backend 'Flash'; choose one of naive, sdpa, flash"),
    ({"backend": "sdpa", "return_weights": True}, r"return_weights needs backend='naive'"),
    ({"backend": "flash", "return_weights": True}, r"return_weights needs backend='naive'"),
    ({"backend": "flash", "q_block": 0}, r"(block|tile) sizes must be positive"),
    ({"backend": "flash", "k_block": -1}, r"(block|tile) sizes must be positive"),
])
def test_option_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        attention(*qkv(), **kwargs)


@pytest.mark.parametrize(("shapes", "message"), [
    (qkv(Hq=4, Hkv=3), r"query heads \(4\) must be a multiple of key/value heads \(3\)"),
    (qkv(T=5, S=4), r"fewer keys \(4\) than queries \(5\)"),
    ((torch.zeros(4, 5, 8), *qkv()[1:]), r"q, k, v must be \(B, H, T, D\); got \(4, 5, 8\)"),
    ((qkv()[0], torch.zeros(1, 2, 7), torch.zeros(1, 2, 7)), r"q, k, v must be \(B, H, T, D\)"),
    ((*qkv()[:2], torch.zeros(1, 2, 7, 4)), r"k and v must be \(B, Hkv, S, D\) matching q"),
    ((qkv()[0], torch.zeros(2, 2, 7, 8), torch.zeros(2, 2, 7, 8)), r"k and v must be \(B, Hkv, S, D\)"),
    ((qkv()[0], torch.zeros(1, 2, 7, 4), torch.zeros(1, 2, 7, 4)), r"k and v must be \(B, Hkv, S, D\)"),
])
@pytest.mark.parametrize("backend", ["naive", "sdpa", "flash"])
def test_shape_errors(shapes: tuple[torch.Tensor, ...], message: str, backend: str) -> None:
    """Every backend checks shapes before any arithmetic, with one line that names the numbers."""
    with pytest.raises(UserError, match=message):
        attention(*shapes, backend=backend)


def test_zero_kv_heads_is_a_user_error() -> None:
    with pytest.raises(UserError, match="multiple of key/value heads"):
        attention(*qkv(Hkv=0))


def test_error_messages_are_one_line() -> None:
    with pytest.raises(UserError) as info:
        attention(*qkv(Hq=4, Hkv=3))
    assert "\n" not in str(info.value)


def test_reference_mask_matches_causal_definition() -> None:
    """Oracle sanity on its own: T = S gives the lower triangle; decode (T = 1) sees the whole cache."""
    assert np.array_equal(ref.attention_mask(4, 4)[0], np.tri(4, dtype=bool))
    assert ref.attention_mask(1, 6)[0].all()
