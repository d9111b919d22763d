"""llmlab.stats against SciPy (binomtest's Wilson interval) and hand computations."""

import math

import pytest

from llmlab.stats import mean_se, paired_difference, wilson_interval


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
