"""Judges: anything that scores a response or prefers one of two, with a rationale, behind one interface.

    Judge.score(prompts, responses)      -> [Score]     how good each response is (higher is better)
    Judge.compare(prompts, a, b)         -> [Verdict]   P(a is better than b) per pair, 0.5 = no preference

Both calls take lists: a judge that runs a model batches them. A judge that only scores compares by
its scores (`ScoringJudge`): the Bradley–Terry probability sigmoid(s_a - s_b / temperature), or a hard
1 / 0.5 / 0 for judges whose scores are on no common logit scale (the gold scorers). `build_judge(spec)`
turns a command-line spec ("gold", "llm=DIR", ...) into a judge.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from llmlab.data.tasks import parse_task
from llmlab.errors import UserError


@dataclass(frozen=True)
class Score:
    value: float
    rationale: str = ""


@dataclass(frozen=True)
class Verdict:
    p_a: float  # probability that response a is the better one; 0.5 is a tie or no preference
    rationale: str = ""
    consistent: bool | None = None  # judged in both orders: did the hard choice survive the swap?

    @property
    def label(self) -> str:
        """"a", "b" or "tie": the hard choice (what a person would click)."""
        return "a" if self.p_a > 0.5 else "b" if self.p_a < 0.5 else "tie"


class Judge(Protocol):
    name: str

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Score]: ...

    def compare(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> list[Verdict]: ...


def _check_lengths(*lists: Sequence[str]) -> None:
    if len({len(x) for x in lists}) > 1:
        raise ValueError(f"a judge needs equally long lists, got lengths {[len(x) for x in lists]}")


def both_orders(compare_once: Callable[[Sequence[str], Sequence[str], Sequence[str]], list[Verdict]],
                prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> list[Verdict]:
    """Judge every pair as (a, b) and as (b, a) and average, which cancels a judge's position bias
    (LLM judges favour the first or the second answer; Zheng et al. 2023). `compare_once` returns
    P(the first shown is better). Each verdict records whether its hard choice survived the swap;
    `position_consistency` is the share that did."""
    _check_lengths(prompts, a, b)
    first, swapped = compare_once(prompts, a, b), compare_once(prompts, b, a)
    out = []
    for x, y in zip(first, swapped, strict=True):
        y_for_a = Verdict(1 - y.p_a)
        out.append(Verdict((x.p_a + y_for_a.p_a) / 2, f"{x.rationale} | swapped: {y.rationale}",
                           consistent=x.label == y_for_a.label))
    return out


def position_consistency(verdicts: Sequence[Verdict]) -> float:
    """Share of verdicts judged in both orders whose choice did not depend on the order (NaN if none)."""
    flags = [v.consistent for v in verdicts if v.consistent is not None]
    return sum(flags) / len(flags) if flags else math.nan


class ScoringJudge:
    """Compares two responses by scoring both. `temperature` None: a hard verdict (1, 0.5 or 0) by
    which score is higher; a number: the Bradley–Terry probability sigmoid((s_a - s_b) / temperature),
    for scores on a logit scale (a reward model's)."""

    name = "scoring"
    temperature: float | None = None

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Score]:
        raise NotImplementedError

    def compare(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> list[Verdict]:
        _check_lengths(prompts, a, b)
        sa, sb = self.score(prompts, a), self.score(prompts, b)
        out = []
        for x, y in zip(sa, sb, strict=True):
            d = x.value - y.value
            if self.temperature is None:
                p = 1.0 if d > 0 else 0.0 if d < 0 else 0.5
            else:
                p = 1 / (1 + math.exp(-max(-700.0, min(700.0, d / self.temperature))))
            out.append(Verdict(p, f"a: {x.value:.3g} ({x.rationale}); b: {y.value:.3g} ({y.rationale})"))
        return out


class GoldJudge(ScoringJudge):
    """The task world's gold scorers: exact for task-world prompts, a UserError naming any other."""

    name = "gold"

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Score]:
        _check_lengths(prompts, responses)
        out = []
        for prompt, response in zip(prompts, responses, strict=True):
            task = parse_task(prompt)
            if task is None:
                raise UserError(f"the gold judge knows only task-world prompts, not {prompt[:60]!r}")
            value = task.score(response)
            why = "should refuse" if task.should_refuse else f"expected {task.answer[:40]!r}"
            out.append(Score(value, f"{task.family}: {why}"))
        return out


def _by_path(target: str) -> Callable[[str], Judge]:
    """The builder "module:function", imported when first used: judges that run a model import torch,
    and their modules import this one (named by path, as the CLI names commands)."""

    def build(arg: str) -> Judge:
        module, _, name = target.partition(":")
        return getattr(importlib.import_module(module), name)(arg)

    return build


JUDGES: dict[str, Callable[[str], Judge]] = {
    "gold": lambda arg: GoldJudge(),
    "llm": _by_path("llmlab.align.feedback.llm_judge:build_llm_judge"),  # llm=DIR: a local model with a rubric
}


def build_judge(spec: str) -> Judge:
    """A judge from its spec: "NAME" or "NAME=ARG" (the argument is a folder, a URL, ...)."""
    name, _, arg = spec.partition("=")
    if name not in JUDGES:
        raise UserError(f"unknown judge {name!r} in {spec!r}; known: {', '.join(sorted(JUDGES))}")
    return JUDGES[name](arg)
