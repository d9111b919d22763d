"""Run folders that never mix, runs that say how they ended, and checkpoints that survive trouble:
a folder holding another run, status.json, NaN in metrics, the bound on skipped updates, a NaN held-out
loss, pruning that keeps the last good checkpoint, a damaged latest checkpoint, a full disk mid-save,
a changed model shape on resume, and a corpus of one paragraph."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch

from llmlab.cli import main
from llmlab.errors import TrainingDiverged, UserError
from llmlab.runs import outcome, start_run
from llmlab.train.checkpoint import find_checkpoint, last_checkpoint, list_checkpoints, save_checkpoint
from llmlab.train.config import TrainConfig
from llmlab.train.pretrain import pretrain


def rows(run: Path) -> list[dict]:
    # json.loads would accept a bare NaN; parse_constant makes it an error, as strict readers do
    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return [json.loads(x, parse_constant=refuse) for x in (run / "metrics.jsonl").read_text().splitlines() if x]


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


def test_a_folder_holding_a_run_is_refused_unless_resumed(tmp_path: Path, tiny, tiny_cfg,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    run = pretrain(tiny_cfg("train.max_steps=3", "train.eval_every=0"), out=tmp_path / "run", quiet=True)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert main(["pretrain", "--out", str(run), "--quiet", *tiny("train.max_steps=2")]) == 2
    line = one_error_line(capsys)
    assert "already holds a run or a model" in line and f"--resume {run}" in line
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert main(["tokenizer", "train", "--out", str(run), "--vocab-size", "300", "--quiet"]) == 2
    one_error_line(capsys)
    assert main(["pretrain", "--resume", str(run), "--quiet", "train.max_steps=4"]) == 0
    assert [r["step"] for r in rows(run) if "loss" in r] == [1, 2, 3, 4]


def test_out_naming_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        start_run("x", TrainConfig(), out=tmp_path / "f")


def test_the_folder_says_how_the_run_ended(tmp_path: Path, tiny, tiny_cfg, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """status.json: "running" while it runs, then "finished", or "failed" with the error (also in log.txt);
    a folder whose run failed and left no checkpoint is reused by the next run, with its rows cleared."""
    with outcome():
        done = pretrain(tiny_cfg("train.max_steps=2", "train.eval_every=0"), out=tmp_path / "ok", quiet=True)
        assert json.loads((done / "status.json").read_text()) == {"status": "running"}
    assert json.loads((done / "status.json").read_text()) == {"status": "finished"}

    import llmlab.train.pretrain as module

    real = module.finish_step

    def boom(*args, **kwargs):
        if kwargs["done"] == 2:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "finish_step", boom)
    argv = ["pretrain", "--out", str(tmp_path / "bad"), "--quiet", *tiny("train.max_steps=2", "train.eval_every=0")]
    with pytest.raises(RuntimeError):
        main(argv)
    status = json.loads((tmp_path / "bad" / "status.json").read_text())
    assert status == {"status": "failed", "error": "RuntimeError: disk on fire"}
    assert "run failed: RuntimeError: disk on fire" in (tmp_path / "bad" / "log.txt").read_text()
    assert [r["step"] for r in rows(tmp_path / "bad")] == [1]
    monkeypatch.setattr(module, "finish_step", real)
    assert main(argv) == 0  # nothing to resume there: the rerun takes the folder over
    assert [r["step"] for r in rows(tmp_path / "bad") if "loss" in r] == [1, 2]
    assert json.loads((tmp_path / "bad" / "status.json").read_text()) == {"status": "finished"}


def poison_losses(monkeypatch: pytest.MonkeyPatch, steps: set[int]) -> None:
    import llmlab.train.pretrain as module

    real = module.finish_step

    def poisoned(model, optimizer, loss, **kwargs):
        return real(model, optimizer, float("nan") if kwargs["done"] in steps else loss, **kwargs)

    monkeypatch.setattr(module, "finish_step", poisoned)


def test_skipped_updates_are_bounded_and_metrics_stay_json(tmp_path: Path, tiny_cfg,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Three NaN steps with max_nan_skips=2: the third stops the run; every metrics line is strict JSON."""
    poison_losses(monkeypatch, {2, 3, 4})
    with pytest.raises(TrainingDiverged, match=r"3 updates skipped, more than train.max_nan_skips=2"):
        pretrain(tiny_cfg("train.max_steps=6", "train.on_nan=skip", "train.max_nan_skips=2", "train.eval_every=0"),
                 out=tmp_path / "run", quiet=True)
    assert [r["step"] for r in rows(tmp_path / "run") if "loss" in r] == [1]


