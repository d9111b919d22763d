"""Weights in and out of a model: safetensors files, a checked state-dict load, and the tokenizer beside them.

The pieces that both model folders (io.py) and Hugging Face folders (hf_io.py) read with: a truncated
or foreign safetensors file, or a state dict that does not fit the config, is a one-line UserError.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from llmlab.errors import UserError
from llmlab.model.llama import Transformer, rotary_tables
from llmlab.tokenizers.base import Tokenizer
from llmlab.tokenizers.hf_io import load_tokenizer


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a truncated or foreign file is a one-line UserError."""
    try:
        return load_file(path)
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0][:120]})") from None


def load_state(model: Transformer, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Copy `state` into `model`, naming missing, unexpected and mis-shaped tensors in one line."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise UserError(f"{source}: weights do not match the config (missing: {missing[:4]}, "
                        f"unexpected: {unexpected[:4]})")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise UserError(f"{source}: {name} has shape {tuple(tensor.shape)}, the config needs "
                            f"{tuple(expected[name].shape)}")
    model.load_state_dict(state, strict=True, assign=False)
    model.cos, model.sin = _rotary(model)


def _rotary(model: Transformer) -> tuple[torch.Tensor, torch.Tensor]:
    return rotary_tables(model.cfg, device=model.embed.weight.device)


def load_model_tokenizer(directory: str | Path) -> Tokenizer | None:
    if not (Path(directory) / "tokenizer.json").is_file():
        return None
    return load_tokenizer(directory)
