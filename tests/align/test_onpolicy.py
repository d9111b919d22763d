"""`llmlab sample-prefs`: the pairing rule worked by hand, then whole runs on the tiny model whose pairs are
checked against an independent re-scoring (the task world's gold scorer, or the reward model itself)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from llmlab.align.onpolicy import SamplePrefsConfig, pair_from_samples, sample_prefs
from llmlab.config import load_config
from llmlab.errors import UserError

FAST = ["n=12", "samples=3", "max_new_tokens=6", "batch_size=8", "device=cpu"]


def cfg_for(model: Path, *changes: str) -> SamplePrefsConfig:
    return load_config(SamplePrefsConfig, None, [f"model={model}", *FAST, *changes])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


# ---------------------------------------------------------------------- the pairing rule


def test_best_against_the_most_frequent_worst() -> None:
    """Scores 0, 1, 0, 0.5, 0 on "7", "5", "8", "5?", "8": chosen is "5" (the only 1), rejected is "8"
    (two of the three zeros), the gap 1 - 0."""
    pair = pair_from_samples(["7", "5", "8", "5?", "8"], [0.0, 1.0, 0.0, 0.5, 0.0])
    assert pair == {"chosen": "5", "rejected": "8", "chosen_score": 1.0, "rejected_score": 0.0,
                    "chosen_source": "sample"}


def test_gold_replaces_a_best_sample_without_full_marks() -> None:
    """Best sample 0.5 < gold 1: chosen is the gold response; rejected the first of the equal worst."""
    pair = pair_from_samples(["abc", "ab", "a"], [0.5, 0.25, 0.25], gold="abcd")
    assert (pair["chosen"], pair["chosen_source"], pair["rejected"], pair["rejected_score"]) == ("abcd", "gold", "ab",
                                                                                                 0.25)
    # a sample with full marks stays the chosen one: on-policy text is preferred to the gold text
    assert pair_from_samples(["abcd ", "x"], [1.0, 0.0], gold="abcd")["chosen"] == "abcd "


def test_ties_and_small_gaps_give_no_pair() -> None:
    assert pair_from_samples(["5", "5 "], [1.0, 1.0], gold="5") is None  # all right: nothing to prefer
    assert pair_from_samples(["x", "y"], [0.0, 0.0]) is None  # all wrong, no gold: nothing to prefer
    assert pair_from_samples(["x", "y"], [0.2, 0.1], min_gap=0.1) is None  # gap 0.1 is not > 0.1
    assert pair_from_samples(["x", "y"], [0.3, 0.1], min_gap=0.1)["chosen"] == "x"
    with pytest.raises(ValueError, match="2 samples but 1 scores"):
        pair_from_samples(["x", "y"], [0.0])


def test_config_checks() -> None:
    with pytest.raises(UserError, match="samples must be at least 2"):
        load_config(SamplePrefsConfig, None, ["model=m", "samples=1"])
    with pytest.raises(UserError, match="reward_model"):
        load_config(SamplePrefsConfig, None, ["model=m", "scorer=rm"])


# ---------------------------------------------------------------------- whole runs


def test_gold_pairs_are_right_by_the_gold_scorer_and_load_as_dpo_data(tiny_model_dir: Path, tmp_path: Path) -> None:
    from llmlab.align.config import PairDataConfig
    from llmlab.align.data import load_preference_rows
    from llmlab.data.tasks import parse_task, score

    run = sample_prefs(cfg_for(tiny_model_dir), out=tmp_path / "a", quiet=True)
    rows = read_jsonl(run / "prefs.jsonl")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["prompts"] == 12 and summary["pairs"] + summary["no_pair"] == 12 and len(rows) == summary["pairs"]
    assert rows, "a random model's answers are mostly wrong, so most prompts give a pair"
    for row in rows:
        task = parse_task(row["prompt"])
        assert task is not None and row["meta"]["family"] == task.family
        assert score(row["prompt"], row["chosen"]) == row["meta"]["chosen_score"]
        assert score(row["prompt"], row["rejected"]) == row["meta"]["rejected_score"]
        assert row["meta"]["chosen_score"] > row["meta"]["rejected_score"]
        assert len(row["meta"]["sample_scores"]) == 3
    loaded, skipped = load_preference_rows(PairDataConfig(input=(str(run / "prefs.jsonl"),)))
    assert len(loaded) == len(rows) and not skipped
    # same seed, same pairs
    again = sample_prefs(cfg_for(tiny_model_dir), out=tmp_path / "b", quiet=True)
    assert (again / "prefs.jsonl").read_bytes() == (run / "prefs.jsonl").read_bytes()


def test_reward_model_scorer_ranks_by_the_reward(tiny_model_dir: Path, tmp_path: Path) -> None:
    """scorer=rm on the user's prompts: every pair's chosen has the higher reward when the reward model
    scores it again, and no gold response is used."""
    from llmlab.align.models import load_policy
    from llmlab.align.reward_model import (
        load_reward_model,
        reward_model_from_policy,
        save_reward_model,
        score_texts,
    )

    policy, tok = load_policy(str(tiny_model_dir), device="cpu")
    rm_dir = save_reward_model(reward_model_from_policy(policy), tok, tmp_path / "rm")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ("Tell me a story.", "What is 2+3?",
                                                                             "Name a colour.")))
    run = sample_prefs(cfg_for(tiny_model_dir, f"input=[{prompts}]", "scorer=rm", f"reward_model={rm_dir}",
                               "samples=4"), out=tmp_path / "r", quiet=True)
    rows = read_jsonl(run / "prefs.jsonl")
    assert len(rows) == 3  # four samples of a random model never all score alike
    rm, rm_tok = load_reward_model(rm_dir)
    for row in rows:
        chosen, rejected = score_texts(rm, rm_tok, [(row["prompt"], row["chosen"]), (row["prompt"], row["rejected"])])
        assert chosen == pytest.approx(row["meta"]["chosen_score"], abs=1e-5) and chosen > rejected
        assert row["meta"]["chosen_source"] == "sample"


def test_hf_policy_samples(tiny_hf_dir: Path, tmp_path: Path) -> None:
    run = sample_prefs(cfg_for(tiny_hf_dir, "n=6"), out=tmp_path / "hf", quiet=True)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["prompts"] == 6 and summary["pairs"] >= 1


def test_foreign_prompt_with_the_gold_scorer_is_a_one_line_error(tiny_model_dir: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from llmlab.cli import main

    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "What is 2 + 3?"}) + "\n" + json.dumps({"prompt": "Hello?"}) + "\n")
    code = main(["sample-prefs", "--model", str(tiny_model_dir), "--input", str(prompts), "--out",
                 str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and f"{prompts}:2" in err and "not a task-world prompt" in err and "Traceback" not in err


def test_strict_false_skips_foreign_prompts_and_lists_them(tiny_model_dir: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "What is 2 + 3?"}) + "\n" + json.dumps({"prompt": "Hello?"}) + "\n")
    run = sample_prefs(cfg_for(tiny_model_dir, f"input=[{prompts}]", "strict=false"), out=tmp_path / "run",
                       quiet=True)
    assert json.loads((run / "summary.json").read_text())["prompts"] == 1
    assert f"skipped row: {prompts}:2: not a task-world prompt" in (run / "log.txt").read_text()


def test_task_world_prompts_follow_the_tasks_setting(tiny_model_dir: Path, tmp_path: Path) -> None:
    """tasks.* sets the families and difficulty of the drawn prompts (the demo passes its own)."""
    from llmlab.data.tasks import parse_task

    run = sample_prefs(cfg_for(tiny_model_dir, "tasks.families=[compare]", "tasks.max_number=20"), out=tmp_path / "a",
                       quiet=True)
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["families"]) == {"compare"}
    for row in read_jsonl(run / "prefs.jsonl"):
        task = parse_task(row["prompt"])
        assert task is not None and task.family == "compare" and all(int(n) <= 20 for n in re.findall(r"\d+", row["prompt"]))