def test_a_nan_held_out_loss_stops_even_with_skip(tmp_path: Path, tiny_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    import llmlab.train.pretrain as module

    real = module.evaluate
    monkeypatch.setattr(module, "evaluate", lambda *a, **k: real(*a, **k) | {"val_loss": float("nan")})
    with pytest.raises(TrainingDiverged, match=r"step 3 the held-out val_loss is nan"):
        pretrain(tiny_cfg("train.max_steps=6", "train.on_nan=skip", "train.eval_every=3"), out=tmp_path / "run",
                 quiet=True)
    (evaluated,) = [r for r in rows(tmp_path / "run") if "val_ppl" in r]
    assert evaluated["val_loss"] is None  # written as null, not NaN


def test_pruning_keeps_the_last_good_checkpoint(tmp_path: Path, tiny_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkpoints every 2 steps, keep 1; a skipped update at step 3 makes the step-4 and later ones
    not good... until one follows a clean stretch. The step-2 checkpoint, the last before trouble,
    survives pruning until then, and the NaN stop names it."""
    poison_losses(monkeypatch, {3, 5})
    run = pretrain(tiny_cfg("train.max_steps=6", "train.on_nan=skip", "train.checkpoint_every=2",
                            "train.keep_checkpoints=1", "train.eval_every=0"), out=tmp_path / "run", quiet=True)
    assert [c.name for c in list_checkpoints(run / "checkpoints")] == ["step-0000002", "step-0000006"]
    assert last_checkpoint(run).endswith("step-0000002")


def test_a_damaged_latest_checkpoint_falls_back(tmp_path: Path, tiny_cfg, capsys: pytest.CaptureFixture[str]) -> None:
    run = pretrain(tiny_cfg("train.max_steps=4", "train.checkpoint_every=2", "train.eval_every=0"),
                   out=tmp_path / "run", quiet=True)
    weights = run / "checkpoints" / "step-0000004" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert find_checkpoint(run).name == "step-0000002"
    assert "step-0000004 is damaged (model.safetensors: " in capsys.readouterr().err
    state = run / "checkpoints" / "step-0000002" / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:50])
    with pytest.raises(UserError, match="every checkpoint is damaged"):
        find_checkpoint(run)


def test_a_full_disk_mid_checkpoint_leaves_the_old_ones(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    save_checkpoint(root, 1, write_model=lambda d: d.mkdir(), optimizer_state={}, cfg=TrainConfig(), counters={},
                    keep=2)

    def full(directory: Path) -> None:
        directory.mkdir()
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        save_checkpoint(root, 2, write_model=full, optimizer_state={}, cfg=TrainConfig(), counters={}, keep=2)
    assert sorted(p.name for p in root.iterdir()) == ["step-0000001"]


def test_resume_with_a_changed_model_shape_is_one_line(tmp_path: Path, tiny_cfg,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    run = pretrain(tiny_cfg("train.max_steps=2", "train.eval_every=0"), out=tmp_path / "run", quiet=True)
    assert main(["pretrain", "--resume", str(run), "--quiet", "model.d_model=128", "train.max_steps=3"]) == 2
    assert "do not fit the model as configured now" in one_error_line(capsys)


def test_resume_refuses_out_rather_than_ignoring_it(tmp_path: Path, tiny_cfg,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    run = pretrain(tiny_cfg("train.max_steps=2", "train.eval_every=0"), out=tmp_path / "run", quiet=True)
    steps = rows(run)[-1]["step"]
    assert main(["pretrain", "--resume", str(run), "--out", str(tmp_path / "elsewhere"), "--quiet",
                 "train.max_steps=3"]) == 2
    assert "a resumed run continues in its own folder; drop --out" in one_error_line(capsys)
    assert not (tmp_path / "elsewhere").exists() and rows(run)[-1]["step"] == steps  # nothing ran


def test_a_corpus_of_one_paragraph_trains(tmp_path: Path, tiny_cfg) -> None:
    text = tmp_path / "one.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 60)  # one document, no blank line
    run = pretrain(tiny_cfg("train.max_steps=2", "train.eval_every=2", "train.eval_batches=1",
                            f"data.input=[{text}]", "data.val_fraction=0.2", "train.seq_len=16", "train.batch_size=2"),
                   out=tmp_path / "run", quiet=True)
    assert any("val_loss" in r for r in rows(run))
    assert "holding out the last 20% of the tokens" in (run / "log.txt").read_text()
    assert torch.isfinite(torch.tensor([r["val_loss"] for r in rows(run) if "val_loss" in r])).all()
