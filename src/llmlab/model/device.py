"""Which torch device a command runs on: `auto` (CUDA when there is one), `cpu` or `cuda`."""

from __future__ import annotations

import torch

from llmlab.errors import UserError


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """`auto` is CUDA device `local_rank` when CUDA is available, else the CPU; `cuda` without CUDA is an error."""
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError("train.device=cuda but no CUDA device is available")
    return torch.device("cuda", local_rank)
