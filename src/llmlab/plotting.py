"""The blank figure and the atomic PNG save that every plot in llmlab starts and ends with.

Drawn with matplotlib's Agg backend (no display needed). A bottom module, so that the
tokenizer commands and the benchmarks can draw their plots without importing `llmlab.viz`;
the plots themselves (attention maps, training curves, score charts) live in viz/.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from llmlab.files import atomic_open


def new_figure(*, width: float = 8.0, height: float = 4.5) -> tuple[Any, Any]:
    import matplotlib  # here, not at the top: matplotlib is slow to import and only plotting needs it

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), layout="constrained")


def save_figure(fig: Any, path: str | Path, *, dpi: int = 120) -> None:
    """PNG to `path` via a temp file and rename; closes the figure."""
    import matplotlib.pyplot as plt  # here, not at the top: matplotlib is slow to import

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    with atomic_open(path, "wb", encoding=None) as f:
        f.write(buf.getvalue())
