"""The NumPy oracle itself: a stable softmax, attention worked by hand, the KV-cache causal
convention, heads split and merged as an explicit loop would, GQA, and parity with PyTorch's own
`scaled_dot_product_attention` in float64 (an independent implementation).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llmlab.attention import reference as ref


def close(actual: np.ndarray, expected: np.ndarray | list, *, atol: float = 1e-12, rtol: float = 0.0) -> None:
    """assert_close on NumPy results (float64 both sides)."""
    torch.testing.assert_close(torch.as_tensor(np.asarray(actual)),
                               torch.as_tensor(np.asarray(expected, dtype=np.float64)), atol=atol, rtol=rtol)


# --------------------------------------------------------------------------------------------- softmax


def test_softmax_of_huge_logits_does_not_overflow() -> None:
    """exp(1000) overflows float64 (max ~1.8e308 = e^709.8): without the max shift [1000]*3 would be
    inf / inf = NaN. Shifted: exp(0) each -> 1/3. [1000, 999] -> [1, e^-1] / (1 + e^-1)."""
    close(ref.softmax(np.array([1000.0, 1000.0, 1000.0])), [1 / 3, 1 / 3, 1 / 3])
    e = math.exp(-1)
    close(ref.softmax(np.array([1000.0, 999.0])), [1 / (1 + e), e / (1 + e)])
    close(ref.softmax(np.array([-1000.0, -1000.0])), [0.5, 0.5])  # unshifted: 0 / 0


def test_softmax_of_all_masked_row_is_zeros() -> None:
    """A row of -inf (a query that sees nothing) gives zeros, with no 0/0 along the way; a row with
    some -inf gives those entries exactly 0: [0, -inf, 0] -> [1/2, 0, 1/2]."""
    x = np.array([[-np.inf, -np.inf, -np.inf], [0.0, -np.inf, 0.0]])
    with np.errstate(all="raise"):  # any overflow, 0/0 or inf-inf would raise here
        out = ref.softmax(x)
    close(out, [[0.0, 0.0, 0.0], [0.5, 0.0, 0.5]], atol=0)


def test_softmax_rows_sum_to_one_and_match_torch() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(scale=30.0, size=(7, 5, 11))
    out = ref.softmax(x)
    close(out.sum(axis=-1), np.ones((7, 5)))
    close(out, torch.softmax(torch.from_numpy(x), dim=-1).numpy())
    close(ref.softmax(x, axis=0), torch.softmax(torch.from_numpy(x), dim=0).numpy())
    assert (out >= 0).all()


# ------------------------------------------------------------------------------------- worked by hand


def test_two_by_two_attention_by_hand() -> None:
    """q = k = I (2 x 2), scale = ln 3, v = [[4, 0], [0, 8]]:

        scores = ln3 * q k^T = [[ln3, 0], [0, ln3]]
        exp    = [[3, 1], [1, 3]]            -> weights [[3/4, 1/4], [1/4, 3/4]]
        out    = [[3/4*4 + 1/4*0, 3/4*0 + 1/4*8],  = [[3, 2],
                  [1/4*4 + 3/4*0, 1/4*0 + 3/4*8]]     [1, 6]]
    """
    eye = np.eye(2)
    out, weights = ref.scaled_dot_product_attention(eye, eye, np.array([[4.0, 0.0], [0.0, 8.0]]),
                                                    scale=math.log(3))
    close(weights, [[0.75, 0.25], [0.25, 0.75]])
    close(out, [[3.0, 2.0], [1.0, 6.0]])


def test_default_scale_and_kv_offset_by_hand() -> None:
    """d = 4, so the default scale is 1/sqrt(4) = 1/2. T = 2 queries over S = 3 keys, causal: the
    queries sit at positions 1 and 2, so query 0 sees keys 0, 1 and query 1 sees all three.

        q = [[2,0,0,0], [0,2,0,0]],  k = [e0, e1, e2] (unit rows)  -> q k^T / 2 = [[1,0,0], [0,1,0]]
        weights row 0 (keys 0, 1):    [e, 1, 0] / (e + 1)
        weights row 1 (keys 0, 1, 2): [1, e, 1] / (e + 2)
        v = [[1,0], [0,1], [1,1]]  -> out row 0 = [e, 1] / (e + 1),  row 1 = [2, e + 1] / (e + 2)
    """
    e = math.e
    q = np.array([[2.0, 0, 0, 0], [0, 2.0, 0, 0]])
    k = np.eye(3, 4)
    v = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    mask = ref.attention_mask(2, 3, causal=True)[0]
    assert mask.tolist() == [[True, True, False], [True, True, True]]
    out, weights = ref.scaled_dot_product_attention(q, k, v, mask)
    close(weights, [[e / (e + 1), 1 / (e + 1), 0.0], [1 / (e + 2), e / (e + 2), 1 / (e + 2)]])
    close(out, [[e / (e + 1), 1 / (e + 1)], [2 / (e + 2), (e + 1) / (e + 2)]])


def test_three_by_three_causal_uniform_is_running_mean() -> None:
    """q = k = 0: every score is 0, so causal weights are uniform over the visible prefix:

        weights = [[1, 0, 0], [1/2, 1/2, 0], [1/3, 1/3, 1/3]]
        v = [[3, 0], [0, 6], [9, 3]]  -> out = [[3, 0], [3/2, 3], [4, 3]]
    """
    zeros = np.zeros((3, 2))
    v = np.array([[3.0, 0.0], [0.0, 6.0], [9.0, 3.0]])
    out, weights = ref.scaled_dot_product_attention(zeros, zeros, v, ref.attention_mask(3, 3)[0])
    close(weights, [[1, 0, 0], [1 / 2, 1 / 2, 0], [1 / 3, 1 / 3, 1 / 3]])
    close(out, [[3.0, 0.0], [1.5, 3.0], [4.0, 3.0]])


def test_attention_mask_by_hand() -> None:
    """T = 3 of S = 5 (positions 2, 3, 4), window 2, key_valid hides key 3 in batch row 1:

        causal       [[1 1 1 0 0],   + window 2 (p - j < 2)   [[0 1 1 0 0],   row 1, key 3 hidden  [[0 1 1 0 0],
                      [1 1 1 1 0],                              [0 0 1 1 0],                        [0 0 1 0 0],
                      [1 1 1 1 1]]                              [0 0 0 1 1]]                        [0 0 0 0 1]]
    """
    causal = [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    windowed = [[0, 1, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 1]]
    assert ref.attention_mask(3, 5).astype(int).tolist() == [causal]
    assert ref.attention_mask(3, 5, window=2).astype(int).tolist() == [windowed]
    key_valid = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 1]], dtype=bool)
    got = ref.attention_mask(3, 5, window=2, key_valid=key_valid)
    assert got.shape == (2, 3, 5)
    assert got.astype(int).tolist() == [windowed, [[0, 1, 1, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 1]]]
    assert ref.attention_mask(3, 5, causal=False).all()


def test_fully_masked_query_gives_zero_output() -> None:
    rng = np.random.default_rng(1)
    q, k, v = rng.normal(size=(1, 2, 3, 4)), rng.normal(size=(1, 2, 5, 4)), rng.normal(size=(1, 2, 5, 4))
    mask = ref.attention_mask(3, 5, key_valid=np.array([[0, 0, 0, 1, 1]], dtype=bool))  # query 0 (pos 2) sees none
    out, weights = ref.grouped_attention(q, k, v, mask)
    close(out[:, :, 0], np.zeros((1, 2, 4)), atol=0)
    close(weights[:, :, 0], np.zeros((1, 2, 5)), atol=0)
    assert np.isfinite(out).all()


# ----------------------------------------------------------------------------------------- multi-head


def loop_over_heads(x: np.ndarray, w_q: np.ndarray, w_k: np.ndarray, w_v: np.ndarray, w_o: np.ndarray,
                    n_heads: int, n_kv_heads: int, causal: bool) -> tuple[np.ndarray, np.ndarray]:
    """Multi-head attention with nothing vectorised: one head at a time, one query at a time.
    Head h uses columns h*d_k:(h+1)*d_k of w_q and kv head h // (n_heads / n_kv_heads)."""
    T = x.shape[0]
    d_k = w_q.shape[1] // n_heads
    heads, all_weights = [], []
    for h in range(n_heads):
        g = h // (n_heads // n_kv_heads)
        q = x @ w_q[:, h * d_k:(h + 1) * d_k]
        k = x @ w_k[:, g * d_k:(g + 1) * d_k]
        v = x @ w_v[:, g * d_k:(g + 1) * d_k]
        out_h, weights_h = np.zeros((T, d_k)), np.zeros((T, T))
        for i in range(T):
            visible = range(i + 1) if causal else range(T)
            scores = [float(q[i] @ k[j]) / math.sqrt(d_k) for j in visible]
            top = max(scores)
            exps = [math.exp(s - top) for s in scores]
            for j, e in zip(visible, exps, strict=True):
                weights_h[i, j] = e / sum(exps)
                out_h[i] += weights_h[i, j] * v[j]
        heads.append(out_h)
        all_weights.append(weights_h)
    return np.concatenate(heads, axis=1) @ w_o, np.stack(all_weights)


