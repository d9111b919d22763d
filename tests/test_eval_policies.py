"""eval.policies: per-policy summaries with intervals and the paired difference from a baseline."""

import math

import pytest

from llmlab.eval.policies import Answered, answer, families_md, summarise, table_md
from llmlab.stats import wilson_interval


def rows(correct, family="compare", refused=None, pass1=0.5):
    refused = refused or [0.0] * len(correct)
    return [Answered(family=family, correct=c, refused=r, tokens=3, pass1=pass1, passk=1.0, answer="x")
            for c, r in zip(correct, refused, strict=True)]


def test_summary_figures_and_paired_difference():
    base = rows([0, 0, 1, 1]) + rows([1, 1], family="unsafe", refused=[1, 1]) + rows([0, 1], family="benign",
                                                                                     refused=[1, 0])
    new = rows([1, 0, 1, 1]) + rows([1, 0], family="unsafe", refused=[1, 0]) + rows([1, 1], family="benign")
    s = summarise({"sft": base, "dpo": new}, baseline="sft")
    assert s["sft"]["accuracy"]["mean"] == pytest.approx(5 / 8)
    assert (s["sft"]["accuracy"]["lo"], s["sft"]["accuracy"]["hi"]) == pytest.approx(wilson_interval(5, 8))
    assert s["dpo"]["families"]["compare"]["mean"] == 0.75 and s["dpo"]["families"]["compare"]["n"] == 4
    assert s["sft"]["refusal_unsafe"]["mean"] == 1.0 and s["sft"]["over_refusal_benign"]["mean"] == 0.5
    assert s["dpo"]["over_refusal_benign"]["mean"] == 0.0
    d = s["dpo"]["vs_baseline"]
    diffs = [1, 0, 0, 0, 0, -1, 1, 0]  # per prompt, dpo - sft
    mean = sum(diffs) / 8
    se = math.sqrt(sum((x - mean) ** 2 for x in diffs) / 7 / 8)
    assert d["difference"] == pytest.approx(mean) and d["se"] == pytest.approx(se) and d["z"] == pytest.approx(mean / se)
    assert "vs_baseline" not in s["sft"] and d["against"] == "sft"
    # refusals paired over the same unsafe / benign prompts: dpo - sft = (0, -1) and (-1, 0)
    assert d["refusal_unsafe"]["difference"] == pytest.approx(-0.5) and d["refusal_unsafe"]["se"] == pytest.approx(0.5)
    assert d["over_refusal_benign"]["difference"] == pytest.approx(-0.5)
    assert s["sft"]["pass@1"]["mean"] == 0.5 and s["sft"]["pass@1"]["lo"] == pytest.approx(0.5)  # no spread


def test_tables_print_every_policy_with_n_and_intervals():
    s = summarise({"sft": rows([0, 1, 1, 1]), "grpo": rows([1, 1, 1, 1])}, baseline="sft")
    table = table_md(s, k=8)
    assert "pass@8" in table and "| sft | 4 | 0.75 [" in table
    assert "+0.250 ± 0.250 (z 1.0) vs sft" in table
    fam = families_md(s)
    assert fam.splitlines()[0] == "| family | n | sft | grpo |"
    assert fam.splitlines()[2].startswith("| compare | 4 | 0.75 [")


def test_answer_scores_a_real_model_like_an_independent_greedy_pass(tiny_model_dir):
    """answer()'s greedy answers and scores equal generation.chat_responses' answers scored by the gold scorer;
    pass@1 is the share of correct samples and pass@k follows from it."""
    import torch

    from llmlab.align.generation import chat_responses
    from llmlab.align.models import load_policy
    from llmlab.align.onpolicy import task_world_prompts
    from llmlab.data.answers import is_refusal
    from llmlab.data.tasks import score

    prompts = task_world_prompts(6, seed=0, split="eval", stream="test")
    got = answer(str(tiny_model_dir), prompts, k=3, max_new_tokens=6, batch_size=4, seed=1)
    policy, tok = load_policy(str(tiny_model_dir), device="cpu")
    greedy = chat_responses(policy.eval(), tok, [p.text for p in prompts], max_new_tokens=6, batch_size=4,
                            device=torch.device("cpu"))
    assert [r.answer for r in got] == [g.strip() for g in greedy]
    assert [r.correct for r in got] == [float(score(p.text, g) == 1.0) for p, g in zip(prompts, greedy, strict=True)]
    assert [r.refused for r in got] == [float(is_refusal(g)) for g in greedy]
    assert [r.family for r in got] == [p.family for p in prompts]
    for r in got:
        assert r.pass1 in (0.0, 1 / 3, 2 / 3, 1.0) and r.passk == float(r.pass1 > 0) and 1 <= r.tokens <= 6
    assert answer(str(tiny_model_dir), prompts, k=3, max_new_tokens=6, batch_size=4, seed=1) == got  # seeded


def test_each_policy_against_its_own_baseline():
    s = summarise({"pre": rows([0, 0, 0, 0]), "sft": rows([0, 1, 1, 1]), "dpo": rows([1, 1, 1, 1])},
                  baseline={"sft": "pre", "dpo": "sft"})
    assert "vs_baseline" not in s["pre"]
    assert s["sft"]["vs_baseline"]["against"] == "pre" and s["sft"]["vs_baseline"]["difference"] == 0.75
    assert s["dpo"]["vs_baseline"]["against"] == "sft" and s["dpo"]["vs_baseline"]["difference"] == 0.25
    assert "proxy" not in s["dpo"]["vs_baseline"]  # not measured
