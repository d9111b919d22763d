"""Tokens per second and model FLOPs utilisation (MFU, PaLM app. B) against a measured peak.

The peak is measured, not looked up: the best of a few large matmuls in the training
dtype on this device, so MFU says how much of what this machine's matmul can do the
whole training step achieves (a data-sheet peak would flatter nothing on CPUs, whose
peak depends on cores, clocks and the BLAS).
"""

from __future__ import annotations

import time

import torch


def measure_matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, *, n: int = 1024,
                        repeats: int = 5) -> float:
    """FLOP/s of the best of `repeats` (n x n) @ (n x n) matmuls (2 n^3 FLOPs each)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)  # warm-up: BLAS threads, kernels, allocator
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


class Throughput:
    """Tokens/s and MFU over the interval since the last `read` (time in `pause` excluded)."""

    def __init__(self, flops_per_token: float, peak_flops: float) -> None:
        self.flops_per_token, self.peak = flops_per_token, peak_flops
        self.tokens, self.seconds, self._start = 0, 0.0, time.perf_counter()

    def add(self, tokens: int) -> None:
        now = time.perf_counter()
        self.seconds += now - self._start
        self.tokens += tokens
        self._start = now

    def restart(self) -> None:
        """Start timing from now (call after work that should not count, e.g. evaluation)."""
        self._start = time.perf_counter()

    def read(self) -> tuple[float, float]:
        """(tokens/s, MFU) over the interval; then start a new interval."""
        rate = self.tokens / self.seconds if self.seconds > 0 else 0.0
        mfu = rate * self.flops_per_token / self.peak if self.peak > 0 else 0.0
        self.tokens, self.seconds = 0, 0.0
        return rate, mfu
