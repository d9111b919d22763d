"""Alignment tests run torch on one thread: the test machines share two cores (see tests/train/conftest.py).
The tiny model they share (tiny_model_dir, tiny_hf_dir) is in tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conftest import one_thread  # the shared one (tests/conftest.py)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with one_thread():
        yield
