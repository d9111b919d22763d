"""benchmarks/gpu_check.py is run by hand where a GPU is lent; here it must at least import, parse its
arguments and say plainly that it has nothing to check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the script runs its checks (minutes)")
def test_without_cuda_it_says_so_and_exits_0():
    out = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "gpu_check: no CUDA device here, nothing to check (run it on a GPU machine)"
