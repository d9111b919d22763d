"""`llmlab.attention.whatif`: KV-cache bytes and the decode roofline of named models, against hand-computed cases."""

import pytest

from llmlab.attention.whatif import (
    ACCELERATORS,
    PRESETS,
    cached_tokens,
    decode_step,
    format_what_if,
    kv_bytes_per_token,
    param_counts,
    what_if,
)
from llmlab.cli import main

H100, A100 = ACCELERATORS["h100-sxm"], ACCELERATORS["a100-80gb"]


def test_parameter_counts_by_hand():
    """Llama-3-70B (d 8192, 80 layers, 64 heads, 8 KV heads, head_dim 128, d_ff 28672, vocab 128256):
        attention per layer: 8192*128*(2*64 + 2*8) = 150,994,944;  MLP 3*8192*28672 = 704,643,072;  norms 2*8192
        -> 855,654,400 per layer, x 80 = 68,452,352,000;  embedding = head = 128256*8192 = 1,050,673,152;
        final norm 8192  -> 70,553,706,496 (the published "70.6B").
    Llama-3-8B (d 4096, 32 layers, 32 heads, 8 KV heads, d_ff 14336): 4096*128*80 = 41,943,040 + 176,160,768
        + 8,192 = 218,112,000 per layer, x 32 = 6,979,584,000; + 2 * 525,336,576 + 4096 = 8,030,261,248 ("8.03B").
    """
    assert param_counts(PRESETS["llama-3-70b"])["total"] == 70_553_706_496
    assert param_counts(PRESETS["llama-3-8b"])["total"] == 8_030_261_248
    # the MHA counterfactual adds 2 * 80 layers * 8192 * 128 * (64 - 8) K/V projection weights
    extra = param_counts(PRESETS["llama-3-70b-mha"])["total"] - 70_553_706_496
    assert extra == 2 * 80 * 8192 * 128 * 56


def test_kv_cache_by_hand():
    """Llama-3-70B, GQA-8, bf16: 2 (K, V) * 80 layers * 8 heads * 128 * 2 bytes = 327,680 bytes per token
    -> 327,680 * 8192 = 2,684,354,560 bytes = 2.5 GiB per 8k sequence; fp8 half; the MHA counterfactual 8x
    (2,621,440 bytes per token, 20 GiB per 8k sequence).
    Mistral-7B v0.1 (32 layers, 8 KV heads, window 4096): 2*32*8*128*2 = 131,072 bytes per token, and at 32k
    context the cache holds only the last 4096 tokens: 512 MiB per sequence."""
    m70 = PRESETS["llama-3-70b"]
    assert kv_bytes_per_token(m70, 2) == 327_680 and kv_bytes_per_token(m70, 1) == 163_840
    assert kv_bytes_per_token(m70, 2) * cached_tokens(m70, 8192) == 2.5 * 2**30
    assert kv_bytes_per_token(PRESETS["llama-3-70b-mha"], 2) * 8192 == 20 * 2**30
    mistral = PRESETS["mistral-7b"]
    assert cached_tokens(mistral, 32768) == 4096 and cached_tokens(mistral, 1000) == 1000
    step = decode_step(mistral, H100, dtype="bf16", context=32768, batch=3)
    assert step["kv_bytes_per_token"] == 131_072 and step["kv_cache_bytes"] == 3 * 512 * 2**20


def test_decode_step_by_hand():
    """Llama-3-70B, bf16, context 8192, batch 1, H100 SXM (3.35 TB/s, 989.4 TFLOP/s):
        weights read = (70,553,706,496 - 1,050,673,152 embedding) * 2 = 139,006,066,688 bytes
        + KV 2,684,354,560 = 141,690,421,248 bytes -> 42.30 ms at 3.35e12 B/s
        FLOPs = 2 * (70,553,706,496 - 1,050,673,152 - 1,318,912 norms (80*2*8192 + 8192) = 69,501,714,432 matmul
                weights)
                + 4 * 80 * 64 * 128 * 8192 = 139,003,428,864 + 21,474,836,480 = 160,478,265,344 -> 0.162 ms
        memory-bound by ~260x: 24 tokens/s.
    """
    s = decode_step(PRESETS["llama-3-70b"], H100, dtype="bf16", context=8192, batch=1)
    assert s["bytes_read"] == 141_690_421_248 and s["flops"] == 160_478_265_344
    assert s["memory_s"] == pytest.approx(141_690_421_248 / 3.35e12, rel=1e-12)
    assert s["compute_s"] == pytest.approx(160_478_265_344 / 989.4e12, rel=1e-12)
    assert s["bound"] == "memory" and s["step_s"] == s["memory_s"] and round(s["tokens_per_s"]) == 24
    assert s["weights_bytes"] == 2 * 70_553_706_496 and not s["fits"]  # 141 GB: not on one 80 GB card


