"""`llmlab.attention.explain`: attention FLOPs, bytes and KV-cache sizes, by hand and by their relations."""

import math

import numpy as np
import pytest

from llmlab.attention.explain import explain, format_explain, visible_pairs
from llmlab.attention.reference import attention_mask
from llmlab.cli import main


def by_variant(rows):
    return {r["variant"]: r for r in rows}


@pytest.mark.parametrize(("T", "S", "window"), [(4, 4, None), (4, 4, 2), (7, 7, 1), (5, 5, 9), (3, 10, 4),
                                                (1, 9, None), (1, 9, 3), (16, 16, 5), (6, 20, 30)])
def test_visible_pairs_count_the_reference_mask(T, S, window):
    """The closed form against the mask the NumPy reference builds, pair by pair."""
    assert visible_pairs(T, S, window=window) == int(attention_mask(T, S, window=window).sum())


def test_tiny_case_by_hand():
    """T=4, H=2, G=1 (MQA), D=8, 2-byte values, causal, one sequence, one layer.

    pairs = 1 + 2 + 3 + 4 = 10;  FLOPs = 2 matmuls * 2 per multiply-add * D * H * pairs = 4 * 8 * 2 * 10 = 640.
    Q, O: H T D = 64 elements = 128 bytes each;  K, V: G T D = 32 elements = 64 bytes each.
    naive: 128 + 128 + 64 + 64 + scores and probs written and read: 4 * H T T * 2 = 256  -> 640 bytes, 1 FLOP/B.
    flash: one query tile (T <= 128) reads K and V once                      -> 384 bytes.
    decode, 1 query over S=4 cached keys: FLOPs = 4 * 8 * 2 * 4 = 256;
        MQA bytes = q 32 + o 32 + K 64 + V 64 = 192;  MHA (G=2) bytes = 64 + 2 * 2*4*8*2 = 320.
    KV per token: 2 * G * D * 2 bytes = 32 (MHA 64); for the 4 tokens: 128 (MHA 256).
    """
    rows = by_variant(explain(4, 2, 1, 8))
    assert list(rows) == ["naive", "flash", "MHA", "MQA"]
    naive, flash, mha, mqa = rows.values()
    assert naive["pairs"] == 10 and naive["flops"] == 640 and flash["flops"] == 640
    assert naive["bytes"] == 640 and naive["intensity"] == 1.0
    assert flash["bytes"] == 384
    assert mqa["flops"] == mha["flops"] == 256
    assert (mqa["bytes"], mha["bytes"]) == (192, 320)
    assert (mqa["kv_bytes_per_token"], mha["kv_bytes_per_token"]) == (32, 64)
    assert (naive["kv_cache_bytes"], mqa["kv_cache_bytes"], mha["kv_cache_bytes"]) == (128, 128, 256)


def test_window_rows_by_hand():
    """T=4, W=2: visible pairs 1 + 2 + 2 + 2 = 7 -> 4 * D * H * 7 = 448 FLOPs (D=8, H=2).

    The window's flash tile reads a band of min(T, q_block + W - 1) = 4 keys: the same bytes as full flash here.
    Decode with the window sees min(S, W) = 2 keys: FLOPs 4 * 8 * 2 * 2 = 128; the cache holds 2 tokens.
    """
    rows = by_variant(explain(4, 2, 1, 8, window=2))
    assert rows["flash, window 2"]["flops"] == 448 and rows["flash, window 2"]["bytes"] == 384
    assert rows["MQA, window 2"]["flops"] == 128 and rows["MQA, window 2"]["kv_cache_bytes"] == 2 * 32


def test_gqa_kv_cache_is_group_times_smaller():
    """8 query heads over 2 K/V heads store 2/8 = 1/4 of the K/V bytes of MHA, per token and in total."""
    rows = by_variant(explain(4096, 8, 2, 64))
    gqa, mha = rows["GQA 8:2"], rows["MHA"]
    assert gqa["kv_bytes_per_token"] * 4 == mha["kv_bytes_per_token"]
    assert gqa["kv_cache_bytes"] * 4 == mha["kv_cache_bytes"]
    assert gqa["kv_bytes_per_token"] == 2 * 2 * 64 * 2


