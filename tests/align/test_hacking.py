"""`llmlab hacking` end to end at toy size: the folders and files the lab promises, a summary that says
what its runs' own metrics say, best-of-n's KL column, and `--resume` finishing an interrupted lab without
rerunning what had finished. The lab's math (fits, detector, plots) is tested in test_overopt.py."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from llmlab.cli import main

TINY_LAB = ["--steps", "4", "n_prefs=20", "rm_steps=1", "n_prompts=2", "bon_n=[1,2]", "batch_size=2", "samples=2",
            "max_new_tokens=4", "frontier_kl_coefs=[0.1]", "frontier_dpo_betas=[0.1]", "device=cpu"]
RUNS = ("proxy", "mitigate-kl", "mitigate-stop", "mitigate-gold")


@pytest.fixture(scope="module")
def lab(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lab") / "hacking"
    assert main(["hacking", "--model", str(tiny_model_dir), "--out", str(out), "--quiet", *TINY_LAB]) == 0
    return out


def status(folder: Path) -> str:
    return json.loads((folder / "status.json").read_text())["status"]


def eval_rows(folder: Path) -> list[dict]:
    rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [r for r in rows if "eval/accuracy" in r]


def test_the_lab_writes_every_run_and_its_report(lab: Path) -> None:
    for name in ("report.md", "summary.json", "bon.json", "overoptimisation.png", "frontier.png",
                 "prefs/prefs.jsonl", "frontier/prefs.jsonl"):
        assert (lab / name).is_file(), name
    for folder in ("rm", *RUNS, "frontier/grpo-kl0.1", "frontier/ppo-kl0.1", "frontier/dpo-beta0.1"):
        assert status(lab / folder) == "finished", folder
    assert status(lab) == "finished"
    assert (lab / "overoptimisation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (lab / "report.md").read_text()
    assert all(f"| {name} |" in report for name in RUNS)


def test_the_summary_is_what_the_runs_logged(lab: Path) -> None:
    """Each run's start and end rows are its first and last eval rows; best-of-n's KL is log n - (n-1)/n;
    the frontier's GRPO points are the (KL, score) of each evaluation of its run."""
    summary = json.loads((lab / "summary.json").read_text())
    for name in RUNS:
        rows = eval_rows(lab / name)
        strip = [{k.removeprefix("eval/"): v for k, v in r.items() if k.startswith("eval/")} for r in (rows[0], rows[-1])]
        assert summary["runs"][name]["start"] == pytest.approx(strip[0], nan_ok=True)
        assert summary["runs"][name]["end"] == pytest.approx(strip[1], nan_ok=True)
    bon = summary["bon"]
    assert bon["n"] == [1, 2]
    assert bon["kl"] == pytest.approx([0.0, math.log(2) - 0.5])
    assert bon == json.loads((lab / "bon.json").read_text())
    grpo = [[r["eval/kl"], r["eval/score"]] for r in eval_rows(lab / "frontier/grpo-kl0.1")]
    assert summary["frontier"]["grpo, kl_coef 0.1"] == grpo
    assert len(summary["frontier"]["dpo, beta 0.1"]) == 2  # the SFT policy itself (KL 0) and the one DPO run
    assert summary["frontier"]["dpo, beta 0.1"][0][0] == 0.0
    assert set(summary["frontier"]) == {"grpo, kl_coef 0.1", "ppo, kl_coef 0.1", "dpo, beta 0.1"}


def test_resume_keeps_finished_runs_and_reruns_the_rest(lab: Path) -> None:
    """An interrupted lab (no report yet; mitigate-gold cut off after its checkpoint, mitigate-kl before any):
    `--resume` continues mitigate-gold from its checkpoint, reruns mitigate-kl from the start, writes the
    report; the proxy model, best-of-n and the finished runs' files are not touched."""
    (lab / "report.md").unlink()
    for name in ("mitigate-gold", "mitigate-kl"):
        (lab / name / "status.json").write_text(json.dumps({"status": "interrupted"}))
    shutil.rmtree(lab / "mitigate-kl" / "checkpoints")
    kept = {p: p.stat().st_mtime_ns for p in (lab / "rm" / "status.json", lab / "bon.json",
                                               lab / "proxy" / "metrics.jsonl", lab / "frontier/dpo-beta0.1/status.json")}
    assert main(["hacking", "--resume", str(lab), "--quiet"]) == 0
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    for name in ("mitigate-gold", "mitigate-kl"):
        assert status(lab / name) == "finished"
        steps = [r["step"] for r in map(json.loads, (lab / name / "metrics.jsonl").read_text().splitlines())
                 if "loss" in r]
        assert steps == [1, 2, 3, 4], name  # one run's rows, not two
    assert "resumed from" in (lab / "mitigate-gold" / "log.txt").read_text()
    assert (lab / "report.md").is_file()
    log = (lab / "log.txt").read_text()
    assert "proxy: finished before, kept" in log and "mitigate-gold: finished before" not in log


def test_resume_of_a_folder_that_is_no_lab_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMLAB_DEBUG", raising=False)
    assert main(["hacking", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no config.yaml there" in err[0]
