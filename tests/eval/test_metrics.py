"""The figures of `llmlab eval` against hand-computed cases: format compliance, pass@k, win rate with ties
and position consistency, and the bootstrap interval against the analytic ones."""

from __future__ import annotations

import math
import random

import pytest

from llmlab.align.feedback.judges import GoldJudge, Verdict
from llmlab.data.config import TaskConfig
from llmlab.data.families.formatting import Format
from llmlab.data.tasks import FAMILIES, parse_task, sample_tasks
from llmlab.eval.policies import Answered, figure, scored, summarise
from llmlab.eval.winrate import judge_against, win_rate, win_scores
from llmlab.stats import Z95, mean_se, wilson_interval

UPPER = "Reverse the word 'honey'. Answer in UPPERCASE."
JSON = 'What is 4 * 7? Reply only with JSON of the form {"answer": ...}.'
WORDS = "List exactly 3 words that describe a cat."


@pytest.mark.parametrize(("prompt", "response", "complies"), [
    (UPPER, "YENOH", True),
    (UPPER, "HONEY", True),  # the format only: wrong content in the right shape complies
    (UPPER, "The answer is YENOH", False),  # lowercase letters
    (UPPER, "12", False),  # no letters at all
    (JSON, '{"answer": 28}', True),
    (JSON, ' {"answer": "thirty"} ', True),  # any value, surrounding spaces stripped
    (JSON, '{"answer": 28, "why": "4 sevens"}', False),  # another key
    (JSON, "28", False),  # a number is JSON, but not an object
    (JSON, '{"answer": 28', False),  # not JSON
    (WORDS, "small quiet grey", True),
    (WORDS, "small, quiet, grey.", True),  # punctuation is not a word
    (WORDS, "small grey", False),
    (WORDS, "small quiet grey furry", False),
])
def test_format_compliance_by_hand(prompt: str, response: str, complies: bool) -> None:
    task = parse_task(prompt)
    assert task is not None and task.family == "format"
    assert Format().complies(task, response) is complies
    assert scored(prompt, response, [], tokens=1).formatted == float(complies)


def test_format_compliance_only_for_format_prompts() -> None:
    """Non-format prompts have no format figure (NaN), so the rate's n counts format prompts only."""
    assert math.isnan(scored("What is 4 * 7?", "28", [], tokens=1).formatted)
    rows = [scored(UPPER, "YENOH", [], tokens=1), scored(JSON, "28", [], tokens=1),
            scored("What is 4 * 7?", "28", [], tokens=1)]
    s = summarise({"m": rows})
    assert s["m"]["format"]["n"] == 2 and s["m"]["format"]["mean"] == 0.5


def test_format_compliance_matches_what_the_family_writes() -> None:
    """On 60 drawn format tasks: the gold answer complies, `violate` (right content, wrong format) does not,
    and `wrong` (right format, wrong content) complies except for N-words, whose only content is the count."""
    rng = random.Random(0)
    family = FAMILIES["format"]
    for task in sample_tasks(60, seed=3, tasks=TaskConfig(families=("format",))):
        assert Format().complies(task, task.answer), task.prompt
        assert not Format().complies(task, family.violate(task, rng)), task.prompt
        assert Format().complies(task, family.wrong(task, rng)) is (task.data["style"] != "words"), task.prompt


def test_pass_at_k_by_hand() -> None:
    """4 samples, 2 correct: pass@1 = 2/4; pass@4 = 1 (some sample is right); pass@3 = 1 - C(2,3)/C(4,3) = 1
    (only 2 wrong: any 3 hold a right one); pass@2 = 1 - C(2,2)/C(4,2) = 1 - 1/6. No correct sample: 0."""
    right, wrong = "28", "27"
    samples = [right, wrong, right, wrong]
    r = scored("What is 4 * 7?", right, samples, tokens=1)
    assert r.pass1 == 0.5 and r.passk == 1.0 and r.correct == 1.0
    assert scored("What is 4 * 7?", right, samples, tokens=1, pass_k=3).passk == 1.0
    assert scored("What is 4 * 7?", right, samples, tokens=1, pass_k=2).passk == pytest.approx(1 - 1 / 6)
    none = scored("What is 4 * 7?", wrong, [wrong] * 4, tokens=1, pass_k=2)
    assert none.pass1 == 0.0 and none.passk == 0.0 and none.correct == 0.0


def test_a_foreign_prompt_has_refusals_and_length_but_no_gold_figures() -> None:
    r = scored("Tell me a joke.", "I can't help with that.", ["x", "y"], tokens=5)
    assert r.family == "-" and r.refused == 1.0 and r.chars == len("I can't help with that.")
    assert all(math.isnan(x) for x in (r.correct, r.pass1, r.passk, r.formatted))
    s = summarise({"a": [r, scored("What is 4 * 7?", "28", [], tokens=1)]})["a"]
    assert s["accuracy"]["n"] == 1 and s["tokens"]["n"] == 2 and "-" not in s["families"]


