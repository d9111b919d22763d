"""Training curves from a run's metrics.jsonl: loss (train and val) and throughput, as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmlab.plotting import new_figure, save_figure


def loss_curves_png(rows: list[dict[str, Any]], path: str | Path, *, title: str) -> None:
    """Train loss and val loss against step on one axis; tokens/s on a second panel when logged."""
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    speed = [(r["step"], r["tokens_per_s"]) for r in rows if "tokens_per_s" in r]
    fig, _ = new_figure(width=10.0, height=4.0)
    fig.clear()
    ax_loss, ax_speed = fig.subplots(1, 2, width_ratios=(2, 1))
    if train:
        ax_loss.plot(*zip(*train, strict=True), label="train loss", linewidth=1.2)
    if val:
        ax_loss.plot(*zip(*val, strict=True), "o-", label="val loss", linewidth=1.5)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("cross-entropy (nats/token)")
    ax_loss.set_title(title)
    ax_loss.legend()
    if speed:
        ax_speed.plot(*zip(*speed, strict=True), color="tab:green")
    ax_speed.set_xlabel("step")
    ax_speed.set_ylabel("tokens / s")
    ax_speed.set_title("throughput")
    save_figure(fig, path)
