"""`torchrun --nproc_per_node=2 -m llmlab pretrain` on CPU (gloo): the same losses as one process.

Global batch 8 is 2 x 4 sequences: rank r takes the r-th half of each step's 8 sequences
(token_data.shard_of_step), DDP averages the gradients, and the logged loss is the mean over
ranks, so up to float rounding the trajectory equals one process with batch 8. Each torchrun
worker pays ~5-10 s of imports on the shared cores, hence `slow`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import one_thread
from llmlab.train.pretrain import pretrain

pytestmark = pytest.mark.slow

CHANGES = ("train.max_steps=6", "train.eval_every=3", "train.checkpoint_every=3", "train.keep_checkpoints=5")


def rows(run: Path) -> tuple[list[dict], list[dict]]:
    found = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in found if "loss" in r], [r for r in found if "val_loss" in r]


def torchrun(out: Path, overrides: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "llmlab", "pretrain", "--out", str(out), "--quiet", *overrides]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory, tiny_cfg) -> Path:
    with one_thread():
        return pretrain(tiny_cfg(*CHANGES), out=tmp_path_factory.mktemp("one") / "run", quiet=True)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory, tiny, subprocess_env: dict[str, str]) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "run"
    result = torchrun(out, tiny(*CHANGES), subprocess_env)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_ddp_matches_one_process(one_process: Path, ddp_run: Path) -> None:
    (one_train, one_eval), (ddp_train, ddp_eval) = rows(one_process), rows(ddp_run)
    assert [r["step"] for r in ddp_train] == [r["step"] for r in one_train] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(one_train, ddp_train, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["lr"] == a["lr"] and b["tokens"] == a["tokens"]
    for a, b in zip(one_eval, ddp_eval, strict=True):
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5)


def test_only_rank_0_writes(ddp_run: Path) -> None:
    """One row per step (two writers would double them), one log line per event, one set of checkpoints."""
    train, evals = rows(ddp_run)
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in evals] == [3, 6]
    log = (ddp_run / "log.txt").read_text()
    assert log.count("] model: ") == 1 and log.count("final model: ") == 1 and "2 process(es)" in log
    assert sorted(p.name for p in (ddp_run / "checkpoints").iterdir()) == ["step-0000003", "step-0000006"]
    samples = [json.loads(line) for line in (ddp_run / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == len({(s["step"], s["prompt"]) for s in samples})
    assert (ddp_run / "model.safetensors").is_file()


def test_fsdp_matches_ddp(tmp_path: Path, tiny, subprocess_env: dict[str, str], ddp_run: Path) -> None:
    out = tmp_path / "fsdp"
    result = torchrun(out, tiny(*CHANGES, "train.fsdp=true"), subprocess_env)
    assert result.returncode == 0, result.stderr[-3000:]
    (ddp_train, ddp_eval), (fsdp_train, fsdp_eval) = rows(ddp_run), rows(out)
    assert [r["step"] for r in fsdp_train] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(ddp_train, fsdp_train, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-4)
    for a, b in zip(ddp_eval, fsdp_eval, strict=True):
        assert b["val_loss"] == pytest.approx(a["val_loss"], abs=1e-4)
    from llmlab.model.io import load_model

    load_model(out / "checkpoints" / "step-0000006")  # the gathered full state dict is a loadable model
