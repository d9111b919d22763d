"""Charts shared by reports: task-family scores per model (new_figure and save_figure: llmlab.plotting)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmlab.plotting import new_figure, save_figure


def family_scores_chart(reports: dict[str, dict[str, Any]], path: str | Path, *, title: str,
                        key: str = "score", ylabel: str = "mean gold score", ylim: float | None = 1.05) -> None:
    """Grouped bars: mean gold score per task family, one bar per policy/model; reports[name]["families"]
    [family][key] is the bar, with an error bar where the family also has its interval ("lo", "hi").
    `ylim` None: the axis fits the bars (figures that are not rates: lengths, bits per byte)."""
    families = list(dict.fromkeys(f for r in reports.values() for f in r["families"]))
    fig, ax = new_figure(width=max(8.0, 0.9 * len(families) + 2), height=4.5)
    width = 0.8 / max(1, len(reports))
    for i, (name, report) in enumerate(reports.items()):
        xs = [j + i * width - 0.4 + width / 2 for j in range(len(families))]
        fams = [report["families"].get(f, {}) for f in families]
        ys = [x.get(key) or 0.0 for x in fams]
        bars = [(max(0.0, y - x["lo"]), max(0.0, x["hi"] - y)) if "lo" in x else (0.0, 0.0)
                for x, y in zip(fams, ys, strict=True)]
        ax.bar(xs, ys, width=width, label=name, yerr=list(zip(*bars, strict=True)) if any(map(any, bars)) else None,
               capsize=2, error_kw={"linewidth": 0.8})
    ax.set_xticks(range(len(families)), families, rotation=30, ha="right")
    if ylim is not None:
        ax.set_ylim(0, ylim)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    save_figure(fig, path)
