"""Uncertainty of evaluation figures: every rate and difference a report prints comes with its n and an
interval from here. Pure Python (reports that import only this stay light)."""

from __future__ import annotations

import math
from collections.abc import Sequence

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
