"""Reward-model overoptimisation: how far a policy has moved (KL), how the gold score bends as the proxy
keeps rising, and a detector that says when it started.

A policy optimised against a *proxy* reward model (here one trained on length-biased preferences)
first improves the *gold* score too, then, past some distance from the initial policy, keeps
raising the proxy while the gold score falls: Goodhart's law, measured. This module is the
analysis, not the training: pure NumPy functions of logged series, and two plots.

- `bon_kl(n)`: the KL of best-of-n sampling to the base policy (Stiennon et al. 2020,
  https://arxiv.org/abs/2009.01325), so best-of-n points share the RL runs' x axis.
- `gao_bon`, `gao_rl`, `fit_gao`: the functional forms of Gao, Schulman and Hilton 2022,
  "Scaling Laws for Reward Model Overoptimization" (https://arxiv.org/abs/2210.10760),
  gold gain as a function of d = sqrt(KL), fitted by least squares.
- `DivergenceDetector`, `divergence`: fires when, over a sliding window, the proxy rises while the
  gold score falls.
- `correlation`: Pearson r, for reward vs response length (the bias the proxy learned).
- `overoptimisation_png`, `frontier_png`: the Gao et al. Fig. 1 style curves and the reward-KL
  frontier of Rafailov et al. 2023 (DPO, https://arxiv.org/abs/2305.18290, Fig. 2).

Left out: Gao et al.'s scaling of alpha and beta with reward-model size, and their uncertainty
(a point fit only, no confidence intervals); the KL itself is measured by the trainers.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from llmlab.plotting import new_figure, save_figure

Form = Literal["bon", "rl"]
FloatArray = npt.NDArray[np.float64]
Series = tuple[Sequence[float], Sequence[float], Sequence[float]]  # (kl, proxy, gold), one point per entry


def bon_kl(n: int) -> float:
    """KL(best-of-n || base) = log n - (n - 1) / n nats.

    Why: best-of-n is the optimisation-free baseline of Gao et al.; to put it on the same x axis as
    RL we need its KL. The formula is exact when the n samples are distinct and an upper bound
    otherwise (ties make best-of-n closer to the base policy). n=1 is the base policy: 0.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"best-of-n needs an integer n >= 1, got {n!r}")
    return math.log(n) - (n - 1) / n


def gao_bon(d: npt.ArrayLike, alpha: float, beta: float) -> FloatArray:
    """Gao et al.'s best-of-n form: gold gain R(d) = d (alpha - beta d), d = sqrt(KL). Elementwise."""
    d = np.asarray(d, dtype=np.float64)
    return np.asarray(d * (alpha - beta * d))


