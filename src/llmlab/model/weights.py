"""Weights in and out of a model: safetensors files, a checked state-dict load, and the tokenizer beside them.

The pieces that every model loader reads with (model folders, io.py; Hugging Face folders, hf_io.py
and transformers' `from_pretrained` in align/): a truncated or foreign safetensors file, a state dict
that does not fit the config, a folder whose only weights are pickled (`require_safetensors`: pickles
are never opened), or a tokenizer with more ids than the model has embeddings, is a one-line UserError.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from llmlab.errors import UserError
from llmlab.files import atomic_open
from llmlab.model.llama import Transformer, rotary_tables
from llmlab.tokenizers.base import Tokenizer
from llmlab.tokenizers.hf_io import load_tokenizer


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a truncated or foreign file is a one-line UserError."""
    try:
        return load_file(path)
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0][:120]})") from None


def require_safetensors(directory: str | Path) -> list[Path]:
    """The *.safetensors files of a model folder; a folder without any is a one-line UserError that
    names its pickled weights. The one check of every loader: pickled weights (pytorch_model.bin,
    *.pt, *.pth, *.ckpt) can run code when loaded, so they are never opened, only named."""
    directory = Path(directory)
    files = sorted(directory.glob("*.safetensors"))
    if files:
        return files
    pickled = sorted(p.name for pattern in ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
                     for p in directory.glob(pattern))
    if pickled:
        raise UserError(f"{directory}: llmlab reads only safetensors weights, and this folder's are pickled "
                        f"({', '.join(pickled[:3])}), which is never loaded since unpickling can run code; convert "
                        "them where you trust them, e.g. model.save_pretrained(dir, safe_serialization=True)")
    raise UserError(f"{directory}: no *.safetensors weights")


def check_vocab_fits(tokenizer_ids: int, vocab_size: int, *, source: str) -> None:
    """A tokenizer whose ids do not all index the model's embedding table is a one-line UserError:
    its highest ids would fail (or, on some devices, read garbage) the first time they appear."""
    if tokenizer_ids > vocab_size:
        raise UserError(f"{source}: the tokenizer has {tokenizer_ids} ids but the model's vocab_size is "
                        f"{vocab_size}; use the tokenizer the model was trained with")


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


def load_model_tokenizer(directory: str | Path, *, vocab_size: int) -> Tokenizer | None:
    """The tokenizer.json beside the weights (None without one), checked to fit `vocab_size`."""
    if not (Path(directory) / "tokenizer.json").is_file():
        return None
    tokenizer = load_tokenizer(directory)
    check_vocab_fits(tokenizer.id_count, vocab_size, source=str(directory))
    return tokenizer


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """A safetensors file written atomically (temp file + rename): a crash or a full disk mid-write
    leaves the old file or none, never a truncated one that loads as garbage or not at all."""
    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)
    with atomic_open(path, "wb") as f:
        f.write(data)


def save_pretrained_atomic(obj: Any, directory: str | Path, **kwargs: Any) -> None:
    """transformers' `save_pretrained` (a model or a tokenizer) into a temporary folder beside the
    target, then each file renamed into `directory`: no file there is ever half-written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / ".save_pretrained.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        obj.save_pretrained(str(tmp), **kwargs)
        for path in sorted(tmp.rglob("*")):
            if path.is_file():
                target = directory / path.relative_to(tmp)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
