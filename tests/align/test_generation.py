"""align/generation.py: answers of llmlab and HF policies, prompts longer than the context included."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmlab.align.generation import chat_responses
from llmlab.align.models import context_length, load_policy


@pytest.mark.parametrize("kind", ["llmlab", "hf"])
def test_a_prompt_longer_than_the_context_keeps_its_end(kind: str, tiny_model_dir: Path, tiny_hf_dir: Path) -> None:
    """The tiny model has 128 positions and the prompt renders to more: it is answered (its start cut, so
    that 8 new tokens fit), the same alone and batched."""
    model, tok = load_policy(str(tiny_model_dir if kind == "llmlab" else tiny_hf_dir), device="cpu")
    assert context_length(model) == 128
    long = "word " * 120 + "What is 2 + 3?"
    ids = tok.render_prompt(long)
    assert len(ids) > 128
    torch.manual_seed(0)
    (answer,) = chat_responses(model, tok, [long], max_new_tokens=8, batch_size=1, device=torch.device("cpu"))
    assert isinstance(answer, str)
    again = chat_responses(model, tok, [long, long], max_new_tokens=8, batch_size=2, device=torch.device("cpu"))
    assert again == [answer, answer]
