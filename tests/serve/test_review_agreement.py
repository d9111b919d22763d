"""The agreement figures of `llmlab review serve` (serve/review_agreement.py): against hand-computed
kappas, the judges' label files in every accepted form, and the gold labels of task-world pairs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from llmlab.data.tasks import score
from llmlab.errors import DataError, UserError
from llmlab.serve.review_agreement import (
    agreements,
    compare_labels,
    gold_labels,
    load_judge_labels,
    parse_compare,
)
from llmlab.serve.review_log import Pair


def test_agreement_and_kappa_by_hand() -> None:
    """human a a b tie, judge a b b tie: observed 3/4; label frequencies human (a 2, b 1, tie 1), judge
    (a 1, b 2, tie 1) give chance agreement (2·1 + 1·2 + 1·1) / 16 = 5/16, so
    kappa = (3/4 - 5/16) / (1 - 5/16) = (7/16) / (11/16) = 7/11."""
    human, judge = ["a", "a", "b", "tie"], ["a", "b", "b", "tie"]
    agreement, agreement_ci, kappa, kappa_ci = compare_labels(human, judge, n_boot=500)
    assert agreement == 0.75
    assert kappa == pytest.approx(7 / 11, abs=1e-12)
    assert agreement_ci[0] <= agreement <= agreement_ci[1] and 0 <= agreement_ci[0] <= agreement_ci[1] <= 1
    assert kappa_ci[0] <= kappa <= kappa_ci[1] <= 1
    assert compare_labels(human, judge, n_boot=500) == (agreement, agreement_ci, kappa, kappa_ci)  # seeded


def test_perfect_and_opposite_raters() -> None:
    labels = ["a", "b"] * 10
    agreement, _, kappa, kappa_ci = compare_labels(labels, labels, n_boot=300)
    assert agreement == 1 and kappa == 1 and kappa_ci == (1, 1)  # resamples of one label only count as agreeing
    flipped = [{"a": "b", "b": "a"}[x] for x in labels]
    agreement, _, kappa, kappa_ci = compare_labels(labels, flipped, n_boot=300)
    assert agreement == 0 and kappa == -1 and kappa_ci[0] == -1


def test_no_common_pairs_gives_nans() -> None:
    agreement, agreement_ci, kappa, _ = compare_labels([], [])
    assert math.isnan(agreement) and math.isnan(kappa) and all(map(math.isnan, agreement_ci))


PAIRS = [Pair("p0", "x0", "y0"), Pair("p1", "x1", "y1"), Pair("p2", "x2", "y2"), Pair("p3", "x3", "y3")]


def write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_judge_label_files_in_every_form(tmp_path: Path) -> None:
    path = write(tmp_path / "judge.jsonl", [
        {"prompt": "p0", "a": "x0", "b": "y0", "label": "b"},
        {"prompt": "p1", "a": "y1", "b": "x1", "label": "a"},  # swapped: y1 is the review's b
        {"prompt": "p2", "a": "x2", "b": "y2", "p_a": 0.5},  # a soft label
        {"prompt": "p3", "chosen": "y3", "rejected": "x3"},  # a preference pair: chosen is the review's b
        {"prompt": "elsewhere", "a": "u", "b": "v", "label": "a"},  # not a pair of this review: ignored
    ])
    assert load_judge_labels(path, PAIRS) == {0: "b", 1: "b", 2: "tie", 3: "b"}
    soft = write(tmp_path / "soft.jsonl", [{"prompt": "p0", "a": "x0", "b": "y0", "p_a": 0.8},
                                           {"prompt": "p1", "a": "x1", "b": "y1", "label": "skip"}])
    assert load_judge_labels(soft, PAIRS) == {0: "a"}


@pytest.mark.parametrize(("row", "problem"), [
    ({"a": "x0", "b": "y0", "label": "a"}, "expected an object with a string 'prompt'"),
    ({"prompt": "p0", "a": "x0", "label": "a"}, "expected 'a' and 'b'"),
    ({"prompt": "p0", "a": "x0", "b": "y0", "label": "left"}, "expected 'label' a, b or tie"),
    ({"prompt": "p0", "a": "x0", "b": "y0", "p_a": True}, "expected 'label' a, b or tie"),
])
def test_a_bad_judge_row_names_file_and_line(tmp_path: Path, row: dict, problem: str) -> None:
    path = write(tmp_path / "judge.jsonl", [{"prompt": "p0", "a": "x0", "b": "y0", "label": "a"}, row])
    with pytest.raises(DataError, match=rf"judge.jsonl:2: {problem}"):
        load_judge_labels(path, PAIRS)


def test_a_judge_file_about_other_pairs_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "judge.jsonl", [{"prompt": "q", "a": "x0", "b": "y0", "label": "a"}])
    with pytest.raises(DataError, match="none of its 1 rows labels a pair of the review"):
        load_judge_labels(path, PAIRS)


def test_parse_compare() -> None:
    assert parse_compare(["llm=a.jsonl", " rm = b.jsonl "]) == {"llm": "a.jsonl", "rm": "b.jsonl"}
    for bad in (["a.jsonl"], ["=a.jsonl"], ["llm="]):
        with pytest.raises(UserError, match=r"expected NAME=LABELS\.jsonl"):
            parse_compare(bad)
    for taken in (["llm=a.jsonl", "llm=b.jsonl"], ["gold=a.jsonl"]):
        with pytest.raises(UserError, match="is taken"):
            parse_compare(taken)


def test_gold_labels_follow_the_gold_scores() -> None:
    prompt = "Calculate 52 * 29."
    pairs = [Pair(prompt, "1508", "1509"), Pair(prompt, "1500", "1508"), Pair(prompt, "1508", "It is 1508")]
    expected = {}
    for i, p in enumerate(pairs):
        sa, sb = score(p.prompt, p.a), score(p.prompt, p.b)
        expected[i] = "a" if sa > sb else "b" if sa < sb else "tie"
    assert gold_labels(pairs, [0, 1, 2]) == expected
    assert expected[0] == "a" and expected[1] == "b"
    assert gold_labels([*pairs, Pair("not a task", "x", "y")], [0, 3]) is None
    assert gold_labels(pairs, []) is None


def test_agreements_per_source_with_disagreements() -> None:
    human = {0: "a", 1: "b", 2: "tie", 5: "a"}
    [judge, other] = agreements(human, {"judge": {0: "a", 1: "a", 2: "tie", 3: "b"}, "other": {9: "a"}})
    assert (judge.source, judge.n, judge.agreement) == ("judge", 3, 2 / 3)
    assert judge.counts == {"a": 2, "tie": 1} and judge.disagreements == ((1, "b", "a"),)
    assert judge.kappa == pytest.approx(0.5)  # chance (1·2 + 1·0 + 1·1) / 9 = 1/3: (2/3 - 1/3) / (1 - 1/3)
    assert other.n == 0 and math.isnan(other.kappa)
