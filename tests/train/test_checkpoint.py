"""Checkpoints: atomic writes, keep-last-N, finding one to resume, and a trainer state that never unpickles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from llmlab.errors import UserError
from llmlab.model.config import ModelConfig
from llmlab.model.io import load_model, save_weights
from llmlab.model.llama import Transformer
from llmlab.train import checkpoint as C
from llmlab.train.checkpoint import (
    STATE_FILE,
    find_checkpoint,
    list_checkpoints,
    load_trainer_state,
    save_checkpoint,
)
from llmlab.train.config import PretrainConfig, PretrainTrainConfig
from llmlab.train.optim import build_adamw

MODEL = ModelConfig(vocab_size=32, d_model=8, n_layers=1, n_heads=2, max_seq_len=16)
RUN = PretrainConfig(model=MODEL, train=PretrainTrainConfig(seq_len=16))


@pytest.fixture
def trained() -> tuple[Transformer, torch.optim.Optimizer]:
    """A model and an AdamW that has taken one step, so the optimizer state holds moments."""
    torch.manual_seed(0)
    model = Transformer(MODEL)
    opt = build_adamw(model, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95))
    x = torch.randint(0, 32, (2, 8))
    torch.nn.functional.cross_entropy(model(x).logits.flatten(0, 1), x.flatten()).backward()
    opt.step()
    return model, opt


def save(root: Path, step: int, model: Transformer, opt: torch.optim.Optimizer, keep: int = 5) -> Path:
    return save_checkpoint(root, step, write_model=lambda d: save_weights(MODEL, model.state_dict(), d),
                           optimizer_state=opt.state_dict(), cfg=RUN,
                           counters={"tokens": step * 10, "nan_skips": 0}, keep=keep)


def test_a_checkpoint_is_a_model_folder_plus_trainer_state(tmp_path: Path, trained) -> None:
    model, opt = trained
    ckpt = save(tmp_path / "checkpoints", 7, model, opt)
    assert ckpt == tmp_path / "checkpoints" / "step-0000007"
    assert {p.name for p in ckpt.iterdir()} >= {"model.yaml", "model.safetensors", STATE_FILE, "config.yaml"}
    state = load_trainer_state(ckpt)
    assert state["step"] == 7 and state["counters"] == {"tokens": 70, "nan_skips": 0}
    exp_avg = opt.state_dict()["state"][0]["exp_avg"]
    torch.testing.assert_close(state["optimizer"]["state"][0]["exp_avg"], exp_avg, rtol=0, atol=0)
    loaded, _ = load_model(ckpt)  # (model, tokenizer)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, rtol=0, atol=0)


def test_a_crash_mid_save_leaves_no_step_folder_and_the_previous_one_intact(tmp_path: Path, trained,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the last write (config.yaml, after weights and trainer state) fail: step-2 must not appear,
    step-1 must be byte-for-byte what it was, and a later save of step 2 must succeed."""
    model, opt = trained
    root = tmp_path / "checkpoints"
    first = save(root, 1, model, opt)
    before = {p.name: p.read_bytes() for p in first.iterdir()}

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(C, "write_text_atomic", crash)
    with pytest.raises(OSError, match="simulated"):
        save(root, 2, model, opt)
    assert not (root / "step-0000002").exists()
    assert list_checkpoints(root) == [first]
    assert find_checkpoint(tmp_path) == first
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before
    assert [p.name for p in root.iterdir() if p.name.startswith("step-")] == ["step-0000001"]

    monkeypatch.undo()
    second = save(root, 2, model, opt)  # the leftover temporary folder is cleared, not reused
    assert list_checkpoints(root) == [first, second]
    assert not any(p.name.endswith(".tmp") for p in root.iterdir())


def test_a_folder_without_trainer_state_is_not_a_checkpoint(tmp_path: Path, trained) -> None:
    model, opt = trained
    root = tmp_path / "checkpoints"
    good = save(root, 1, model, opt)
    (root / "step-0000009").mkdir()  # e.g. made by hand, or half copied
    assert list_checkpoints(root) == [good]


def test_only_the_last_n_are_kept(tmp_path: Path, trained) -> None:
    model, opt = trained
    root = tmp_path / "checkpoints"
    for step in (5, 10, 15, 20, 25):
        save(root, step, model, opt, keep=2)
    assert [p.name for p in list_checkpoints(root)] == ["step-0000020", "step-0000025"]
    assert sorted(p.name for p in root.iterdir()) == ["step-0000020", "step-0000025"]


def test_steps_sort_numerically(tmp_path: Path, trained) -> None:
    """Zero-padded names: step 100 sorts after step 99."""
    model, opt = trained
    root = tmp_path / "checkpoints"
    for step in (99, 100, 8):
        save(root, step, model, opt)
    assert [p.name for p in list_checkpoints(root)] == ["step-0000008", "step-0000099", "step-0000100"]


def test_find_checkpoint_on_a_run_folder_and_on_a_checkpoint(tmp_path: Path, trained) -> None:
    model, opt = trained
    run = tmp_path / "run"
    older = save(run / "checkpoints", 3, model, opt)
    newest = save(run / "checkpoints", 6, model, opt)
    assert find_checkpoint(run) == newest  # a run folder: its newest checkpoint
    assert find_checkpoint(older) == older  # a checkpoint folder: itself
    assert find_checkpoint(str(older)) == older


def test_find_checkpoint_without_one_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(UserError, match="no checkpoint to resume from"):
        find_checkpoint(tmp_path)
    with pytest.raises(UserError, match="no checkpoint"):
        find_checkpoint(tmp_path / "does-not-exist")


class Payload:
    """Unpickling this runs os.mkdir(marker): what a malicious trainer_state.pt could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_trainer_state_loads_with_weights_only(tmp_path: Path) -> None:
    """A trainer_state.pt holding an arbitrary pickled object is refused (one-line UserError) and the
    object's code never runs. Control: a full unpickle (weights_only=False) would run it."""
    ckpt = tmp_path / "step-0000001"
    ckpt.mkdir()
    marker = tmp_path / "payload-ran"
    torch.save({"step": 1, "optimizer": {}, "counters": Payload(marker)}, ckpt / STATE_FILE)
    with pytest.raises(UserError, match=f"{STATE_FILE}: cannot read the trainer state"):
        load_trainer_state(ckpt)
    assert not marker.exists()
    torch.load(ckpt / STATE_FILE, weights_only=False)  # the control: the payload is live
    assert marker.is_dir()


def test_a_truncated_trainer_state_is_a_user_error(tmp_path: Path, trained) -> None:
    model, opt = trained
    ckpt = save(tmp_path / "checkpoints", 1, model, opt)
    data = (ckpt / STATE_FILE).read_bytes()
    (ckpt / STATE_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cannot read the trainer state"):
        load_trainer_state(ckpt)
