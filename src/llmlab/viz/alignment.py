"""Training curves from a run's metrics.jsonl, one PNG of six panels: preference training (llmlab dpo)
and online RL (llmlab grpo / ppo / rloo, where the step the reward-hacking detector fired is marked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmlab.plotting import new_figure, save_figure

Panels = tuple[tuple[str, tuple[str, ...]], ...]  # (title, metric keys)

PREFERENCE_PANELS: Panels = (
    ("loss", ("loss",)),
    ("implicit rewards", ("rewards/chosen", "rewards/rejected")),
    ("reward margin", ("margin",)),
    ("preference accuracy", ("accuracy",)),
    ("log-probs (summed)", ("logps/chosen", "logps/rejected")),
    ("grad norm", ("grad_norm",)),
)
RL_PANELS: Panels = (
    ("reward", ("reward", "gold", "proxy")),
    ("KL to the reference (nats / response)", ("kl",)),
    ("response length (tokens)", ("response_len",)),
    ("refusal rate", ("refusal_rate",)),
    ("entropy (nats / token)", ("entropy",)),
    ("grad norm", ("grad_norm",)),
)


def preference_curves_png(rows: list[dict[str, Any]], path: str | Path, *, title: str) -> None:
    """loss, rewards/chosen and /rejected, margin, accuracy, logps/chosen and /rejected, grad norm
    (with the learning rate on a second axis) against step."""
    curves_png(rows, path, title=title, panels=PREFERENCE_PANELS)


def rl_curves_png(rows: list[dict[str, Any]], path: str | Path, *, title: str) -> None:
    """reward (with its gold and proxy parts), KL, length, refusals, entropy, grad norm against step; a
    dashed red line where the divergence detector fired ("hacking" in the step's row)."""
    curves_png(rows, path, title=title, panels=RL_PANELS,
               mark=next((r["step"] for r in rows if r.get("hacking")), None))


def curves_png(rows: list[dict[str, Any]], path: str | Path, *, title: str, panels: Panels,
               mark: int | None = None) -> None:
    """Six panels of metrics against step, the learning rate on the last one's second axis."""
    fig, _ = new_figure(width=13.0, height=7.0)
    fig.clear()
    axes = fig.subplots(2, 3).flatten()
    for ax, (name, keys) in zip(axes, panels, strict=True):
        for key in keys:
            points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if points:
                ax.plot(*zip(*points, strict=True), label=key, linewidth=1.2)
        ax.set_title(name)
        ax.set_xlabel("step")
        if len(keys) > 1 and ax.get_lines():
            ax.legend(fontsize=8)
        if mark is not None:
            ax.axvline(mark, color="tab:red", linestyle="--", linewidth=1.0)
    lr = [(r["step"], r["lr"]) for r in rows if "lr" in r]
    if lr:
        twin = axes[-1].twinx()
        twin.plot(*zip(*lr, strict=True), color="tab:gray", linestyle="--", linewidth=1.0)
        twin.set_ylabel("lr", color="tab:gray")
    fig.suptitle(title)
    save_figure(fig, path)
