"""The judge interface: the gold judge against the task world's own scorer, verdicts by hand."""

import math

import pytest

from llmlab.align.feedback.judges import (
    GoldJudge,
    Score,
    ScoringJudge,
    Verdict,
    both_orders,
    build_judge,
    position_consistency,
)
from llmlab.data.tasks import sample_tasks, score
from llmlab.errors import UserError


def test_gold_judge_scores_as_the_task_world_and_prefers_the_gold_answer():
    tasks = sample_tasks(27, seed=4)
    prompts = [t.prompt for t in tasks]
    wrong = ["I think it is 3." for _ in tasks]
    judge = build_judge("gold")
    assert [s.value for s in judge.score(prompts, wrong)] == [score(p, r) for p, r in zip(prompts, wrong, strict=True)]
    verdicts = judge.compare(prompts, [t.answer for t in tasks], wrong)
    for t, v, w in zip(tasks, verdicts, wrong, strict=True):
        want = 1.0 if t.score(t.answer) > t.score(w) else 0.5
        assert v.p_a == want and v.label == ("a" if want == 1.0 else "tie")
    with pytest.raises(UserError, match="task-world"):
        GoldJudge().score(["Write me a poem."], ["ok"])
    with pytest.raises(UserError, match="unknown judge 'oracle'"):
        build_judge("oracle=x")


def test_bradley_terry_verdicts_from_scores():
    class Fixed(ScoringJudge):
        temperature = 2.0

        def score(self, prompts, responses):
            return [Score(float(len(r))) for r in responses]

    (v,) = Fixed().compare(["p"], ["abcd"], ["ab"])
    assert v.p_a == pytest.approx(1 / (1 + 2.718281828459045 ** -1.0))
    assert Verdict(0.5).label == "tie" and Verdict(0.2).label == "b"
    with pytest.raises(ValueError):
        Fixed().compare(["p"], ["a", "b"], ["c"])


def test_both_orders_cancels_a_pure_position_bias_and_counts_consistency():
    def first_biased(prompts, a, b):  # prefers the longer answer, plus a 0.2 pull towards the first shown
        return [Verdict((0.7 if len(x) > len(y) else 0.2 if len(x) < len(y) else 0.5) + 0.2)
                for x, y in zip(a, b, strict=True)]

    verdicts = both_orders(first_biased, ["p"] * 3, ["long answer", "x", "same"], ["y", "long answer", "also"])
    assert [v.p_a for v in verdicts] == pytest.approx([(0.9 + 0.6) / 2, (0.4 + 0.1) / 2, (0.7 + 0.3) / 2])
    assert [v.consistent for v in verdicts] == [True, True, False]  # equal lengths: the first shown wins both times
    assert position_consistency(verdicts) == pytest.approx(2 / 3)
    assert position_consistency([Verdict(0.3)]) != position_consistency([Verdict(0.3)])  # NaN: none judged twice


def test_rm_judge_scores_as_the_reward_model_and_compares_by_bradley_terry(tiny_model_dir, tmp_path) -> None:
    import torch

    from llmlab.align.models import load_policy
    from llmlab.align.reward_model import reward_model_from_policy, save_reward_model, score_texts

    policy, tok = load_policy(str(tiny_model_dir), device="cpu")
    torch.manual_seed(0)
    rm = reward_model_from_policy(policy).eval()
    folder = save_reward_model(rm, tok, tmp_path / "rm")
    prompts, a, b = ["What is 2+3?", "Name a colour."], ["5", "Blue."], ["It is six, I think.", "No."]
    want_a, want_b = score_texts(rm, tok, list(zip(prompts, a, strict=True))), score_texts(rm, tok, list(zip(prompts, b, strict=True)))
    assert want_a != want_b
    assert [s.value for s in build_judge(f"rm={folder}").score(prompts, a)] == want_a  # the same weights, exactly
    for spec in (f"rm={folder}", f"rm={folder / 'hf'}"):  # the llmlab folder and its HF sequence-classifier copy
        judge = build_judge(spec)
        assert [s.value for s in judge.score(prompts, a)] == pytest.approx(want_a, abs=1e-4)
        verdicts = judge.compare(prompts, a, b)
        assert [v.p_a for v in verdicts] == pytest.approx(
            [1 / (1 + math.exp(-(x - y))) for x, y in zip(want_a, want_b, strict=True)], abs=1e-4)
    with pytest.raises(UserError, match="not a reward model folder"):
        build_judge(f"rm={tiny_model_dir}")
    with pytest.raises(UserError, match="needs a reward model folder"):
        build_judge("rm")
