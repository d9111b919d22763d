"""Attention: a NumPy reference (`reference`), PyTorch backends behind one `attention` function,
masks (causal, sliding window, block-sparse, padding), and cost estimates (`explain` for one layer,
`whatif` for a decode step of a whole named model on named accelerators).

`llmlab.attention.reference` and `llmlab.attention.explain` need only NumPy (`whatif` nothing); the PyTorch
parts are imported on first use, so `import llmlab.attention.reference` stays light.
"""

from typing import Any

__all__ = ["BACKENDS", "BlockLayout", "attention", "bigbird", "local_global", "local_strided"]


def __getattr__(name: str) -> Any:
    if name in ("attention", "BACKENDS"):
        from llmlab.attention import functional  # torch: on first use, so the NumPy modules stay light

        return getattr(functional, name)
    if name in ("BlockLayout", "bigbird", "local_global", "local_strided"):
        from llmlab.attention import masks  # torch: on first use, so the NumPy modules stay light

        return getattr(masks, name)
    raise AttributeError(name)
