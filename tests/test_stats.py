"""llmlab.stats against SciPy (binomtest's Wilson interval) and hand computations."""

import math

import pytest

from llmlab.stats import (
    bootstrap_interval,
    cohen_kappa,
    fleiss_kappa,
    mean_se,
    paired_difference,
    wilson_interval,
)


def test_wilson_matches_the_closed_form_by_hand():
    # 8 of 10, z = 1.96: centre (0.8 + 1.96^2/20) / (1 + 1.96^2/10), half-width per Wilson (1927)
    z = 1.959963984540054
    p, n = 0.8, 10
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(centre - half) and hi == pytest.approx(centre + half)


@pytest.mark.parametrize(("k", "n"), [(8, 10), (0, 20), (20, 20), (3, 40), (1, 1), (57, 240)])
def test_wilson_matches_scipy(k, n):
    stats = pytest.importorskip("scipy.stats")
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_wilson_is_not_empty_at_the_edges():
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)
    lo, hi = wilson_interval(20, 20)
    assert hi == 1.0 and lo == pytest.approx(0.8389, abs=1e-4)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_mean_se_and_paired_difference():
    mean, se = mean_se([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and se == pytest.approx(math.sqrt((1.5**2 * 2 + 0.5**2 * 2) / 3 / 4))
    assert math.isnan(mean_se([1.0])[1]) and math.isnan(mean_se([])[0])
    diff, se = paired_difference([0, 0, 1, 1], [1, 0, 1, 1])
    assert diff == 0.25 and se == pytest.approx(0.25)  # differences 1,0,0,0: sd 0.5, / sqrt 4
    with pytest.raises(ValueError):
        paired_difference([1.0], [1.0, 2.0])


def test_wilson_interval_holds_the_estimate_exactly_at_the_ends():
    for n in (1, 7, 12, 40, 240):
        assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0
        for x in range(n + 1):
            lo, hi = wilson_interval(x, n)
            assert lo <= x / n <= hi


def test_cohen_kappa_by_hand():
    # Wikipedia's worked case: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no: p_o 0.7, p_e 0.5, kappa 0.4
    a = ["y"] * 25 + ["n"] * 25
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a, a) == 1.0
    assert math.isnan(cohen_kappa(["y"] * 4, ["y"] * 4))
    with pytest.raises(ValueError):
        cohen_kappa(["y"], [])


def test_fleiss_kappa_matches_fleiss_worked_example():
    # Wikipedia's worked case (10 subjects, 14 raters, 5 categories): P-bar 0.378, P-e 0.213, kappa 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(table) == pytest.approx(0.20993, abs=1e-4)
    # two raters: Fleiss' kappa equals Scott's pi, computed here by hand for 2 agree + 2 disagree items
    assert fleiss_kappa([[2, 0], [0, 2], [1, 1], [1, 1]]) == pytest.approx((0.5 - 0.5) / 0.5)
    with pytest.raises(ValueError):
        fleiss_kappa([[2, 0], [1, 0]])


def test_bootstrap_interval_agrees_with_scipy_and_the_normal_interval():
    import random

    rng = random.Random(1)
    xs = [float(rng.random() < 0.3) for _ in range(400)]
    lo, hi = bootstrap_interval(xs, n_boot=4000)
    mean, se = mean_se(xs)
    assert lo < mean < hi
    assert lo == pytest.approx(mean - 1.96 * se, abs=0.01) and hi == pytest.approx(mean + 1.96 * se, abs=0.01)
    stats = pytest.importorskip("scipy.stats")
    ref = stats.bootstrap((xs,), lambda v: sum(v) / len(v), vectorized=False, method="percentile",
                          n_resamples=4000, rng=0).confidence_interval
    assert (lo, hi) == pytest.approx((ref.low, ref.high), abs=0.01)
    assert bootstrap_interval(xs, seed=3) == bootstrap_interval(xs, seed=3)
    assert all(math.isnan(x) for x in bootstrap_interval([]))


def test_bootstrap_interval_leaves_out_resamples_whose_stat_is_nan():
    """A kappa of 3 pairs: a resample that draws one label only has no kappa. Those resamples are dropped;
    the rest give the interval (before, a NaN in the sort left the percentiles in an arbitrary order)."""
    pairs = [("a", "a"), ("b", "b"), ("a", "b")]

    def kappa(v):
        return cohen_kappa([x for x, _ in v], [y for _, y in v])

    lo, hi = bootstrap_interval(pairs, n_boot=500, stat=kappa)
    assert -1.0 <= lo <= kappa(pairs) <= hi <= 1.0 and not math.isnan(lo)
    assert all(math.isnan(x) for x in bootstrap_interval([("a", "a")], n_boot=50, stat=kappa))
