"""`llmlab dpo` on the tiny model: learning, copy == precompute, every loss runs, NaN stop, exact resume,
LoRA, HF policies, and the warnings. Runs are in-process, on one thread, with the evaluation cut down."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from llmlab.align.config import DPOConfig
from llmlab.align.dpo import LOSSES
from llmlab.align.dpo_train import METRICS, dpo, likelihood_collapse
from llmlab.config import load_config
from llmlab.errors import UserError

FAST = ["data.n=48", "max_length=96", "max_prompt_length=64", "train.batch_size=8", "train.max_steps=4",
        "train.warmup_steps=1", "train.checkpoint_every=0", "train.device=cpu", "eval.n_pairs=0", "eval.n_prompts=0"]


def cfg_for(model: Path, *changes: str) -> DPOConfig:
    return load_config(DPOConfig, None, [f"model={model}", *FAST, *changes])


def metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


def test_loss_falls_and_accuracy_rises(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Ten steps on the same 16 pairs (two batches, so each is seen five times) at a high lr: the policy
    starts as the reference (loss log 2, margin 0, accuracy 0), then the loss falls and the pairs are
    ranked right. The held-out loss is logged at the end (train.eval_every); the run folder holds the policy
    and the checkpoint, and `llmlab dpo`'s finish adds the curves and the evaluation."""
    from llmlab.eval.prefs import finish_dpo_run

    cfg = cfg_for(tiny_model_dir, "data.n=16", "train.max_steps=10", "train.lr=1e-2", "train.checkpoint_every=5",
                  "eval.n_pairs=4", "eval.n_prompts=9", "eval.max_new_tokens=4")
    run = dpo(cfg, out=tmp_path / "run", quiet=True)
    finish_dpo_run(cfg, run, quiet=True)
    rows = [r for r in metrics(run) if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, 11))
    (held,) = [r for r in metrics(run) if "eval_loss" in r]
    assert held["step"] == 10 and 0.0 <= held["eval_accuracy"] <= 1.0 and math.isfinite(held["eval_loss"])
    for row in rows:
        assert set(METRICS) | {"grad_norm", "lr"} <= set(row)
    assert rows[0]["loss"] == pytest.approx(0.6931, abs=1e-3) and rows[0]["margin"] == pytest.approx(0, abs=1e-6)
    assert rows[0]["accuracy"] == 0.0
    assert sum(r["loss"] for r in rows[-2:]) / 2 < 0.6
    assert sum(r["accuracy"] for r in rows[-2:]) / 2 >= 0.75
    for name in ("model.yaml", "model.safetensors", "tokenizer.json", "curves.png", "eval.md", "eval.json",
                 "checkpoints/step-0000010/trainer_state.pt"):
        assert (run / name).is_file(), name


@pytest.mark.parametrize("loss", ["sigmoid", "kto"])
def test_copy_and_precompute_give_the_same_losses(tiny_model_dir: Path, tmp_path: Path, loss: str) -> None:
    """The precomputed reference log-probs are those the copied reference computes batch by batch (same
    batches, same padding): the logged losses, rewards and accuracies agree to 1e-5."""
    a = metrics(dpo(cfg_for(tiny_model_dir, f"loss={loss}", "reference=copy", "train.lr=1e-2"), out=tmp_path / "a",
                    quiet=True))
    b = metrics(dpo(cfg_for(tiny_model_dir, f"loss={loss}", "reference=precompute", "train.lr=1e-2"),
                    out=tmp_path / "b", quiet=True))
    assert len(a) == len(b) == 4
    for ra, rb in zip(a, b, strict=True):
        for key in (*METRICS, "grad_norm"):
            assert ra[key] == pytest.approx(rb[key], abs=1e-5), (ra["step"], key)
    assert a[-1]["margin"] != 0.0  # the policy moved, so the comparison is not between two zeros
    if loss == "kto":
        assert all("kl" in r for r in a)


@pytest.mark.parametrize("loss", sorted(set(LOSSES) - {"sigmoid", "kto"}))
def test_every_loss_trains(tiny_model_dir: Path, tmp_path: Path, loss: str) -> None:
    extra = ["label_smoothing=0.1"] if loss in ("cdpo", "robust") else []
    rows = metrics(dpo(cfg_for(tiny_model_dir, f"loss={loss}", "train.max_steps=2", *extra), out=tmp_path / "r",
                       quiet=True))
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    if loss == "orpo":
        assert "nll" in rows[0] and rows[0]["loss"] > rows[0]["nll"] > 0


def test_rpo_alpha_adds_the_chosen_responses_nll(tiny_model_dir: Path, tmp_path: Path) -> None:
    """At the first step the policy is the reference, so DPO's term is log 2 and the loss is
    log 2 + alpha * NLL(chosen), with the NLL logged beside it."""
    rows = metrics(dpo(cfg_for(tiny_model_dir, "rpo_alpha=0.5", "train.max_steps=1"), out=tmp_path / "r", quiet=True))
    assert rows[0]["nll"] > 0.5
    assert rows[0]["loss"] == pytest.approx(math.log(2.0) + 0.5 * rows[0]["nll"], abs=1e-5)


def test_rpo_alpha_is_refused_with_orpo(tiny_model_dir: Path) -> None:
    with pytest.raises(UserError, match="orpo_sft_weight"):
        cfg_for(tiny_model_dir, "loss=orpo", "rpo_alpha=1")


