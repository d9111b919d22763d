"""The inference tests use the model tests' tiny seeded model, on one torch thread."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """Every inference test runs torch on one thread (tests/conftest.py says why)."""
