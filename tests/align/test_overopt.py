"""The overoptimisation analysis (llmlab.align.overopt) against hand-worked cases and NumPy.

Numbers that recur:

    bon_kl(2)  = log 2 - 1/2    = 0.193147
    bon_kl(16) = log 16 - 15/16 = 1.835089

Divergence windows of 3 evenly spaced points: the least-squares slope is (y3 - y1) / (2h) and the span
is 2h, so the fitted change over the window is just y3 - y1. For 4 evenly spaced points, x centred
at (-1.5, -0.5, 0.5, 1.5) h with sum x^2 = 5 h^2 and span 3h, it is 0.9 (y4 - y1) + 0.3 (y3 - y2).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmlab.align.overopt import (
    DivergenceDetector,
    Fit,
    bon_kl,
    correlation,
    divergence,
    fit_gao,
    frontier_png,
    gao_bon,
    gao_rl,
    overoptimisation_png,
)

PNG_HEADER = b"\x89PNG\r\n\x1a\n"


# --- bon_kl ---

def test_bon_kl_hand_values() -> None:
    assert bon_kl(1) == 0.0
    assert bon_kl(2) == pytest.approx(math.log(2) - 0.5, abs=1e-15)
    assert bon_kl(2) == pytest.approx(0.193147, abs=1e-6)
    assert bon_kl(16) == pytest.approx(1.835089, abs=1e-6)


def test_bon_kl_is_the_limit_of_the_exact_kl_over_many_distinct_outcomes() -> None:
    """Base policy uniform over M ranked outcomes; best-of-n picks outcome i (1-based rank) with
    p_i = (i/M)^n - ((i-1)/M)^n. KL(p || uniform) rises to log n - (n-1)/n as M grows, from below."""
    M, n = 100_000, 16
    i = np.arange(1, M + 1, dtype=np.float64)
    p = (i / M) ** n - ((i - 1) / M) ** n
    p = p[p > 0]
    exact = float(np.sum(p * np.log(p * M)))
    assert exact <= bon_kl(n)
    assert exact == pytest.approx(bon_kl(n), abs=1e-3)


@pytest.mark.parametrize("n", [0, -3, 2.0, True])
def test_bon_kl_rejects_what_is_not_a_positive_integer(n: object) -> None:
    with pytest.raises(ValueError, match="n >= 1"):
        bon_kl(n)  # type: ignore[arg-type]


# --- the Gao et al. forms and their fit ---

D = np.array([0.5, 1.0, 1.5, 2.0, 3.0, 4.0])
CASES = [("bon", gao_bon, 1.3, 0.4), ("rl", gao_rl, 0.8, 0.3)]


def test_gao_forms_by_hand() -> None:
    """bon: 2 (1.3 - 0.4 * 2) = 1.0; rl: e (0.8 - 0.3 log e) = 0.5 e; both 0 at the origin."""
    assert float(gao_bon(2.0, 1.3, 0.4)) == pytest.approx(1.0)
    assert float(gao_rl(math.e, 0.8, 0.3)) == pytest.approx(0.5 * math.e)
    assert float(gao_bon(0.0, 1.3, 0.4)) == 0.0
    assert float(gao_rl(0.0, 0.8, 0.3)) == 0.0  # the d log d -> 0 limit, not nan


@pytest.mark.parametrize(("form", "curve", "alpha", "beta"), CASES)
def test_fit_gao_recovers_alpha_beta_from_exact_data(form: str, curve, alpha: float, beta: float) -> None:
    """The origin (d = 0, with a nonsense gain) is dropped; the other 6 points fit exactly."""
    d = np.concatenate([[0.0], D])
    gain = np.concatenate([[5.0], curve(D, alpha, beta)])
    fit = fit_gao(d, gain, form)  # type: ignore[arg-type]
    assert (fit.form, fit.n_points) == (form, 6)
    assert fit.alpha == pytest.approx(alpha, rel=1e-10)
    assert fit.beta == pytest.approx(beta, rel=1e-10)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(fit.predict(D), curve(D, alpha, beta), rtol=1e-10)


@pytest.mark.parametrize(("form", "curve", "alpha", "beta"), CASES)
def test_fit_gao_recovers_alpha_beta_from_noisy_data(form: str, curve, alpha: float, beta: float) -> None:
    rng = np.random.default_rng(0)
    d = np.linspace(0.2, 4.0, 40)
    gain = curve(d, alpha, beta) + rng.normal(0.0, 0.01, size=d.shape)
    fit = fit_gao(d, gain, form)  # type: ignore[arg-type]
    assert fit.alpha == pytest.approx(alpha, rel=0.05)
    assert fit.beta == pytest.approx(beta, rel=0.05)
    assert 0.9 < fit.r2 < 1.0


def test_fit_gao_matches_numpy_lstsq_and_weights_count_as_repeats() -> None:
    """Weighted least squares with integer weights is ordinary least squares on repeated points."""
    rng = np.random.default_rng(1)
    d = np.array([0.3, 0.9, 1.4, 2.2, 3.1])
    gain = gao_rl(d, 1.0, 0.5) + rng.normal(0.0, 0.05, size=d.shape)
    weights = np.array([1, 3, 1, 2, 1])
    fit = fit_gao(d, gain, "rl", weights=weights)
    d_rep, gain_rep = np.repeat(d, weights), np.repeat(gain, weights)
    X = np.stack([d_rep, -d_rep * np.log(d_rep)], axis=1)  # (N, 2): columns for alpha, beta
    (alpha, beta), *_ = np.linalg.lstsq(X, gain_rep, rcond=None)
    assert (fit.alpha, fit.beta) == pytest.approx((alpha, beta), rel=1e-10)
    assert fit.n_points == 5
    repeated = fit_gao(d_rep, gain_rep, "rl")
    assert (repeated.alpha, repeated.beta, repeated.r2) == pytest.approx((fit.alpha, fit.beta, fit.r2), rel=1e-10)


@pytest.mark.parametrize(("d", "gain", "match"), [
    ([0.0, 1.0], [0.0, 0.5], "at least 2 points"),
    ([1.0, -1.0, float("nan")], [0.5, 0.1, 0.2], "at least 2 points"),
    ([2.0, float("inf")], [0.5, 0.7], "at least 2 points"),
    ([1.5, 1.5, 1.5], [0.5, 0.6, 0.7], "2 distinct values"),
    ([1.0, 2.0], [0.5], "one value per point"),
])
def test_fit_gao_refuses_too_few_points(d: list[float], gain: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_gao(d, gain, "bon")


def test_fit_gao_refuses_an_unknown_form_and_negative_weights() -> None:
    with pytest.raises(ValueError, match="unknown Gao form"):
        fit_gao([1.0, 2.0], [0.5, 0.6], "ppo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weights"):
        fit_gao([1.0, 2.0], [0.5, 0.6], "bon", weights=[1.0, -1.0])


def test_peak_hand_values() -> None:
    """bon: alpha / (2 beta) = 2 / (2 * 0.5) = 2; rl: exp(alpha / beta - 1) = exp(2 / 1 - 1) = e."""
    bon, rl = Fit("bon", 2.0, 0.5, 1.0, 3), Fit("rl", 2.0, 1.0, 1.0, 3)
    assert bon.peak() == pytest.approx(2.0)
    assert rl.peak() == pytest.approx(math.e)
    for fit in (bon, rl):  # a maximum: the curve is lower on either side
        top = fit.peak()
        assert top is not None
        assert float(fit.predict(top)) > float(fit.predict(top * 0.99))
        assert float(fit.predict(top)) > float(fit.predict(top * 1.01))
    assert Fit("bon", 2.0, 0.0, 1.0, 3).peak() is None  # never turns down
    assert Fit("rl", 2.0, -0.1, 1.0, 3).peak() is None
    assert Fit("bon", -1.0, 0.5, 1.0, 3).peak() is None  # only falls: the best d is 0


# --- the divergence detector ---

STEPS = [0, 10, 20, 30, 40, 50, 60]
PROXY = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # rises 2 over every window of 3


def test_divergence_fires_where_gold_turns_down() -> None:
    """window 3, change = y3 - y1. Gold 0, 1, 2, 2, 1, 0, -1: windows ending at 20, 30, 40 change
    by +2, +1, -1; -1 < -0.5 first at step 40."""
    gold = [0.0, 1.0, 2.0, 2.0, 1.0, 0.0, -1.0]
    assert divergence(STEPS, PROXY, gold, window=3, min_rise=0.5, min_fall=0.5) == 40


def test_divergence_fits_a_line_over_the_window() -> None:
    """window 4, change = 0.9 (y4 - y1) + 0.3 (y3 - y2). Gold 0, 1, 2, 2, 1, 0, -1: windows ending at
    30, 40, 50 change by 2.1, 0, -2.1: fires at 50. Gold 1, 0.5, 2, 0.4 ends 0.6 lower than it began,
    but the fitted change is -0.54 + 0.45 = -0.09: no fire."""
    gold = [0.0, 1.0, 2.0, 2.0, 1.0, 0.0, -1.0]
    assert divergence(STEPS, PROXY, gold, window=4, min_rise=0.5, min_fall=0.5) == 50
    assert divergence(STEPS[:4], PROXY[:4], [1.0, 0.5, 2.0, 0.4], window=4, min_rise=0.5, min_fall=0.5) is None


def test_divergence_stays_quiet_when_both_rise_or_gold_falls_within_min_fall() -> None:
    """Flat-ish gold 0, 1, 2, 2, 1.8, 1.7, 1.6: the window changes are +2, +1, -0.2, -0.3, -0.2;
    none below -0.5, but -0.3 at step 50 is below -0.25."""
    rising = [0.5 * p for p in PROXY]
    assert divergence(STEPS, PROXY, rising, window=3, min_rise=0.5, min_fall=0.5) is None
    flat = [0.0, 1.0, 2.0, 2.0, 1.8, 1.7, 1.6]
    assert divergence(STEPS, PROXY, flat, window=3, min_rise=0.5, min_fall=0.5) is None
    assert divergence(STEPS, PROXY, flat, window=3, min_rise=0.5, min_fall=0.25) == 50


def test_divergence_needs_the_proxy_to_rise() -> None:
    """Both falling is a bad run, not reward hacking."""
    falling = [0.0, 1.0, 2.0, 2.0, 1.0, 0.0, -1.0]
    assert divergence(STEPS, falling, falling, window=3, min_rise=0.5, min_fall=0.5) is None


def test_divergence_ignores_missing_gold() -> None:
    """Gold scored every other step: the logged points are steps 0, 2, 4, 6, 8, 10 with gold 0, 1, 2,
    2, 1, 0, evenly spaced again; the window (2, 2, 1) ending at step 8 changes by -1: fires at 8."""
    steps = list(range(11))
    proxy = [float(s) for s in steps]
    nan = float("nan")
    gold = [0.0, nan, 1.0, nan, 2.0, None, 2.0, nan, 1.0, None, 0.0]
    assert divergence(steps, proxy, gold, window=3, min_rise=0.5, min_fall=0.5) == 8


def test_detector_fires_once_and_remembers_when() -> None:
    gold = [0.0, 1.0, 2.0, 2.0, 1.0, 0.0, -1.0]
    detector = DivergenceDetector(window=3, min_rise=0.5, min_fall=0.5)
    fired = [detector.update(s, p, g) for s, p, g in zip(STEPS, PROXY, gold, strict=True)]
    assert fired == [False, False, False, False, True, False, False]
    assert detector.fired_at == 40
    assert detector.update(70, 7.0, -2.0) is False  # still diverging, but it has already fired
    assert detector.fired_at == 40


def test_detector_refuses_bad_settings_and_steps_that_go_back() -> None:
    with pytest.raises(ValueError, match="at least 2 points"):
        DivergenceDetector(window=1, min_rise=0.5, min_fall=0.5)
    with pytest.raises(ValueError, match=">= 0"):
        DivergenceDetector(window=3, min_rise=-0.1, min_fall=0.5)
    detector = DivergenceDetector(window=3, min_rise=0.5, min_fall=0.5)
    detector.update(5, 1.0, 1.0)
    with pytest.raises(ValueError, match="steps must increase"):
        detector.update(5, 2.0, 1.0)
    with pytest.raises(ValueError):
        divergence([0, 1], [0.0, 1.0], [0.0], window=2, min_rise=0.0, min_fall=0.0)


# --- correlation ---

def test_correlation_matches_numpy_corrcoef() -> None:
    rng = np.random.default_rng(2)
    length = rng.integers(5, 200, size=50).astype(float)
    reward = 0.01 * length + rng.normal(0.0, 0.5, size=50)
    assert correlation(length, reward) == pytest.approx(np.corrcoef(length, reward)[0, 1], abs=1e-12)
    assert correlation([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)


def test_correlation_is_nan_when_a_side_is_constant() -> None:
    assert math.isnan(correlation([0.1, 0.1, 0.1], [1.0, 2.0, 3.0]))
    assert math.isnan(correlation([1.0, 2.0, 3.0], [7.0, 7.0, 7.0]))
    assert math.isnan(correlation([1.0], [2.0]))
    with pytest.raises(ValueError, match="one length"):
        correlation([1.0, 2.0], [1.0])


# --- plots ---

def test_overoptimisation_png_writes_a_png(tmp_path) -> None:
    kl = [0.0, 0.5, 1.0, 2.0, 4.0, 8.0]
    d = np.sqrt(kl)
    nan = float("nan")
    rl = {
        "ppo": (kl, [0.0, 0.5, 1.0, 1.4, 1.8, 2.1], [0.30, 0.40, 0.45, 0.44, 0.40, 0.30]),
        "grpo": (kl, [0.0, 0.4, 0.9, 1.5, 2.0, 2.4], [0.30, nan, 0.42, nan, 0.38, 0.25]),
    }
    n = [1, 2, 4, 8, 16]
    bon_kls = [bon_kl(k) for k in n]
    bon = (bon_kls, [0.0, 0.3, 0.6, 0.8, 1.0], [0.30, 0.36, 0.40, 0.41, 0.40])
    fits = {
        "ppo": fit_gao(d, np.array(rl["ppo"][2]) - 0.30, "rl"),
        "best-of-n": fit_gao(np.sqrt(bon_kls), np.array(bon[2]) - 0.30, "bon"),
    }
    path = tmp_path / "overopt.png"
    overoptimisation_png(path, rl=rl, bon=bon, fits=fits, title="proxy vs gold")
    assert path.stat().st_size > 0
    assert path.read_bytes()[:8] == PNG_HEADER
    with pytest.raises(ValueError, match="name no series"):
        overoptimisation_png(tmp_path / "x.png", rl=rl, bon=None, fits=fits, title="no best-of-n")


def test_frontier_png_writes_a_png(tmp_path) -> None:
    points = {
        "dpo": ([0.5, 1.0, 2.0, 4.0], [0.40, 0.45, 0.50, 0.52]),
        "ppo": ([2.0, 0.5, 4.0], [0.46, 0.35, 0.44]),  # not in KL order: joined in KL order
        "grpo": ([1.0, 3.0], [0.42, 0.47]),
    }
    path = tmp_path / "frontier.png"
    frontier_png(path, points, "reward vs KL")
    assert path.stat().st_size > 0
    assert path.read_bytes()[:8] == PNG_HEADER