def test_nan_stops_and_keeps_the_last_good_checkpoint(tiny_model_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from llmlab.align import dpo_train
    from llmlab.errors import TrainingDiverged

    real = dpo_train.preference_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        loss, stats = real(*args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] == 3 else loss), stats

    monkeypatch.setattr(dpo_train, "preference_loss", poisoned)
    with pytest.raises(TrainingDiverged, match=r"step 3 .*step-0000002"):
        dpo(cfg_for(tiny_model_dir, "train.checkpoint_every=2"), out=tmp_path / "run", quiet=True)
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step-0000002"]
    assert "stopping" in (tmp_path / "run" / "log.txt").read_text()


@pytest.mark.parametrize("lora", [False, True])
def test_resume_gives_the_same_losses(tiny_model_dir: Path, tmp_path: Path, lora: bool) -> None:
    """A run of 4 steps, and a run stopped at its step-2 checkpoint then resumed to 4, log the same
    losses (the batches, the lr and the dropout seed are functions of the step; the optimiser and,
    with LoRA, the adapters come from the checkpoint)."""
    from llmlab.train.checkpoint import resumed_config

    extra = ["lora.r=4", "train.lr=1e-2"] if lora else ["train.lr=1e-2"]
    full = metrics(dpo(cfg_for(tiny_model_dir, "train.checkpoint_every=2", *extra), out=tmp_path / "full",
                       quiet=True))
    dpo(cfg_for(tiny_model_dir, "train.checkpoint_every=2", "train.max_steps=2", *extra), out=tmp_path / "part",
        quiet=True)
    cfg = resumed_config(DPOConfig, str(tmp_path / "part"), ("train.max_steps=4",))
    resumed = metrics(dpo(cfg, out=tmp_path / "part", quiet=True))
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(full, resumed, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6), a["step"]
        assert a["margin"] == pytest.approx(b["margin"], abs=1e-6), a["step"]


def test_hf_policy_with_precomputed_reference(tiny_hf_dir: Path, tmp_path: Path) -> None:
    """An HF folder trains through the same loop and comes back as an HF folder."""
    from llmlab.eval.prefs import finish_dpo_run

    cfg = cfg_for(tiny_hf_dir, "reference=precompute", "train.max_steps=2", "eval.n_pairs=2", "eval.n_prompts=9",
                  "eval.max_new_tokens=4")
    run = dpo(cfg, out=tmp_path / "hf", quiet=True)
    finish_dpo_run(cfg, run, quiet=True)
    assert (run / "config.json").is_file() and (run / "model.safetensors").is_file()
    assert [r["step"] for r in metrics(run) if "loss" in r] == [1, 2] and (run / "eval.json").is_file()


def test_likelihood_collapse() -> None:
    """Chosen log-prob -10 -> -14.5 (a drop of 4.5 > max(1, 0.5)) while the margin rises: a collapse; the
    same drop with a falling margin, or a small drop, is not."""
    assert likelihood_collapse([-10, -10, -14, -15], [0.1, 0.1, 0.5, 0.6], window=2)
    assert not likelihood_collapse([-10, -10, -14, -15], [0.6, 0.5, 0.1, 0.1], window=2)
    assert not likelihood_collapse([-10, -10, -10.5, -10.5], [0.1, 0.1, 0.5, 0.6], window=2)
    assert not likelihood_collapse([-10, -20], [0.0, 1.0], window=2)  # too few steps to tell


def test_margin_warning_is_logged_once(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = dpo(cfg_for(tiny_model_dir, "train.lr=3e-2", "warn_margin=0.01", "train.max_steps=4"), out=tmp_path / "w",
              quiet=True)
    log = (run / "log.txt").read_text()
    assert log.count("mean reward margin") == 1


def test_dpo_command_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    from llmlab.cli import main

    assert main(["dpo", "--model", str(tiny_model_dir), "--loss", "ipo", "--beta", "0.5", "--out",
                 str(tmp_path / "cli"), "--quiet", *FAST, "train.max_steps=1"]) == 0
    assert len(metrics(tmp_path / "cli")) == 1


def test_nan_skip_counts_and_finishes(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmlab.align import dpo_train

    real = dpo_train.preference_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        loss, stats = real(*args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] == 2 else loss), stats

    monkeypatch.setattr(dpo_train, "preference_loss", poisoned)
    run = dpo(cfg_for(tiny_model_dir, "train.on_nan=skip"), out=tmp_path / "run", quiet=True)
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 3, 4] and rows[-1]["nan_skips"] == 1
    assert (run / "checkpoints" / "step-0000004").is_dir()


@pytest.mark.slow
@pytest.mark.parametrize("reference", ["copy", "precompute"])
def test_ddp_matches_one_process(tiny_model_dir: Path, tmp_path: Path, reference: str) -> None:
    """torchrun with 2 processes (gloo) and the global batch of 8 split 4 + 4 logs the losses of one process
    with batch 8 (DDP averages the gradients; the metrics are averaged over ranks)."""
    import subprocess
    import sys

    from conftest import subprocess_environment

    overrides = [f"model={tiny_model_dir}", *FAST, f"reference={reference}", "train.lr=1e-2"]
    one = metrics(dpo(load_config(DPOConfig, None, overrides), out=tmp_path / "one", quiet=True))
    env = subprocess_environment()
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "llmlab", "dpo", "--out", str(tmp_path / "ddp"), "--quiet", *overrides],
                            env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    two = metrics(tmp_path / "ddp")
    assert len(one) == len(two) == 4
    for a, b in zip(one, two, strict=True):
        for key in ("loss", "margin", "accuracy", "logps/chosen"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-4), (a["step"], key)
