"""Charts shared by reports: task-family scores per model (new_figure and save_figure: llmlab.plotting)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmlab.plotting import new_figure, save_figure


def family_scores_chart(reports: dict[str, dict[str, Any]], path: str | Path, *, title: str) -> None:
    """Grouped bars: mean gold score per task family, one bar per policy/model."""
    families = list(dict.fromkeys(f for r in reports.values() for f in r["families"]))
    fig, ax = new_figure(width=max(8.0, 0.9 * len(families) + 2), height=4.5)
    width = 0.8 / max(1, len(reports))
    for i, (name, report) in enumerate(reports.items()):
        xs = [j + i * width - 0.4 + width / 2 for j in range(len(families))]
        ys = [report["families"].get(f, {}).get("score") or 0.0 for f in families]
        ax.bar(xs, ys, width=width, label=name)
    ax.set_xticks(range(len(families)), families, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mean gold score")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    save_figure(fig, path)