def test_window_makes_prefill_linear_in_T():
    """With T >> W, pairs = W(W+1)/2 + (T-W)W ~ T W: FLOPs ~ 4 H D T W, a fraction ~2W/T of full causal."""
    T, W, H, D = 65536, 256, 4, 64
    rows = by_variant(explain(T, H, H, D, window=W))
    windowed, full = rows[f"flash, window {W}"], rows["flash"]
    assert windowed["flops"] == 4 * H * D * (W * (W + 1) // 2 + (T - W) * W)
    assert windowed["flops"] / (4 * H * D * T * W) == pytest.approx(1.0, rel=0.01)
    assert windowed["flops"] / full["flops"] == pytest.approx(2 * W / T, rel=0.01)
    assert windowed["bytes"] < full["bytes"] / 50  # each query tile reads a band of 383 keys, not 65536


def test_decode_intensity_grows_with_heads_per_kv_head():
    """Decode reads the whole cache for one query: FLOP/B -> 4 H D S / (2 G S D b) = 2 (H/G) / b for long S."""
    H, b = 32, 2
    intensities = []
    for G in (32, 8, 4, 1):
        decode = explain(32768, H, G, 128, dtype_bytes=b)[-1]
        assert decode["phase"] == "decode" and decode["kv_heads"] == G
        assert decode["intensity"] == pytest.approx(2 * (H / G) / b, rel=0.01)
        intensities.append(decode["intensity"])
    assert intensities == sorted(intensities) and intensities[0] == pytest.approx(1.0, rel=0.01)


@pytest.mark.parametrize("T", [2048, 8192, 65536])
def test_naive_moves_more_bytes_than_flash_for_large_T(T):
    """naive: 4 H T^2 b for the score matrix; flash: K, V re-read T/q_block times: 2 G T^2 D b / q_block."""
    rows = by_variant(explain(T, 32, 8, 128))
    assert rows["naive"]["bytes"] > 2 * rows["flash"]["bytes"]
    assert rows["naive"]["flops"] == rows["flash"]["flops"]  # same math, different traffic
    n_tiles = math.ceil(T / 128)
    assert rows["flash"]["bytes"] == 2 * 32 * T * 128 * 2 + n_tiles * 2 * 8 * T * 128 * 2


def test_batch_and_layers_scale_everything_linearly():
    one = explain(1024, 8, 2, 64, window=128)
    many = explain(1024, 8, 2, 64, window=128, batch=3, n_layers=5)
    for a, b in zip(one, many, strict=True):
        assert b["flops"] == 15 * a["flops"] and b["bytes"] == 15 * a["bytes"]
        assert b["kv_bytes_per_token"] == 5 * a["kv_bytes_per_token"]
        assert b["kv_cache_bytes"] == 15 * a["kv_cache_bytes"]
        assert b["intensity"] == pytest.approx(a["intensity"])


@pytest.mark.parametrize("kwargs", [dict(n_heads=6, n_kv_heads=4), dict(seq_len=0), dict(window=0),
                                    dict(head_dim=-1)])
def test_impossible_sizes_raise(kwargs):
    args = dict(seq_len=16, n_heads=4, n_kv_heads=2, head_dim=8) | kwargs
    window = args.pop("window", None)
    with pytest.raises(ValueError):
        explain(**args, window=window)


def test_format_has_units_every_row_and_the_note():
    rows = explain(8192, 32, 8, 128, window=1024)
    text = format_explain(rows, header="T=8192")
    for word in ("GFLOP", "MB moved", "FLOP/B", "KV KB/token", "naive", "flash", "GQA 32:8", "MHA", "window 1024",
                 "balance point", "memory-bound"):
        assert word in text, word
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(rows)
    assert len({len(line) for line in table}) == 1  # columns aligned
    assert "17,348" in text  # naive MB moved at T=8192: (2*32 + 2*8) * 8192*128*2 + 4*32*8192^2*2 bytes


def test_cli_prints_the_table(capsys):
    code = main(["attention", "explain", "--seq-len", "4096", "--heads", "16", "--kv-heads", "4", "--head-dim",
                 "64", "--window", "512", "--dtype-bytes", "4", "n_layers=2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "GQA 16:4" in out and "window 512" in out and "4-byte values" in out and "2 layer(s)" in out
    kv_kb_per_token = 2 * 4 * 64 * 4 * 2 / 1e3  # K and V, 4 kv heads, dim 64, fp32, 2 layers = 4.1 KB
    assert f"{kv_kb_per_token:.3g}" in out


@pytest.mark.parametrize(("argv", "phrase"), [
    (["--heads", "6", "--kv-heads", "4"], "not a multiple of n_kv_heads"),
    (["--seq-len", "0"], "seq_len must be at least 1"),
    (["--head-dim", "-8"], "head_dim must be at least 1"),
    (["--window", "0"], "window must be at least 1"),
    (["--dtype-bytes", "two"], "dtype_bytes"),
])
def test_cli_config_errors_name_the_problem(capsys, argv, phrase):
    assert main(["attention", "explain", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and phrase in err, err


def test_visible_pairs_is_exact_for_big_T():
    """The closed form needs no T x T mask: check it against a plain sum of min(p + 1, W)."""
    T, W = 100_000, 4096
    p = np.arange(T)
    assert visible_pairs(T, window=W) == int(np.minimum(p + 1, W).sum())
    assert visible_pairs(T) == T * (T + 1) // 2
