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

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save

from llmlab.config import ConfigError, from_dict, read_yaml, to_yaml
from llmlab.errors import UserError
from llmlab.files import atomic_open, write_text_atomic
from llmlab.model.config import ModelConfig
from llmlab.model.hf_io import from_hf
from llmlab.model.llama import Transformer
from llmlab.model.weights import load_model_tokenizer, load_state, read_safetensors
from llmlab.tokenizers.base import Tokenizer

CONFIG_FILE = "model.yaml"
WEIGHTS_FILE = "model.safetensors"


def save_model(model: Transformer, directory: str | Path, tokenizer: Tokenizer | None = None) -> None:
    save_weights(model.cfg, model.state_dict(), directory, tokenizer)


def save_weights(cfg: ModelConfig, state: dict[str, torch.Tensor], directory: str | Path,
                 tokenizer: Tokenizer | None = None) -> None:
    """Write a model folder from a config and a state dict (e.g. one gathered from FSDP shards)."""
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
            return from_hf(directory, device=device, dtype=dtype, overrides=overrides)
        raise UserError(f"{directory}: not a model folder (no {CONFIG_FILE}, no HF config.json)")
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
    return model.eval(), load_model_tokenizer(directory, vocab_size=cfg.vocab_size)