def test_batch_moves_the_bound_to_compute():
    """Llama-3-8B, bf16, 128 tokens of context on an H100: the weights (W = 15.0 GB, 4.48 ms at 3.35 TB/s) are
    read once per step for the whole batch; each sequence adds K = 128 * 131,072 B of cache (5.0 us) and
    F = 15.1 GFLOP (15.2 us at 989.4 TFLOP/s). Compute catches up where B F / peak = (W + B K) / bandwidth:
    B = 4.48 ms / (15.2 us - 5.0 us) ~ 440. Batch 64 is memory-bound, 512 compute-bound."""
    m = PRESETS["llama-3-8b"]
    assert decode_step(m, H100, dtype="bf16", context=128, batch=64)["bound"] == "memory"
    big = decode_step(m, H100, dtype="bf16", context=128, batch=512)
    assert big["bound"] == "compute" and big["step_s"] == big["compute_s"]


def test_fp8_halves_the_bytes_and_a100_keeps_bf16_math():
    m = PRESETS["llama-3-70b"]
    for acc in (H100, A100):
        bf16, fp8 = (decode_step(m, acc, dtype=d, context=8192, batch=4) for d in ("bf16", "fp8"))
        assert fp8["bytes_read"] * 2 == bf16["bytes_read"] and fp8["flops"] == bf16["flops"]
    h_bf16, h_fp8 = (decode_step(m, H100, dtype=d, context=8192, batch=4) for d in ("bf16", "fp8"))
    a_bf16, a_fp8 = (decode_step(m, A100, dtype=d, context=8192, batch=4) for d in ("bf16", "fp8"))
    assert h_fp8["compute_s"] == pytest.approx(h_bf16["compute_s"] * 989.4 / 1978.9) and h_fp8["math"] == "fp8"
    assert a_fp8["compute_s"] == a_bf16["compute_s"] and a_fp8["math"] == "bf16"


def test_impossible_sizes_raise():
    with pytest.raises(ValueError):
        decode_step(PRESETS["llama-3-8b"], H100, dtype="bf16", context=0, batch=1)


def test_table_rows_and_notes():
    rows = what_if(["llama-3-70b", "mistral-7b"], ["h100-sxm", "a100-80gb"], ["bf16", "fp8"], context=8192, batch=1)
    assert len(rows) == 8
    text = format_what_if(rows)
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 8 and len({len(line) for line in table}) == 1  # columns aligned
    assert "fp8 (bf16 math)" in text and "sliding window 4096" in text and "3.35 TB/s" in text


def test_cli_what_if(capsys):
    code = main(["attention", "explain", "--preset", "llama-3-70b", "--seq-len", "8192", "--batch", "1", "--dtype",
                 "bf16", "--accelerator", "h100-sxm"])
    out, err = capsys.readouterr()
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("| llama-3-70b"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # weights GB, KV KiB/token, KV cache GiB, fits, ..., memory ms, compute ms, bound, ms/token
    assert cells[3:7] == ["141.1", "320", "2.50", "no"] and cells[9] == "42.30" and cells[11] == "memory"


@pytest.mark.parametrize(("argv", "phrase"), [
    (["--preset", "gpt-5"], "presets: unknown 'gpt-5'"),
    (["--preset", "llama-3-8b", "--accelerator", "tpu"], "accelerators: unknown 'tpu'"),
    (["--preset", "llama-3-8b", "--dtype", "fp4"], "dtypes: unknown 'fp4'"),
])
def test_cli_unknown_names_are_one_line(capsys, argv, phrase):
    assert main(["attention", "explain", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and phrase in err, err
