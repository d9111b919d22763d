"""Win rate of one model's answers against a baseline's on the same prompts, by any judge.

Each prompt counts 1 when the judge prefers the model's answer, 0.5 for a tie (p_a exactly 0.5: the
gold judge when both answers score the same), 0 when it prefers the baseline's; the win rate is the
mean, so 0.5 means "no better and no worse". The judge's hard choice is used, not its probability, so
judges on different scales (a reward model's Bradley–Terry probability, the gold judge's 1/0.5/0) count
alike. Where the judge compares in both orders (LLM and endpoint judges) the share of verdicts that did not
depend on the order is reported beside it (Zheng et al. 2023, https://arxiv.org/abs/2306.05685).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmlab.align.feedback.judges import Judge, Verdict, position_consistency
from llmlab.eval.policies import figure

WIN = {"a": 1.0, "tie": 0.5, "b": 0.0}


def win_scores(verdicts: Sequence[Verdict]) -> list[float]:
    """1 / 0.5 / 0 per verdict, the model's answer shown as a."""
    return [WIN[v.label] for v in verdicts]


def win_rate(verdicts: Sequence[Verdict], *, seed: int = 0, n_boot: int = 2000) -> dict[str, Any]:
    """{"n", "mean", "lo", "hi"} (95% seeded bootstrap) with "wins", "ties", "losses" and
    "position_consistency" (NaN where the judge did not judge both orders)."""
    scores = win_scores(verdicts)
    return {**figure(scores, "mean", intervals="bootstrap", seed=seed, n_boot=n_boot),
            "wins": scores.count(1.0), "ties": scores.count(0.5), "losses": scores.count(0.0),
            "position_consistency": position_consistency(verdicts)}


def judge_against(judge: Judge, prompts: Sequence[str], answers: Sequence[str], baseline: Sequence[str], *,
                  seed: int = 0, n_boot: int = 2000) -> tuple[dict[str, Any], list[Verdict]]:
    """The win rate of `answers` over `baseline` by `judge`, and its verdicts (a = `answers`)."""
    verdicts = judge.compare(prompts, answers, baseline)
    return win_rate(verdicts, seed=seed, n_boot=n_boot), verdicts
