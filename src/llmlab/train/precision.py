"""The mixed-precision policy every trainer shares: bf16 autocast on GPU, fp32 on CPU.

This CPU has no native bf16 (it is slower than fp32 here), so `dtype=auto` means bf16 on CUDA
only; `dtype=bfloat16` asks for it anywhere.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch


def uses_bf16(device: torch.device, dtype: str) -> bool:
    return dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda")


def autocast_for(device: torch.device, dtype: str) -> Any:
    """A reusable context for the forward passes: bf16 autocast, or a no-op."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if uses_bf16(device, dtype) else contextlib.nullcontext()
