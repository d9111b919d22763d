"""llmlab model folders: the config, the weights in safetensors, and the tokenizer, side by side.

    DIR/
        model.yaml           the ModelConfig (human-readable; the one file that says "llmlab model")
        model.safetensors    the weights; a tied head is stored once, as the embedding
        tokenizer.json       the tokenizer, HF format (and vocab.txt), when the model has one

Weights are never pickled: safetensors only. Every file is written atomically, so an
interrupted save leaves the previous files whole. `load_model` also accepts a Hugging
Face Llama-architecture folder (config.json + safetensors) and converts it (hf_io.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from llmlab.config import ConfigError, from_dict, read_yaml, to_yaml
from llmlab.errors import UserError
from llmlab.files import atomic_open, write_text_atomic
from llmlab.model.config import ModelConfig

if TYPE_CHECKING:
    from llmlab.model.llama import Transformer
    from llmlab.tokenizers.base import Tokenizer

CONFIG_FILE = "model.yaml"
WEIGHTS_FILE = "model.safetensors"


def save_model(model: Transformer, directory: str | Path, tokenizer: Tokenizer | None = None) -> None:
    save_weights(model.cfg, model.state_dict(), directory, tokenizer)


def save_weights(cfg: ModelConfig, state: dict[str, torch.Tensor], directory: str | Path,
                 tokenizer: Tokenizer | None = None) -> None:
    """Write a model folder from a config and a state dict (e.g. one gathered from FSDP shards)."""
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in state.items() if k not in ("cos", "sin")}
    if cfg.tie_embeddings:
        state.pop("head.weight", None)  # the same tensor as embed.weight; safetensors refuses shared storage
    with atomic_open(directory / WEIGHTS_FILE, "wb") as f:
        f.write(save(state, metadata={"format": "pt", "llmlab": "model"}))
    write_text_atomic(directory / CONFIG_FILE, to_yaml(cfg))
    if tokenizer is not None:
        tokenizer.save(directory)


def read_model_config(directory: str | Path) -> ModelConfig:
    path = Path(directory) / CONFIG_FILE
    try:
        return from_dict(ModelConfig, read_yaml(path))
    except ConfigError as e:
        raise UserError(f"{path}: {e}") from None


def is_llmlab_model(directory: str | Path) -> bool:
    return (Path(directory) / CONFIG_FILE).is_file()


def load_model(directory: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
               overrides: dict[str, Any] | None = None) -> tuple[Transformer, Tokenizer | None]:
    """(model in eval mode, tokenizer or None) from an llmlab model folder or a local HF Llama folder.

    `overrides` replaces config fields that do not change the weights (attention backend,
    dropout, max_seq_len for longer rotary tables).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: no such model folder")
    if not is_llmlab_model(directory):
        if (directory / "config.json").is_file():
            from llmlab.model.hf_io import from_hf

            return from_hf(directory, device=device, dtype=dtype, overrides=overrides)
        raise UserError(f"{directory}: not a model folder (no {CONFIG_FILE}, no HF config.json)")
    from dataclasses import replace

    from llmlab.model.llama import Transformer

    cfg = read_model_config(directory)
    if overrides:
        cfg = replace(cfg, **overrides)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise UserError(f"{weights}: missing")
    state = read_safetensors(weights)
    if cfg.tie_embeddings:
        state["head.weight"] = state["embed.weight"]
    with torch.device("meta"):
        model = Transformer(cfg)
    model = model.to_empty(device=device)
    if cfg.tie_embeddings:
        model.head.weight = model.embed.weight  # subtle: to_empty gives each module its own new tensor
    load_state(model, state, source=str(weights))
    if dtype is not None:
        model = model.to(dtype)
    return model.eval(), load_model_tokenizer(directory)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a truncated or foreign file is a one-line UserError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

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
    from llmlab.model.llama import rotary_tables

    return rotary_tables(model.cfg, device=model.embed.weight.device)


def load_model_tokenizer(directory: str | Path) -> Tokenizer | None:
    if not (Path(directory) / "tokenizer.json").is_file():
        return None
    from llmlab.tokenizers.hf_io import load_tokenizer

    return load_tokenizer(directory)
