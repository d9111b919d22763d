"""lr_at: linear warmup then cosine decay to a floor, checked against values worked by hand."""

from __future__ import annotations

import itertools
import math

import pytest

from llmlab.train.schedule import lr_at

# lr 1.0, 4 warmup steps, 12 steps in all, floor 0.1: decay runs over steps 4..12 (8 steps).
KW = {"lr": 1.0, "warmup_steps": 4, "max_steps": 12, "min_lr_ratio": 0.1}


@pytest.mark.parametrize(("step", "expected"), [(0, 0.25), (1, 0.5), (2, 0.75), (3, 1.0)])
def test_warmup_is_a_linear_ramp_that_reaches_the_peak(step: int, expected: float) -> None:
    """lr * (step + 1) / warmup: 1/4, 2/4, 3/4, 4/4 (the first step already trains)."""
    assert lr_at(step, **KW) == pytest.approx(expected)


def test_cosine_starts_at_the_peak() -> None:
    """step 4: progress 0, floor + (1 - floor) * (1 + cos 0) / 2 = 1.0."""
    assert lr_at(4, **KW) == pytest.approx(1.0)


def test_cosine_midpoint_is_halfway_between_peak_and_floor() -> None:
    """step 8: progress 4/8 = 0.5, cos(pi/2) = 0 -> floor + (lr - floor) / 2 = 0.1 + 0.9 / 2 = 0.55."""
    assert lr_at(8, **KW) == pytest.approx(0.55)


def test_cosine_quarter_point() -> None:
    """step 6: progress 2/8 = 0.25 -> 0.1 + 0.9 * (1 + cos(pi/4)) / 2 = 0.1 + 0.9 * 0.853553 = 0.868198."""
    assert lr_at(6, **KW) == pytest.approx(0.1 + 0.9 * (1 + math.sqrt(0.5)) / 2)
    assert lr_at(6, **KW) == pytest.approx(0.868198, abs=1e-6)


@pytest.mark.parametrize("step", [12, 13, 100, 10_000])
def test_floor_at_and_past_max_steps(step: int) -> None:
    """progress is clamped at 1: cos(pi) = -1 -> the floor, lr * min_lr_ratio = 0.1, forever after."""
    assert lr_at(step, **KW) == pytest.approx(0.1)


def test_decay_is_monotone_after_warmup() -> None:
    values = [lr_at(s, **KW) for s in range(3, 20)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_no_warmup_starts_at_the_peak_and_zero_floor_ends_at_zero() -> None:
    """warmup 0: step 0 has progress 0 -> lr. min_lr_ratio 0: the end is 0; midpoint 10 of 20 -> lr / 2."""
    kw = {"lr": 3e-4, "warmup_steps": 0, "max_steps": 20, "min_lr_ratio": 0.0}
    assert lr_at(0, **kw) == pytest.approx(3e-4)
    assert lr_at(10, **kw) == pytest.approx(1.5e-4)
    assert lr_at(20, **kw) == pytest.approx(0.0, abs=1e-12)


def test_scales_with_lr() -> None:
    """Every value is proportional to lr (the floor is lr * min_lr_ratio)."""
    for step in range(15):
        assert lr_at(step, **{**KW, "lr": 3e-4}) == pytest.approx(3e-4 * lr_at(step, **KW))
