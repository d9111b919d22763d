"""Shared by the model tests: the tiny config, a seeded model with visible weights, one torch thread."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch

from llmlab.model.config import ModelConfig
from llmlab.model.llama import Transformer

TINY = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, d_ff=48, max_seq_len=64)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: intra-op threads only add synchronisation on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(seed: int = 0, std: float = 0.5, **overrides) -> Transformer:
    """A seeded model whose every parameter (norm weights and biases too) is Normal(0, std)."""
    torch.manual_seed(seed)
    model = Transformer(replace(TINY, **overrides))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model.eval()