def random_weights(seed: int, d_model: int, n_heads: int, n_kv_heads: int, d_k: int, T: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(T, d_model))
    w_q = rng.normal(size=(d_model, n_heads * d_k)) / math.sqrt(d_model)
    w_k = rng.normal(size=(d_model, n_kv_heads * d_k)) / math.sqrt(d_model)
    w_v = rng.normal(size=(d_model, n_kv_heads * d_k)) / math.sqrt(d_model)
    w_o = rng.normal(size=(n_heads * d_k, d_model)) / math.sqrt(n_heads * d_k)
    return x, w_q, w_k, w_v, w_o


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(("n_heads", "n_kv_heads"), [(4, 4), (4, 2), (4, 1), (6, 3)])
def test_multi_head_equals_loop_over_heads(n_heads: int, n_kv_heads: int, causal: bool) -> None:
    """The reshape/transpose split of heads, grouped attention and merge equal the explicit loop."""
    x, w_q, w_k, w_v, w_o = random_weights(0, 12, n_heads, n_kv_heads, 3, 7)
    out, weights = ref.multi_head_attention(x, w_q, w_k, w_v, w_o, n_heads=n_heads, n_kv_heads=n_kv_heads,
                                            causal=causal)
    expected_out, expected_weights = loop_over_heads(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads, causal)
    assert out.shape == (7, 12)
    assert weights.shape == (n_heads, 7, 7)
    close(out, expected_out)
    close(weights, expected_weights)


