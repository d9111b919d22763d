"""How the human labels of a review agree with other sources of labels on the same pairs: the gold
scorers (task-world prompts), the preference the pairs file itself gave ({"chosen", "rejected"} rows),
and AI judges' label files (`--compare NAME=FILE,...`).

Each comparison is over the pairs both sides labelled ("skip" is no label; "tie" is a label), with three
categories a / b / tie: the raw agreement and Cohen's kappa (llmlab.stats), each with a 95% percentile
bootstrap interval over pairs. Raw agreement alone flatters a judge that says "a" to a file where "a" is
nearly always right; kappa discounts what the two label frequencies give by chance.

A judge's label file has one row per pair, matched to the review's pairs by (prompt, a, b), or with a
and b swapped (its label then swapped too): `{"prompt", "a", "b", "label": "a"|"b"|"tie"}`, or `"p_a"`
instead of `"label"` (a soft label; > 0.5 is "a"), or `{"prompt", "chosen", "rejected"}` (e.g. pairs an
AI labeller wrote for `llmlab dpo`). The review's own output has this shape, so two people's label files
compare the same way.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmlab.align.feedback.judges import Verdict, build_judge
from llmlab.data.loaders import iter_jsonl
from llmlab.data.tasks import parse_task
from llmlab.errors import DataError, UserError
from llmlab.serve.review_log import Pair
from llmlab.stats import bootstrap_interval, cohen_kappa

GIVEN = "pairs file (chosen)"


@dataclass(frozen=True)
class Agreement:
    source: str
    n: int  # pairs labelled by both the person and the source
    agreement: float  # share of those with the same label
    agreement_ci: tuple[float, float]
    kappa: float
    kappa_ci: tuple[float, float]
    counts: dict[str, int]  # the source's labels on those pairs
    disagreements: tuple[tuple[int, str, str], ...]  # (pair, human label, source label)


def _kappa(a: Sequence[str], b: Sequence[str]) -> float:
    """Cohen's kappa, taken as 1 where it is undefined: both raters gave one and the same label
    throughout (chance agreement 1), which a small bootstrap resample can draw; NaN would break the
    percentile order."""
    k = cohen_kappa(a, b)
    return 1.0 if math.isnan(k) else k


def compare_labels(human: Sequence[str], other: Sequence[str], *, seed: int = 0,
                   n_boot: int = 2000) -> tuple[float, tuple[float, float], float, tuple[float, float]]:
    """(agreement, its 95% interval, kappa, its 95% interval) of two equally long label lists; NaNs if empty.
    The intervals resample pairs (the same resamples for both figures: the same seed)."""
    n = len(human)
    if n != len(other):
        raise ValueError(f"need equally long label lists, got {n} and {len(other)}")
    if n == 0:
        return math.nan, (math.nan, math.nan), math.nan, (math.nan, math.nan)
    same = [float(x == y) for x, y in zip(human, other, strict=True)]
    agreement_ci = bootstrap_interval(list(range(n)), seed=seed, n_boot=n_boot,
                                      stat=lambda idx: sum(same[i] for i in idx) / len(idx))
    kappa_ci = bootstrap_interval(list(range(n)), seed=seed, n_boot=n_boot,
                                  stat=lambda idx: _kappa([human[i] for i in idx], [other[i] for i in idx]))
    return sum(same) / n, agreement_ci, cohen_kappa(human, other), kappa_ci


def parse_compare(specs: Sequence[str]) -> dict[str, str]:
    """["NAME=FILE", ...] -> {NAME: FILE}; a spec without a name or a file, or a name twice, is a UserError."""
    out: dict[str, str] = {}
    for spec in specs:
        name, eq, path = (part.strip() for part in spec.partition("="))
        if not eq or not name or not path:
            raise UserError(f"--compare {spec!r}: expected NAME=LABELS.jsonl")
        if name in out or name in ("human", "gold", GIVEN):
            raise UserError(f"--compare: the name {name!r} is taken; give each source its own name")
        out[name] = path
    return out


def _row_label(row: Any) -> tuple[str, str, str, str] | str:
    """(prompt, a, b, label) of one judge row, or what is wrong with it."""
    if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
        return "expected an object with a string 'prompt'"
    if isinstance(row.get("chosen"), str) and isinstance(row.get("rejected"), str) and "label" not in row:
        return row["prompt"], row["chosen"], row["rejected"], "a"
    if not (isinstance(row.get("a"), str) and isinstance(row.get("b"), str)):
        return "expected 'a' and 'b' (or 'chosen' and 'rejected') strings"
    label = row.get("label")
    if label is None and isinstance(row.get("p_a"), (int, float)) and not isinstance(row.get("p_a"), bool):
        label = Verdict(float(row["p_a"])).label
    if label == "skip":
        return row["prompt"], row["a"], row["b"], "skip"
    if label not in ("a", "b", "tie"):
        return "expected 'label' a, b or tie (or a number 'p_a')"
    return row["prompt"], row["a"], row["b"], label


SWAP = {"a": "b", "b": "a", "tie": "tie"}


def load_judge_labels(path: str | os.PathLike[str], pairs: Sequence[Pair]) -> dict[int, str]:
    """{pair index: "a" | "b" | "tie"} from a judge's label file (skips left out); rows about other
    pairs are ignored, but a file that labels none of these pairs is a DataError (a wrong file)."""
    where: dict[tuple[str, str, str], list[int]] = {}
    for i, p in enumerate(pairs):
        where.setdefault((p.prompt, p.a, p.b), []).append(i)
    labels: dict[int, str] = {}
    rows = 0
    for lineno, row in iter_jsonl(path):
        got = _row_label(row)
        if isinstance(got, str):
            raise DataError(f"{path}:{lineno}: {got}")
        rows += 1
        prompt, a, b, label = got
        if label == "skip":
            continue
        for i in where.get((prompt, a, b), []):
            labels[i] = label
        for i in where.get((prompt, b, a), []):
            labels[i] = SWAP[label]
    if not labels:
        raise DataError(f"{path}: none of its {rows} rows labels a pair of the review")
    return labels


def gold_labels(pairs: Sequence[Pair], indices: Sequence[int]) -> dict[int, str] | None:
    """The gold scorers' labels of these pairs; None when a prompt is not a task-world one."""
    if not indices or any(parse_task(pairs[i].prompt) is None for i in indices):
        return None
    verdicts = build_judge("gold").compare([pairs[i].prompt for i in indices], [pairs[i].a for i in indices],
                                           [pairs[i].b for i in indices])
    return {i: v.label for i, v in zip(indices, verdicts, strict=True)}


def agreements(human: Mapping[int, str], sources: Mapping[str, Mapping[int, str]], *,
               seed: int = 0) -> list[Agreement]:
    """The person's labels (pair -> a | b | tie) against each source's, over the pairs both labelled."""
    out = []
    for name, theirs in sources.items():
        common = sorted(set(human) & set(theirs))
        h, o = [human[i] for i in common], [theirs[i] for i in common]
        agreement, agreement_ci, kappa, kappa_ci = compare_labels(h, o, seed=seed)
        out.append(Agreement(name, len(common), agreement, agreement_ci, kappa, kappa_ci, dict(Counter(o)),
                             tuple((i, x, y) for i, x, y in zip(common, h, o, strict=True) if x != y)))
    return out
