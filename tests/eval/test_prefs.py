"""eval/prefs.py and eval/against_base.py: the side-by-side tables on stub policies with known answers,
preference accuracy by implicit reward, and a whole evaluation (and `llmlab eval-prefs`) on the tiny model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from llmlab.align.config import PrefEvalConfig
from llmlab.align.onpolicy import Prompt
from llmlab.data.answers import REFUSALS
from llmlab.data.config import GenerateConfig
from llmlab.data.corpora import eval_rows
from llmlab.data.tasks import FAMILIES, parse_task
from llmlab.eval.against_base import format_comparison, side_by_side
from llmlab.eval.policies import interval, scored
from llmlab.eval.prefs import preference_accuracy
from llmlab.stats import wilson_interval


def oracle(prompts: list[str]) -> list[str]:
    """The task world's own gold responses (refusals for unsafe prompts): every one scores 1."""
    rng = random.Random(0)
    out = []
    for p in prompts:
        task = parse_task(p)
        out.append(FAMILIES[task.family].respond(task, rng))
    return out


def refuser(prompts: list[str]) -> list[str]:
    return [REFUSALS[0]] * len(prompts)


def scored_answers(rows: list[dict], respond) -> list:
    prompts = [r["prompt"] for r in rows]
    return [scored(p, a, [], tokens=len(a.split())) for p, a in zip(prompts, respond(prompts), strict=True)]


def test_tables_on_stub_policies_with_known_answers() -> None:
    """18 prompts, 2 per family. The oracle is right everywhere and refuses only the unsafe prompts; the
    refuser refuses everything, which is right only on unsafe prompts (1 family of 9):
        oracle  accuracy 1, refusal on unsafe 1, over-refusal of benign look-alikes 0, format compliance 1
        refuser accuracy 2/18, refusal on unsafe 1, over-refusal 1, format 0, length len(REFUSALS[0])
    and the oracle's paired difference from the refuser: 16 of 18 prompts +1, 2 of them 0."""
    rows = list(eval_rows(GenerateConfig(kind="eval", n=18)))
    prompts = [Prompt(r["prompt"], r["family"], r["answer"]) for r in rows]
    summary, records = side_by_side(prompts, {"base": scored_answers(rows, refuser),
                                           "aligned": scored_answers(rows, oracle)})
    base, aligned = summary["base"], summary["aligned"]
    assert aligned["accuracy"]["mean"] == 1.0 and aligned["over_refusal_benign"]["mean"] == 0.0
    assert aligned["refusal_unsafe"]["mean"] == 1.0 and aligned["format"]["mean"] == 1.0
    assert base["accuracy"]["mean"] == pytest.approx(2 / 18) and base["over_refusal_benign"]["mean"] == 1.0
    assert base["refusal_unsafe"]["mean"] == 1.0 and base["format"]["mean"] == 0.0
    assert base["chars"]["mean"] == len(REFUSALS[0])
    assert (base["accuracy"]["lo"], base["accuracy"]["hi"]) == pytest.approx(wilson_interval(2, 18))
    assert set(base["families"]) == set(FAMILIES) and all(f["n"] == 2 for f in base["families"].values())
    assert base["families"]["unsafe"]["mean"] == 1.0 and base["families"]["arithmetic"]["mean"] == 0.0
    d = aligned["vs_baseline"]
    assert d["against"] == "base" and d["difference"] == pytest.approx(16 / 18)
    assert len(records) == 18 and set(records[0]) == {"prompt", "family", "answer", "base", "aligned"}
    assert records[0]["base"] == REFUSALS[0] and records[0]["answer"] == rows[0]["answer"]

    text = format_comparison(summary, {"n": 4, "accuracy": 0.75, "margin": 1.25, "base_accuracy": 0.5})
    lines = text.splitlines()
    assert "| family | n | base | aligned |" in lines
    assert f"| unsafe | 2 | {interval(base['families']['unsafe'])} | {interval(aligned['families']['unsafe'])} |" \
        in lines
    assert "| arithmetic | 2 | 0.00 [0.00, 0.66] | 1.00 [0.34, 1.00] |" in lines  # Wilson, 2 prompts
    assert any(line.startswith("| aligned | 18 | 1.00 [") and "+0.889 ± 0.076 (z 11.7) vs base" in line
               for line in lines)
    assert "pass@1" not in text  # not measured: no column
    assert "implicit-reward accuracy 0.750" in text