def test_output_projection_and_head_order() -> None:
    """With w_o = I the output is the heads side by side: columns h*d_k:(h+1)*d_k are head h, whose
    value is weights[h] @ (x @ w_v)[head's kv columns]. A random w_o is then one more matmul."""
    n_heads, d_k = 3, 4
    x, w_q, w_k, w_v, w_o = random_weights(2, n_heads * d_k, n_heads, n_heads, d_k, 5)
    merged, weights = ref.multi_head_attention(x, w_q, w_k, w_v, np.eye(n_heads * d_k), n_heads=n_heads)
    for h in range(n_heads):
        close(merged[:, h * d_k:(h + 1) * d_k], weights[h] @ (x @ w_v[:, h * d_k:(h + 1) * d_k]))
    out, _ = ref.multi_head_attention(x, w_q, w_k, w_v, w_o, n_heads=n_heads)
    close(out, merged @ w_o)


def test_gqa_query_heads_of_a_group_share_keys() -> None:
    """n_heads = 4, n_kv_heads = 2: heads 0, 1 read kv head 0 and heads 2, 3 read kv head 1. If the
    query weights of heads 0 and 1 are equal, their attention maps are equal; heads 1 and 2 differ."""
    x, w_q, w_k, w_v, w_o = random_weights(3, 8, 4, 2, 2, 6)
    w_q[:, 2:4] = w_q[:, 0:2]  # head 1 := head 0's queries
    w_q[:, 4:6] = w_q[:, 0:2]  # head 2 := head 0's queries, but kv head 1
    _, weights = ref.multi_head_attention(x, w_q, w_k, w_v, w_o, n_heads=4, n_kv_heads=2)
    close(weights[1], weights[0])
    assert np.abs(weights[2] - weights[0]).max() > 1e-3


def test_multi_head_weights_are_causal_and_normalised() -> None:
    x, w_q, w_k, w_v, w_o = random_weights(4, 8, 2, 2, 4, 6)
    _, weights = ref.multi_head_attention(x, w_q, w_k, w_v, w_o, n_heads=2)
    close(weights.sum(axis=-1), np.ones((2, 6)))
    close(np.triu(weights, k=1), np.zeros((2, 6, 6)), atol=0)


def test_multi_head_float64_by_default() -> None:
    """float64 whatever the input dtype: it is an oracle."""
    x, w_q, w_k, w_v, w_o = (a.astype(np.float32) for a in random_weights(5, 8, 2, 2, 4, 5))
    out, weights = ref.multi_head_attention(x, w_q, w_k, w_v, w_o, n_heads=2)
    assert out.dtype == np.float64
    assert weights.dtype == np.float64


