"""The shared mixed-precision policy: bf16 on CUDA by default, on CPU only when asked."""

import pytest
import torch

from llmlab.train.precision import autocast_for, uses_bf16


@pytest.mark.parametrize(("device", "dtype", "want"), [
    ("cpu", "auto", False), ("cuda", "auto", True), ("cpu", "bfloat16", True), ("cuda", "float32", False),
    ("cpu", "float32", False),
])
def test_uses_bf16(device: str, dtype: str, want: bool) -> None:
    assert uses_bf16(torch.device(device), dtype) is want


def test_autocast_for_cpu_is_fp32_unless_asked() -> None:
    x = torch.ones(4, 4)
    with autocast_for(torch.device("cpu"), "auto"):
        assert (x @ x).dtype == torch.float32
    ctx = autocast_for(torch.device("cpu"), "bfloat16")
    for _ in range(2):  # the trainers enter the same context at every micro-step
        with ctx:
            assert (x @ x).dtype == torch.bfloat16
    assert (x @ x).dtype == torch.float32
