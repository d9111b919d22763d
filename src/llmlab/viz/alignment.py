"""Preference-training curves from a run's metrics.jsonl (llmlab dpo): one PNG of six panels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmlab.plotting import new_figure, save_figure

PANELS = (  # (title, metric keys)
    ("loss", ("loss",)),
    ("implicit rewards", ("rewards/chosen", "rewards/rejected")),
    ("reward margin", ("margin",)),
    ("preference accuracy", ("accuracy",)),
    ("log-probs (summed)", ("logps/chosen", "logps/rejected")),
    ("grad norm", ("grad_norm",)),
)


def preference_curves_png(rows: list[dict[str, Any]], path: str | Path, *, title: str) -> None:
    """loss, rewards/chosen and /rejected, margin, accuracy, logps/chosen and /rejected, grad norm
    (with the learning rate on a second axis) against step."""
    fig, _ = new_figure(width=13.0, height=7.0)
    fig.clear()
    axes = fig.subplots(2, 3).flatten()
    for ax, (name, keys) in zip(axes, PANELS, strict=True):
        for key in keys:
            points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if points:
                ax.plot(*zip(*points, strict=True), label=key, linewidth=1.2)
        ax.set_title(name)
        ax.set_xlabel("step")
        if len(keys) > 1:
            ax.legend(fontsize=8)
    lr = [(r["step"], r["lr"]) for r in rows if "lr" in r]
    if lr:
        twin = axes[-1].twinx()
        twin.plot(*zip(*lr, strict=True), color="tab:gray", linestyle="--", linewidth=1.0)
        twin.set_ylabel("lr", color="tab:gray")
    fig.suptitle(title)
    save_figure(fig, path)