def test_sampled_answers_and_a_trainers_rows_in_the_report() -> None:
    """k=2 samples per prompt: the refuser's are two refusals, right only on the 2 unsafe prompts (pass@1 = 2/18);
    the oracle's are its own answer and a refusal: pass@1 1/2 on 16 prompts and 1 on the unsafe ones (10/18),
    pass@2 1 everywhere. The trainer's rows (`in_loop`) come as a table of their eval/* values."""
    rows = list(eval_rows(GenerateConfig(kind="eval", n=18)))
    prompts = [Prompt(r["prompt"], r["family"], r["answer"]) for r in rows]
    texts = [p.text for p in prompts]
    base = [scored(p, a, [a, a], tokens=1) for p, a in zip(texts, refuser(texts), strict=True)]
    aligned = [scored(p, a, [a, REFUSALS[0]], tokens=1) for p, a in zip(texts, oracle(texts), strict=True)]
    summary, _ = side_by_side(prompts, {"base": base, "aligned": aligned})
    assert summary["base"]["pass@1"]["mean"] == pytest.approx(2 / 18)
    assert summary["aligned"]["pass@1"]["mean"] == pytest.approx(10 / 18) and summary["aligned"]["pass@k"]["mean"] == 1
    assert summary["aligned"]["vs_baseline"]["pass@1"]["difference"] == pytest.approx(8 / 18)
    in_loop = {"start": {"step": 0, "eval/accuracy": 0.25, "eval/kl": 0.0},
               "end": {"step": 4, "eval/accuracy": 0.5, "eval/kl": 0.75}}
    text = format_comparison(summary, None, title="grpo", k=2, temperature=0.7, in_loop=in_loop)
    lines = text.splitlines()
    assert lines[0] == "# grpo" and "pass@1 and pass@2 from 2 answers per prompt sampled at temperature 0.7" in text
    assert any(line.startswith("| aligned | 18 | 1.00 [") and "| 0.56 [" in line and "| 1.00 [1.00, 1.00] |" in line
               for line in lines)
    assert "| accuracy | 0.250 | 0.500 |" in lines and "| kl | 0.000 | 0.750 |" in lines
    assert not any(line.startswith("| step ") for line in lines) and "preference pairs" not in text


def test_preference_accuracy_by_implicit_reward() -> None:
    """Pair 1: r_c = -1 - -2 = 1, r_r = -5 - -2 = -3, margin 4 (right). Pair 2: r_c = 0, r_r = 1, margin -1
    (wrong). Accuracy 1/2, mean margin 1.5; the base ranks neither right (ties are not right)."""
    policy = torch.tensor([[-1.0, -5.0, float("nan")], [-2.0, -1.0, float("nan")]])
    base = torch.full((2, 3), -2.0)
    assert preference_accuracy(policy, base) == {"n": 2, "accuracy": 0.5, "margin": 1.5, "base_accuracy": 0.0}


def test_evaluate_run_writes_the_report(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The policy is the base itself: implicit rewards are all zero, so accuracy 0 and margin 0, and both
    columns of every table are equal (greedy decoding is deterministic)."""
    from llmlab.align.dpo_train import task_world_pairs
    from llmlab.align.models import load_policy
    from llmlab.eval.prefs import evaluate_run

    policy, tok = load_policy(str(tiny_model_dir), device="cpu")
    lines: list[str] = []
    result = evaluate_run(policy, tok, base_path=str(tiny_model_dir), held_out=task_world_pairs(6, seed=0),
                          eval_cfg=PrefEvalConfig(n_prompts=9, max_new_tokens=6, batch_size=4), max_length=128,
                          max_prompt_length=96, device=torch.device("cpu"), out_dir=tmp_path, log=lines.append)
    prefs = result["preferences"]
    assert prefs["n"] == 6 and prefs["accuracy"] == 0.0 and prefs["margin"] == pytest.approx(0.0, abs=1e-5)
    base, aligned = result["generation"]["base"], result["generation"]["aligned"]
    assert base["accuracy"] == aligned["accuracy"] and base["accuracy"]["n"] == 9
    assert aligned["vs_baseline"]["difference"] == 0.0 and base["families"] == aligned["families"]
    for name in ("eval.md", "eval.json", "generations.jsonl", "family_scores.png"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert set(saved) == {"preferences", "generation"} and set(saved["generation"]) == {"base", "aligned"}
    records = [json.loads(x) for x in (tmp_path / "generations.jsonl").read_text().splitlines()]
    assert len(records) == 9 and all(r["base"] == r["aligned"] for r in records)
    assert any("eval.md" in line for line in lines)


def test_eval_prefs_command(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from llmlab.cli import main

    code = main(["eval-prefs", "--model", str(tiny_model_dir), "--base", str(tiny_model_dir), "--out",
                 str(tmp_path / "ev"), "--quiet", "eval.n_pairs=4", "eval.n_prompts=9", "eval.max_new_tokens=4",
                 "max_length=128", "max_prompt_length=96", "device=cpu"])
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("# Evaluation") and "| family |" in out
    assert (tmp_path / "ev" / "eval.json").is_file()


def test_eval_prefs_needs_a_base_outside_a_dpo_run(tiny_model_dir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from llmlab.cli import main

    code = main(["eval-prefs", "--model", str(tiny_model_dir), "--out", str(tmp_path / "ev"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "--base" in err


def test_eval_prefs_draws_prompts_and_pairs_from_eval_tasks(tiny_model_dir: Path, tmp_path: Path) -> None:
    from llmlab.cli import main

    assert main(["eval-prefs", "--model", str(tiny_model_dir), "--base", str(tiny_model_dir), "--out",
                 str(tmp_path / "ev"), "--quiet", "eval.n_pairs=4", "eval.n_prompts=6", "eval.max_new_tokens=4",
                 "max_length=128", "max_prompt_length=96", "device=cpu", "eval.tasks.families=[count,sort]"]) == 0
    records = [json.loads(x) for x in (tmp_path / "ev" / "generations.jsonl").read_text().splitlines()]
    assert len(records) == 6 and {r["family"] for r in records} == {"count", "sort"}
    saved = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert set(saved["generation"]["base"]["families"]) == {"count", "sort"}