def gao_rl(d: npt.ArrayLike, alpha: float, beta: float) -> FloatArray:
    """Gao et al.'s RL form: gold gain R(d) = d (alpha - beta log d), d = sqrt(KL). Elementwise.

    subtle: d log d -> 0 as d -> 0, so R(0) = 0 (the form passes through the origin) rather than
    the 0 * -inf = nan that NumPy would compute.
    """
    d = np.asarray(d, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        d_log_d = np.where(d == 0.0, 0.0, d * np.log(d))
    return np.asarray(alpha * d - beta * d_log_d)


FORMS: dict[str, Callable[[npt.ArrayLike, float, float], FloatArray]] = {"bon": gao_bon, "rl": gao_rl}


@dataclass(frozen=True)
class Fit:
    """A fitted Gao et al. curve: gold gain = FORMS[form](d, alpha, beta), d = sqrt(KL).

    r2 is the coefficient of determination over the `n_points` points the fit used; the forms have
    no intercept, so it can be negative when the curve fits worse than the points' mean.
    """

    form: Form
    alpha: float
    beta: float
    r2: float
    n_points: int

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ValueError(f"unknown Gao form {self.form!r}; expected one of {sorted(FORMS)}")

    def predict(self, d: npt.ArrayLike) -> FloatArray:
        """The fitted gold gain at d = sqrt(KL)."""
        return FORMS[self.form](d, self.alpha, self.beta)

    def peak(self) -> float | None:
        """The d > 0 where the fitted gold gain is largest: where more optimisation starts to hurt.

        bon: dR/dd = alpha - 2 beta d = 0 -> d = alpha / (2 beta).
        rl:  dR/dd = alpha - beta (log d + 1) = 0 -> d = exp(alpha / beta - 1).
        A maximum needs beta > 0 (and, for bon, alpha > 0: otherwise the gain only falls and the
        best d is 0, the initial policy); None when there is none.
        """
        if self.beta <= 0:
            return None
        if self.form == "bon":
            return self.alpha / (2 * self.beta) if self.alpha > 0 else None
        return math.exp(self.alpha / self.beta - 1)


def fit_gao(d: npt.ArrayLike, gain: npt.ArrayLike, form: Form, *,
            weights: npt.ArrayLike | None = None) -> Fit:
    """Fit alpha, beta of a Gao et al. form to (d, gain) by weighted least squares.

    `gain` is gold(d) - gold(0): the forms pass through the origin, so the caller subtracts the
    initial policy's score. Both forms are linear in (alpha, beta),
        gain = alpha * x1 + beta * x2,   x1 = R(d; 1, 0) = d,   x2 = R(d; 0, 1) = -d^2 or -d log d,
    so the fit is the closed-form solution of the 2x2 normal equations; no iterative optimiser.
    Points with d <= 0 (the origin says nothing about alpha, beta), a non-finite value, or weight 0
    are dropped. `weights` (default 1) are e.g. the number of samples behind each point.
    """
    if form not in FORMS:
        raise ValueError(f"unknown Gao form {form!r}; expected one of {sorted(FORMS)}")
    d = np.asarray(d, dtype=np.float64).ravel()
    y = np.asarray(gain, dtype=np.float64).ravel()
    w = np.ones_like(d) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if not d.shape == y.shape == w.shape:
        raise ValueError(f"d, gain and weights need one value per point, got {d.size}, {y.size}, {w.size}")
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite and >= 0")
    keep = (d > 0) & np.isfinite(d) & np.isfinite(y) & (w > 0)
    d, y, w = d[keep], y[keep], w[keep]
    if d.size < 2:
        raise ValueError(f"fitting the Gao {form!r} form needs at least 2 points with d = sqrt(KL) > 0 "
                         f"and a finite gain, got {d.size}")

    x1, x2 = FORMS[form](d, 1.0, 0.0), FORMS[form](d, 0.0, 1.0)
    a11, a12, a22 = np.sum(w * x1 * x1), np.sum(w * x1 * x2), np.sum(w * x2 * x2)
    b1, b2 = np.sum(w * x1 * y), np.sum(w * x2 * y)
    det = a11 * a22 - a12 * a12  # >= 0 by Cauchy-Schwarz; 0 iff x1 and x2 are proportional
    if det <= 1e-12 * a11 * a22:
        raise ValueError(f"fitting the Gao {form!r} form needs at least 2 distinct values of d "
                         "(and, for 'rl', not only d = 1)")
    alpha = float((a22 * b1 - a12 * b2) / det)  # Cramer's rule
    beta = float((a11 * b2 - a12 * b1) / det)

    residual = y - (alpha * x1 + beta * x2)
    mean = np.sum(w * y) / np.sum(w)
    ss_res, ss_tot = float(np.sum(w * residual**2)), float(np.sum(w * (y - mean) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan  # every gain equal: R² is undefined
    return Fit(form=form, alpha=alpha, beta=beta, r2=r2, n_points=int(d.size))


def _window_change(x: Sequence[float], y: Sequence[float]) -> float:
    """The least-squares slope of y on x times the span x[-1] - x[0]: how much y rose over the window,
    read off a fitted line so that one noisy point at either end does not decide it.

    Example: x = [0, 1, 2], y = [0, 2, 1] -> slope 0.5, span 2 -> 1.0; y = [0, 3, 0] -> 0.0 (a spike
    in the middle is no rise).
    """
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    xc = xs - xs.mean()
    slope = float(np.sum(xc * (ys - ys.mean())) / np.sum(xc * xc))
    return slope * float(xs[-1] - xs[0])


class DivergenceDetector:
    """The reward-hacking alarm: fires once, at the first step where, over the last `window` points,
    the proxy's fitted rise is > min_rise while the gold score's is < -min_fall.

    Fed one logged point at a time (a trainer calls `update` after each evaluation). Points whose
    proxy or gold is missing (None or NaN: the gold scorer usually runs less often than the
    proxy is logged) are skipped, so the window holds the last `window` points with both values.
    Why a fitted line over a window rather than two consecutive values: RL rewards are noisy, and
    a single-step drop would fire on noise.
    """

    def __init__(self, window: int, min_rise: float, min_fall: float) -> None:
        if window < 2:
            raise ValueError(f"the divergence window needs at least 2 points for a slope, got {window}")
        if min_rise < 0 or min_fall < 0:
            raise ValueError(f"min_rise and min_fall must be >= 0, got {min_rise} and {min_fall}")
        self.window, self.min_rise, self.min_fall = window, min_rise, min_fall
        self.fired_at: int | None = None
        self._points: deque[tuple[int, float, float]] = deque(maxlen=window)  # (step, proxy, gold)

    def update(self, step: int, proxy: float | None, gold: float | None) -> bool:
        """Add one logged point; True only on the step where the detector first fires."""
        if self.fired_at is not None or proxy is None or gold is None:
            return False
        if not (math.isfinite(proxy) and math.isfinite(gold)):
            return False
        if self._points and step <= self._points[-1][0]:
            raise ValueError(f"steps must increase: {step} after {self._points[-1][0]}")
        self._points.append((step, float(proxy), float(gold)))
        if len(self._points) < self.window:
            return False
        steps, proxies, golds = zip(*self._points, strict=True)
        if _window_change(steps, proxies) > self.min_rise and _window_change(steps, golds) < -self.min_fall:
            self.fired_at = step
            return True
        return False


def divergence(steps: Sequence[int], proxy: Sequence[float | None], gold: Sequence[float | None], *,
               window: int, min_rise: float, min_fall: float) -> int | None:
    """The step at which a `DivergenceDetector` fed these series in order first fires, or None."""
    detector = DivergenceDetector(window, min_rise, min_fall)
    for step, p, g in zip(steps, proxy, gold, strict=True):
        if detector.update(step, p, g):
            return step
    return None


def correlation(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson r of x and y; nan when either side is constant (or has < 2 points), where r is undefined.

    Why: the proxy reward model was trained on length-biased preferences, so r(reward, length)
    near 1 with a flat gold score is the hack made visible.
    """
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xs.shape != ys.shape:
        raise ValueError(f"correlation needs two series of one length, got {xs.size} and {ys.size}")
    if xs.size < 2 or np.ptp(xs) == 0 or np.ptp(ys) == 0:  # ptp, not the std: a mean can round
        return math.nan
    xc, yc = xs - xs.mean(), ys - ys.mean()
    return float(np.sum(xc * yc) / math.sqrt(float(np.sum(xc * xc)) * float(np.sum(yc * yc))))


def _sqrt_kl(kl: Sequence[float]) -> FloatArray:
    """d = sqrt(KL), the x axis of Gao et al.; a sampled KL estimate can dip just below 0, read as 0."""
    return np.sqrt(np.clip(np.asarray(kl, dtype=np.float64), 0.0, None))


def overoptimisation_png(path: str | Path, *, rl: Mapping[str, Series], bon: Series | None,
                         fits: Mapping[str, Fit], title: str) -> None:
    """Gao et al. Fig. 1 for our runs: gold score (solid, left axis) and proxy reward (dashed, right axis:
    the two are on different scales) against d = sqrt(KL), one colour per run.

    `rl` maps a run name to its (kl, proxy, gold) series; `bon` is the best-of-n series, drawn as
    markers (x from `bon_kl`). `fits` maps a run name, or "best-of-n", to its `fit_gao` curve, drawn
    dotted in that series' colour from the gold score at the series' smallest KL (the gold(0) the
    caller subtracted before fitting).
    """
    series: dict[str, Series] = dict(rl)
    if bon is not None:
        series["best-of-n"] = bon
    unknown = sorted(set(fits) - set(series))
    if unknown:
        raise ValueError(f"fits {unknown} name no series; expected names from {sorted(series)}")
    colours = {name: f"C{i}" for i, name in enumerate(series)}

    fig, ax_gold = new_figure(width=12.0, height=5.0)
    ax_proxy = ax_gold.twinx()
    for name, (kl, proxy, gold) in series.items():
        d = _sqrt_kl(kl)
        markers = name == "best-of-n"  # separate n, not a trajectory: no line between them
        for ax, values, line, marker, what in ((ax_gold, gold, "-", "o", "gold"),
                                               (ax_proxy, proxy, "--", "x", "proxy")):
            y = np.asarray(values, dtype=np.float64)
            logged = np.isfinite(y)  # gold is scored less often than the proxy is logged: join what exists
            ax.plot(d[logged], y[logged], color=colours[name], label=f"{name}: {what}",
                    linestyle="none" if markers else line, marker=marker if markers else None)
    for name, fit in fits.items():
        kl, _, gold = series[name]
        d, y = _sqrt_kl(kl), np.asarray(gold, dtype=np.float64)
        d, y = d[np.isfinite(y)], y[np.isfinite(y)]
        if d.size == 0:
            raise ValueError(f"fit {name!r}: its series has no gold score to start the curve from")
        grid = np.linspace(0.0, float(d.max()), 200)
        gold0 = float(y[np.argmin(d)])
        ax_gold.plot(grid, gold0 + fit.predict(grid), color=colours[name], linestyle=":",
                     label=f"{name}: Gao {fit.form} fit (R²={fit.r2:.2f})")
    ax_gold.set_xlabel("sqrt(KL(π ‖ π_init))  (nats^0.5)")
    ax_gold.set_ylabel("gold score (solid)")
    ax_proxy.set_ylabel("proxy reward (dashed)")
    handles_gold, labels_gold = ax_gold.get_legend_handles_labels()
    handles_proxy, labels_proxy = ax_proxy.get_legend_handles_labels()
    if handles_gold or handles_proxy:
        # beside the axes: inside, it hides the start of every curve, where the gold score moves first
        ax_proxy.legend(handles_gold + handles_proxy, labels_gold + labels_proxy, fontsize=8, loc="upper left",
                        bbox_to_anchor=(1.08, 1.0), borderaxespad=0.0)
    ax_gold.set_title(title)
    save_figure(fig, path)


def frontier_png(path: str | Path, points: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                 title: str) -> None:
    """The reward-KL frontier (DPO paper, Fig. 2): gold score against KL to the reference, one
    marker-and-line per method (e.g. "dpo", "ppo", "grpo"), points joined in order of KL.

    Why: a method is better if it reaches more gold score for the same KL budget; up and to the
    left wins. `points` maps a method to its (kl, gold) values, one per run or checkpoint.
    """
    fig, ax = new_figure()
    for name, (kl, gold) in points.items():
        kls, golds = np.asarray(kl, dtype=np.float64), np.asarray(gold, dtype=np.float64)
        if kls.shape != golds.shape:
            raise ValueError(f"frontier {name!r}: {kls.size} KL values but {golds.size} gold scores")
        order = np.argsort(kls)
        ax.plot(kls[order], golds[order], "o-", label=name, linewidth=1.2)
    ax.set_xlabel("KL(π ‖ π_ref)  (nats)")
    ax.set_ylabel("gold score")
    if points:
        ax.legend()
    ax.set_title(title)
    save_figure(fig, path)
