"""`llmlab dpo` and `llmlab rm train` on a JSONL whose rows carry soft labels (p_chosen), end to end through
the CLI on the tiny model, one step each, checked against what the first step must give by hand.

DPO, first step: the policy is the reference, so h = 0 for every pair. The sigmoid loss with soft label p
is -p log sigma(beta h) - (1 - p) log sigma(-beta h), whose value at h = 0 is log 2 for every p and whose
slope in h is -beta (p sigma(-beta h) - (1 - p) sigma(beta h)) = -beta (2p - 1) / 2: (2p - 1) times the hard
label's. With p = 0.75 on every pair, the first step's gradient is half the hard labels' gradient, so its
norm (logged before clipping) is half too.

Reward model, first step (same seed, same initial head, so the same rewards and the same mean margin
d = r_c - r_r): with p = 0.5, soft Bradley-Terry is (softplus(-d) + softplus(d)) / 2 = softplus(-d) + d / 2,
so the logged loss is the hard loss plus half the logged margin.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from llmlab.cli import main

ROWS = [{"prompt": f"Question {i}: is it good?", "chosen": f"Yes, good {i}.", "rejected": f"No, bad {i}."}
        for i in range(16)]
COMMON = ["--quiet", "max_length=64", "max_prompt_length=32", "train.batch_size=8", "train.max_steps=1",
          "train.warmup_steps=1", "train.checkpoint_every=0", "train.log_every=1", "train.eval_every=0",
          "train.device=cpu", "data.eval_fraction=0"]
DPO = ["dpo", *COMMON, "eval.n_pairs=0", "eval.n_prompts=0"]
RM = ["rm", "train", *COMMON]


def write_pairs(path: Path, p_chosen: float | None) -> Path:
    extra = {} if p_chosen is None else {"p_chosen": p_chosen}
    path.write_text("".join(json.dumps(r | extra) + "\n" for r in ROWS), encoding="utf-8")
    return path


def first_step(run: Path) -> dict:
    return next(json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in x)


def test_dpo_command_trains_on_soft_labels(tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = {}
    for name, p in (("hard", None), ("soft", 0.75)):
        data = write_pairs(tmp_path / f"{name}.jsonl", p)
        assert main([*DPO, "--model", str(tiny_model_dir), "--input", str(data), "--out", str(tmp_path / name)]) == 0
        rows[name] = first_step(tmp_path / name)
    assert rows["hard"]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert rows["soft"]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert rows["hard"]["grad_norm"] > 1e-3
    assert rows["soft"]["grad_norm"] == pytest.approx(0.5 * rows["hard"]["grad_norm"], rel=1e-3)
    assert "soft labels: 16 of 16 pairs have p_chosen < 1" in (tmp_path / "soft" / "log.txt").read_text()


def test_rm_command_trains_on_soft_labels(tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = {}
    for name, p in (("hard", None), ("soft", 0.5)):
        data = write_pairs(tmp_path / f"{name}.jsonl", p)
        assert main([*RM, "--model", str(tiny_model_dir), "--input", str(data), "--out", str(tmp_path / name)]) == 0
        rows[name] = first_step(tmp_path / name)
    assert rows["soft"]["margin"] == pytest.approx(rows["hard"]["margin"], abs=1e-6)
    assert abs(rows["hard"]["margin"]) > 1e-3  # the random head separates the pairs a little
    assert rows["soft"]["loss"] == pytest.approx(rows["hard"]["loss"] + 0.5 * rows["hard"]["margin"], abs=1e-5)
    assert "16 with a soft label p_chosen < 1" in (tmp_path / "soft" / "log.txt").read_text()


def test_a_loss_without_soft_labels_is_refused_before_training(tiny_model_dir: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """kto takes no soft labels: exit 2 with one line saying so and how to go on; data.soft_labels=false
    trains on the labels alone."""
    data = write_pairs(tmp_path / "soft.jsonl", 0.75)
    argv = [*DPO, "--model", str(tiny_model_dir), "--input", str(data), "--loss", "kto"]
    assert main([*argv, "--out", str(tmp_path / "kto")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the data has soft labels") and "data.soft_labels=false" in err and "\n" not in err
    assert main([*argv, "--out", str(tmp_path / "hard"), "data.soft_labels=false"]) == 0
