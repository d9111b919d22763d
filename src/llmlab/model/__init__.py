"""The Llama-style model (`llama.py`), its config, generation (`generate.py`), and model folders
(`io.py`, `hf_io.py`). Imported lazily so that `import llmlab.model` does not import torch."""

from typing import Any

__all__ = ["Engine", "ModelConfig", "SamplingConfig", "Transformer", "generate_naive", "load_model",
           "sample_next_token", "save_model"]

_WHERE = {"ModelConfig": "config", "Transformer": "llama", "Engine": "generate", "SamplingConfig": "generate",
          "generate_naive": "generate", "sample_next_token": "generate", "load_model": "io", "save_model": "io"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(name)
    import importlib

    # torch: on first use, so that `llmlab.model.config` (read by command configs) stays light
    return getattr(importlib.import_module(f"llmlab.model.{_WHERE[name]}"), name)