def test_win_rate_counts_ties_half() -> None:
    """Verdicts a, tie, b, a (soft 0.7), tie: scores 1, .5, 0, 1, .5 -> mean 3/5; two of the three verdicts
    judged in both orders kept their choice -> position consistency 2/3."""
    verdicts = [Verdict(1.0, consistent=True), Verdict(0.5), Verdict(0.0, consistent=False), Verdict(0.7),
                Verdict(0.5, consistent=True)]
    assert win_scores(verdicts) == [1.0, 0.5, 0.0, 1.0, 0.5]
    w = win_rate(verdicts, seed=0, n_boot=500)
    assert w["mean"] == pytest.approx(0.6) and (w["wins"], w["ties"], w["losses"]) == (2, 2, 1)
    assert w["position_consistency"] == pytest.approx(2 / 3) and w["n"] == 5
    assert 0.0 <= w["lo"] <= 0.6 <= w["hi"] <= 1.0
    assert math.isnan(win_rate([Verdict(1.0)], n_boot=100)["position_consistency"])


def test_win_rate_by_the_gold_judge() -> None:
    """Gold answers against wrong ones: every prompt a win; against themselves: every prompt a tie."""
    tasks = sample_tasks(9, seed=1)
    rng = random.Random(0)
    prompts = [t.prompt for t in tasks]
    gold = [FAMILIES[t.family].respond(t, rng) for t in tasks]
    bad = [FAMILIES[t.family].wrong(t, rng) for t in tasks]
    w, verdicts = judge_against(GoldJudge(), prompts, gold, bad, n_boot=200)
    assert w["mean"] == 1.0 and w["wins"] == 9 and len(verdicts) == 9
    w, _ = judge_against(GoldJudge(), prompts, gold, gold, n_boot=200)
    assert w["mean"] == 0.5 and w["ties"] == 9 and (w["lo"], w["hi"]) == (0.5, 0.5)


def test_bootstrap_interval_agrees_with_the_analytic_ones() -> None:
    """400 draws of a 0/1 outcome with p = 0.3 and 400 lengths: the percentile bootstrap (2000 resamples)
    lands within 0.01 of Wilson's interval for the rate and within 2% of mean ± 1.96 SE for the mean; the
    same seed gives the same interval."""
    rng = random.Random(7)
    xs = [float(rng.random() < 0.3) for _ in range(400)]
    boot = figure(xs, "rate", intervals="bootstrap", seed=3, n_boot=2000)
    lo, hi = wilson_interval(sum(xs), len(xs))
    assert boot["lo"] == pytest.approx(lo, abs=0.01) and boot["hi"] == pytest.approx(hi, abs=0.01)
    assert figure(xs, "rate", intervals="bootstrap", seed=3, n_boot=2000) == boot
    lengths = [rng.gauss(40, 10) for _ in range(400)]
    mean, se = mean_se(lengths)
    b = figure(lengths, "mean", intervals="bootstrap", seed=3, n_boot=2000)
    assert b["mean"] == pytest.approx(mean)
    assert b["lo"] == pytest.approx(mean - Z95 * se, rel=0.02) and b["hi"] == pytest.approx(mean + Z95 * se, rel=0.02)
    analytic = figure(lengths, "mean")
    assert (analytic["lo"], analytic["hi"]) == pytest.approx((mean - Z95 * se, mean + Z95 * se))


def test_paired_differences_cover_every_figure_measured_by_both() -> None:
    """b against a over the same two format prompts: format compliance 0 -> 1 and 1 -> 1, difference +0.5;
    tokens 3 -> 5 on both, difference +2 with SE 0 (no z)."""
    a = [Answered("format", 0.0, 0.0, 3, 0.0, 0.0, "x", formatted=0.0),
         Answered("format", 0.0, 0.0, 3, 0.0, 0.0, "x", formatted=1.0)]
    b = [Answered("format", 1.0, 0.0, 5, 1.0, 1.0, "xyz", formatted=1.0),
         Answered("format", 0.0, 0.0, 5, 0.0, 0.0, "xyz", formatted=1.0)]
    d = summarise({"a": a, "b": b}, baseline="a", intervals="bootstrap", n_boot=200)["b"]["vs_baseline"]
    assert d["format"]["difference"] == 0.5 and d["format"]["n"] == 2
    assert d["tokens"]["difference"] == 2.0 and d["tokens"]["se"] == 0.0 and math.isnan(d["tokens"]["z"])
    assert d["chars"]["difference"] == 2.0 and d["difference"] == 0.5  # accuracy at the top
    assert "proxy" not in d and "refusal_unsafe" not in d  # measured by neither
