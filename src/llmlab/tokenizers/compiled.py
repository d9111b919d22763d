"""llmlab's optional C extensions (`_fastbpe`, `_fastunigram`): loading one, and the switch that turns them off.

Both are built when llmlab is installed (setup.py) and neither is needed: without a C compiler the
install skips them, and LLMLAB_PURE_PYTHON=1 makes tokenizers made from then on use the pure-Python
paths, which are the C paths' oracles (tests compare the two).
"""

from __future__ import annotations

import importlib
import os
from typing import Any


def load(name: str) -> Any:
    """The compiled module `llmlab.tokenizers.<name>`, or None where it was not built.

    By name: import-linter cannot see a compiled module, and would read `from llmlab.tokenizers import
    _fastbpe` as an import of the package (a cycle)."""
    try:
        return importlib.import_module(f"llmlab.tokenizers.{name}")
    except ImportError:
        return None


def enabled(module: Any) -> bool:
    """Whether a compiled module may be used: built, and not switched off by LLMLAB_PURE_PYTHON=1."""
    return module is not None and os.environ.get("LLMLAB_PURE_PYTHON", "") in ("", "0")
