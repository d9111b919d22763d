"""Shared by the model tests: the tiny config, a seeded model with visible weights, one torch thread."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from llmlab.model.config import ModelConfig
from llmlab.model.llama import Transformer

TINY = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, d_ff=48, max_seq_len=64)


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """Every model test runs torch on one thread (tests/conftest.py says why)."""


def tiny_model(seed: int = 0, std: float = 0.5, **overrides) -> Transformer:
    """A seeded model whose every parameter (norm weights and biases too) is Normal(0, std)."""
    torch.manual_seed(seed)
    model = Transformer(replace(TINY, **overrides))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model.eval()