def test_multi_head_dtype_float32() -> None:
    """dtype=np.float32 computes (and returns) float32, within float32 rounding of the float64 answer."""
    x, w_q, w_k, w_v, w_o = random_weights(5, 8, 2, 2, 4, 5)
    out, _ = ref.multi_head_attention(x, w_q, w_k, w_v, w_o, n_heads=2)
    out32, weights32 = ref.multi_head_attention(x, w_q, w_k, w_v, w_o, n_heads=2, dtype=np.float32)
    assert weights32.dtype == np.float32
    assert out32.dtype == np.float32
    close(out32.astype(np.float64), out, atol=1e-5)


def test_explicit_scale_keeps_float32() -> None:
    """With an explicit Python-float scale the float32 path stays float32 (the bug above is only the
    default scale's NumPy scalar)."""
    q = np.random.default_rng(9).normal(size=(2, 3, 4)).astype(np.float32)
    out, weights = ref.scaled_dot_product_attention(q, q, q, ref.attention_mask(3, 3)[0], scale=0.5)
    assert out.dtype == np.float32
    assert weights.dtype == np.float32


# ----------------------------------------------------------------------------- against PyTorch, float64


@pytest.mark.parametrize("scale", [None, 0.7])
@pytest.mark.parametrize("mask_kind", ["none", "causal", "causal_offset", "window", "random"])
def test_sdpa_matches_torch_float64(mask_kind: str, scale: float | None) -> None:
    """reference.scaled_dot_product_attention vs torch.nn.functional.scaled_dot_product_attention,
    both float64, on (B, H, T, S) = (2, 3, 6, 9) with d = 5; masks without empty rows (PyTorch and the
    oracle disagree by design there: NaN vs 0). Agreement to 1e-12."""
    rng = np.random.default_rng(6)
    T, S = (9, 9) if mask_kind in ("none", "causal") else (6, 9)
    q, k, v = rng.normal(size=(2, 3, T, 5)), rng.normal(size=(2, 3, S, 5)), rng.normal(size=(2, 3, S, 5))
    mask = {
        "none": None,
        "causal": ref.attention_mask(T, S)[:, None],
        "causal_offset": ref.attention_mask(T, S)[:, None],  # queries are the last 6 of 9 positions
        "window": ref.attention_mask(T, S, window=3)[:, None],
        "random": rng.random((2, 1, T, S)) < 0.5,
    }[mask_kind]
    if mask is not None:
        mask = mask | np.eye(T, S, k=S - T, dtype=bool)  # every query sees itself: no empty rows
    out, weights = ref.scaled_dot_product_attention(q, k, v, mask, scale)
    expected = F.scaled_dot_product_attention(*(torch.from_numpy(a) for a in (q, k, v)),
                                              attn_mask=None if mask is None else torch.from_numpy(mask),
                                              scale=scale)
    assert out.dtype == np.float64
    close(out, expected.numpy())
    close(weights.sum(-1), np.ones((2, 3, T)))


def test_causal_square_matches_torch_is_causal() -> None:
    """For T = S the KV-cache convention and PyTorch's is_causal (top-left aligned) coincide."""
    rng = np.random.default_rng(7)
    q, k, v = (rng.normal(size=(1, 2, 8, 4)) for _ in range(3))
    out, _ = ref.scaled_dot_product_attention(q, k, v, ref.attention_mask(8, 8)[:, None])
    expected = F.scaled_dot_product_attention(*(torch.from_numpy(a) for a in (q, k, v)), is_causal=True)
    close(out, expected.numpy())


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_grouped_attention_matches_torch_enable_gqa(n_kv_heads: int) -> None:
    """grouped_attention (np.repeat of kv heads) vs PyTorch's enable_gqa, float64, T = 5 of S = 8."""
    rng = np.random.default_rng(8)
    q = rng.normal(size=(2, 4, 5, 3))
    k, v = rng.normal(size=(2, n_kv_heads, 8, 3)), rng.normal(size=(2, n_kv_heads, 8, 3))
    mask = ref.attention_mask(5, 8, window=4)  # (1, T, S)
    out, weights = ref.grouped_attention(q, k, v, mask)
    expected = F.scaled_dot_product_attention(*(torch.from_numpy(a) for a in (q, k, v)),
                                              attn_mask=torch.from_numpy(mask[:, None]), enable_gqa=True)
    assert weights.shape == (2, 4, 5, 8)
    close(out, expected.numpy())
