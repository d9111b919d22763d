"""Uncertainty of evaluation figures: every rate and difference a report prints comes with its n and an
interval from here. Pure Python (reports that import only this stay light)."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from typing import Any

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: two-sided 95% intervals


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for a proportion (Wilson 1927). Unlike the normal approximation p ± z·SE
    it stays inside [0, 1] and is not empty at 0 or n successes, which small per-family counts hit often."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # the bounds hold p exactly (at 0 or n successes rounding would put it a hair outside)
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def mean_se(xs: Sequence[float]) -> tuple[float, float]:
    """(mean, standard error of the mean); the SE is NaN for fewer than two values."""
    if not xs:
        return math.nan, math.nan
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, math.nan
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    return mean, math.sqrt(var / len(xs))


def paired_difference(before: Sequence[float], after: Sequence[float]) -> tuple[float, float]:
    """(mean of after - before, its standard error) over the same prompts: the paired test of whether
    training changed a score (more sensitive than comparing two independent proportions)."""
    if len(before) != len(after) or not before:
        raise ValueError("need two equally long, non-empty lists of scores")
    return mean_se([a - b for a, b in zip(after, before, strict=True)])


def bootstrap_interval(xs: Sequence[Any], *, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                       stat: Callable[[Sequence[Any]], float] | None = None) -> tuple[float, float]:
    """Percentile bootstrap interval of `stat` (default: the mean) over resamples of `xs` (Efron 1979).
    The items may be records (a document's loss and token count) when `stat` knows how to read them.

    For figures with no closed-form interval (a mean length, a win rate with ties, a kappa): the same
    seed gives the same interval, so reports are reproducible. Resamples whose stat is NaN (a kappa of a
    resample in which a rater gave one label only) are left out; NaNs for an empty list or when every
    resample's stat is NaN."""
    if not xs:
        return math.nan, math.nan
    stat = stat or (lambda v: sum(v) / len(v))
    rng = random.Random(seed)
    n = len(xs)
    resampled = (stat([xs[rng.randrange(n)] for _ in range(n)]) for _ in range(n_boot))
    values = sorted(v for v in resampled if not math.isnan(v))  # NaN would break the sort's order
    if not values:
        return math.nan, math.nan
    lo = values[math.floor((1 - level) / 2 * (len(values) - 1))]
    hi = values[math.ceil((1 + level) / 2 * (len(values) - 1))]
    return lo, hi


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Cohen's kappa of two raters' labels of the same items: agreement beyond what their label
    frequencies give by chance; 1 is perfect, 0 chance, below 0 worse than chance. NaN when chance
    agreement is already 1 (both raters always give one and the same label)."""
    if len(a) != len(b) or not a:
        raise ValueError("need two equally long, non-empty label lists")
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[k] * cb[k] for k in ca) / (n * n)
    return math.nan if expected == 1 else (observed - expected) / (1 - expected)


def fleiss_kappa(counts: Sequence[Sequence[int]]) -> float:
    """Fleiss' kappa (Fleiss 1971) of many raters: `counts[i][j]` raters put item i in category j, the
    same number of raters per item. NaN when chance agreement is 1."""
    if not counts:
        raise ValueError("need at least one item")
    raters = sum(counts[0])
    if raters < 2 or any(sum(row) != raters for row in counts):
        raise ValueError("every item needs the same number (at least 2) of ratings")
    n = len(counts)
    p_j = [sum(row[j] for row in counts) / (n * raters) for j in range(len(counts[0]))]
    p_i = [(sum(c * c for c in row) - raters) / (raters * (raters - 1)) for row in counts]
    p_bar, p_e = sum(p_i) / n, sum(p * p for p in p_j)
    return math.nan if p_e == 1 else (p_bar - p_e) / (1 - p_e)
