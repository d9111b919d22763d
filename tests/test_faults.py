"""Fault injection: a SIGKILL in the middle of writing a checkpoint, and in the middle of training a
tokenizer. Each time the previous results are intact, and resuming (or rerunning) gives exactly what the
uninterrupted run gives. (SIGKILL between steps, for every trainer: tests/align/test_trainers.py; a full
disk: tests/train/test_reliability.py and tests/tokenizers/test_commands.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import kill_after_step, subprocess_environment
from llmlab.cli import main

pytestmark = pytest.mark.slow


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def test_sigkill_while_writing_a_checkpoint(tiny_tokenizer_dir: Path, tmp_path: Path) -> None:
    """Checkpoints every 2 steps of 6; killed inside the third checkpoint write (the step-6 one, after its
    model files are written, before its trainer state): the half-written folder is a .tmp that nothing
    reads, `--resume` continues from step 4 and logs the uninterrupted run's losses."""
    args = ["pretrain", "--tokenizer", str(tiny_tokenizer_dir), "--quiet", "model.vocab_size=400", "model.d_model=32",
            "model.n_layers=2", "model.n_heads=4", "model.max_seq_len=64", "train.seq_len=32", "train.batch_size=4",
            "train.max_steps=6", "train.checkpoint_every=2", "train.keep_checkpoints=5", "train.eval_every=0",
            "train.sample_tokens=0", "train.device=cpu", "data.corpus_chars=20000",
            f"data.cache_dir={tmp_path / 'cache'}"]
    assert main([*args[:1], "--out", str(tmp_path / "A"), *args[1:]]) == 0
    run_b = tmp_path / "B"
    kill_after_step([*args[:1], "--out", str(run_b), *args[1:]], 0, tmp_path, call="torch:save:3")
    checkpoints = sorted(p.name for p in (run_b / "checkpoints").iterdir())
    assert checkpoints == [".step-0000006.tmp", "step-0000002", "step-0000004"]
    assert json.loads((run_b / "status.json").read_text())["status"] == "running"  # it never got to say more
    resumed = subprocess.run([sys.executable, "-m", "llmlab", "pretrain", "--resume", str(run_b), "--quiet"],
                             env=subprocess_environment(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert losses(run_b) == losses(tmp_path / "A")
    assert sorted(p.name for p in (run_b / "checkpoints").iterdir()) == ["step-0000002", "step-0000004",
                                                                         "step-0000006"]


def test_sigkill_while_training_a_tokenizer_then_rerun(tmp_path: Path) -> None:
    """Killed when it starts writing its results: nothing half-written is left as a result, and the same
    command run again in the same folder (its run never finished) gives the uninterrupted tokenizer.json."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"line {i}: the quick brown fox {i * 7} jumps.\n\n" for i in range(400)))
    args = ["tokenizer", "train", "--input", str(corpus), "--vocab-size", "400", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "A")]) == 0
    kill_after_step([*args, "--out", str(tmp_path / "B")], 0, tmp_path, call="llmlab.files:atomic_open:1")
    assert not (tmp_path / "B" / "tokenizer.json").exists()
    assert main([*args, "--out", str(tmp_path / "B")]) == 0
    assert (tmp_path / "B" / "tokenizer.json").read_bytes() == (tmp_path / "A" / "tokenizer.json").read_bytes()


def test_ctrl_c_writes_a_checkpoint_then_resume_continues_exactly(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A Ctrl-C (SIGINT) after step 3 of an SFT run with checkpoints every 10 steps: the run writes a
    step-3 checkpoint, exits with 130 and says "interrupted"; `--resume` then logs the uninterrupted
    run's losses. Before, a Ctrl-C before the first checkpoint lost everything."""
    from conftest import PAUSE_HOOK

    args = ["sft", "--model", str(tiny_model_dir), "--quiet", "train.max_steps=6", "train.batch_size=4",
            "train.checkpoint_every=10", "train.log_every=1", "train.eval_every=0", "train.warmup_steps=1",
            "train.device=cpu", "data.n=24"]
    assert main([*args[:1], "--out", str(tmp_path / "A"), *args[1:]]) == 0
    hook = tmp_path / "hook.py"
    hook.write_text(PAUSE_HOOK)
    env = {**subprocess_environment(), "PAUSE_AT": "3", "PAUSE_SIGINT": "1", "PAUSE_MARKER": str(tmp_path / "m")}
    interrupted = subprocess.run([sys.executable, str(hook), *args[:1], "--out", str(tmp_path / "B"), *args[1:]],
                                 env=env, capture_output=True, text=True, timeout=300)
    assert interrupted.returncode == 130, interrupted.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "B" / "checkpoints").iterdir()) == ["step-0000003"]
    assert json.loads((tmp_path / "B" / "status.json").read_text())["status"] == "interrupted"
    assert "interrupted after step 3" in (tmp_path / "B" / "log.txt").read_text()
    assert main(["sft", "--resume", str(tmp_path / "B"), "--quiet"]) == 0
    assert losses(tmp_path / "B") == losses(tmp_path / "A")
