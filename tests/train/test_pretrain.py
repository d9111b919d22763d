"""`llmlab pretrain` end to end on a tiny model: learning, metrics, samples, the final model,
gradient accumulation, trackers, NaN handling, exact resume after SIGKILL, and CLI errors.

In-process runs take ~1 s each (after torch's one-off optimizer import); the exact-resume test
runs the real CLI in subprocesses, where each process pays ~5 s of imports.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from conftest import kill_after_step, one_thread
from llmlab.cli import main
from llmlab.config import to_dict
from llmlab.errors import TrainingDiverged, UserError
from llmlab.model.llama import Transformer
from llmlab.train.pretrain import pretrain

TRAIN_KEYS = {"step", "time", "loss", "lr", "grad_norm", "tokens_per_s", "mfu", "tokens", "nan_skips"}
EVAL_KEYS = {"step", "time", "val_loss", "val_ppl", "val_bpb"}


def read_metrics(run: Path) -> tuple[list[dict], list[dict]]:
    """(training rows, eval rows) of a run's metrics.jsonl."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if "lr" in r], [r for r in rows if "val_loss" in r]


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


# ---------------------------------------------------------------------- a 30-step run, shared


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, tiny_cfg) -> Path:
    cfg = tiny_cfg("train.max_steps=30", "train.eval_every=10", "train.checkpoint_every=10")
    with one_thread():
        return pretrain(cfg, out=tmp_path_factory.mktemp("run") / "pt", quiet=True)


def test_loss_decreases(trained_run: Path) -> None:
    """Uniform guessing over 512 ids is ln 512 = 6.24 nats; 30 steps of AdamW at 1e-3 get well below."""
    train, _ = read_metrics(trained_run)
    losses = [r["loss"] for r in train]
    assert [r["step"] for r in train] == list(range(1, 31))
    assert losses[0] == pytest.approx(math.log(512), abs=0.2)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3


def test_metric_rows(trained_run: Path, tokenizer_dir: Path) -> None:
    """Training rows carry loss, lr, grad norm, tokens/s and MFU; eval rows at 10, 20, 30 carry
    val_ppl = exp(val_loss) and val_bpb = val_loss / ln 2 * val_tokens / val_bytes, where the val
    tokens and bytes are recounted here from the built-in corpus (each document + 1 for its <eos>)."""
    from llmlab.data.config import GenerateConfig
    from llmlab.data.corpora import pretrain_documents
    from llmlab.tokenizers.hf_io import load_tokenizer
    from llmlab.train.token_data import is_val

    train, evals = read_metrics(trained_run)
    for r in train:
        assert set(r) == TRAIN_KEYS
        assert math.isfinite(r["loss"]) and r["grad_norm"] > 0 and r["tokens_per_s"] > 0 and r["mfu"] >= 0
        assert r["tokens"] == r["step"] * 8 * 32 and r["nan_skips"] == 0
    assert train[0]["lr"] == pytest.approx(1e-3 / 2)  # warmup 2: step 0 at lr / 2
    assert [r["step"] for r in evals] == [10, 20, 30]
    tokenizer = load_tokenizer(tokenizer_dir)
    val_docs = [d for d in pretrain_documents(GenerateConfig(kind="pretrain", chars=200_000)) if is_val(d, 0.02)]
    val_tokens = sum(len(tokenizer.encode(d)) + 1 for d in val_docs)
    val_bytes = sum(len(d.encode("utf-8")) + 1 for d in val_docs)
    for r in evals:
        assert set(r) == EVAL_KEYS
        assert r["val_ppl"] == pytest.approx(math.exp(r["val_loss"]), rel=1e-12)
        assert r["val_bpb"] == pytest.approx(r["val_loss"] / math.log(2) * val_tokens / val_bytes, rel=1e-12)
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]


def test_samples_are_written(trained_run: Path) -> None:
    rows = [json.loads(line) for line in (trained_run / "samples.jsonl").read_text().splitlines()]
    assert {r["step"] for r in rows} == {10, 20, 30}
    assert all(set(r) == {"step", "prompt", "completion"} and r["prompt"] for r in rows)


def test_checkpoints_and_final_model(trained_run: Path) -> None:
    """keep_checkpoints=2: steps 20 and 30 remain; the run folder itself is a loadable model that generates."""
    from llmlab.model.generate import Engine, SamplingConfig
    from llmlab.model.io import load_model

    assert sorted(p.name for p in (trained_run / "checkpoints").iterdir()) == ["step-0000020", "step-0000030"]
    model, tokenizer = load_model(trained_run)
    final, _ = load_model(trained_run / "checkpoints" / "step-0000030")
    for k, v in final.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    prompt = tokenizer.encode("One morning")
    out = Engine(model).generate([prompt], SamplingConfig(max_new_tokens=5, temperature=0.0))
    assert len(out[0]) == 5 and all(0 <= t < 512 for t in out[0])
    assert isinstance(tokenizer.decode(out[0]), str)


# ---------------------------------------------------------------------- variants of the loop


def test_gradient_accumulation_matches_one_big_batch(tmp_path: Path, tiny_cfg) -> None:
    """batch 8 as 4 micro-batches of 2 (each loss / 4, grads summed) is the same step as one batch of 8."""
    common = ("train.max_steps=5", "train.eval_every=0", "train.checkpoint_every=0")
    whole = pretrain(tiny_cfg(*common, "train.micro_batch_size=0"), out=tmp_path / "whole", quiet=True)
    accum = pretrain(tiny_cfg(*common, "train.micro_batch_size=2"), out=tmp_path / "accum", quiet=True)
    a, b = read_metrics(whole)[0], read_metrics(accum)[0]
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4, 5]
    for r, s in zip(a, b, strict=True):
        assert s["loss"] == pytest.approx(r["loss"], abs=1e-5)
        assert s["grad_norm"] == pytest.approx(r["grad_norm"], rel=1e-4)


@pytest.mark.slow
def test_torch_compile_gives_the_eager_losses(tmp_path: Path, tiny_cfg) -> None:
    """train.compile=true (inductor; needs a C++ compiler on CPU) trains the same model: fused kernels
    reorder float sums, so the losses agree to a tolerance, not bit for bit."""
    common = ("train.max_steps=4", "train.eval_every=0", "train.checkpoint_every=0")
    eager = read_metrics(pretrain(tiny_cfg(*common), out=tmp_path / "eager", quiet=True))[0]
    compiled = read_metrics(pretrain(tiny_cfg(*common, "train.compile=true"), out=tmp_path / "compiled",
                                     quiet=True))[0]
    assert [r["step"] for r in compiled] == [1, 2, 3, 4]
    for r, s in zip(eager, compiled, strict=True):
        assert s["loss"] == pytest.approx(r["loss"], rel=1e-4)


def test_tensorboard_tracker_writes_events(tmp_path: Path, tiny_cfg) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = pretrain(tiny_cfg("train.max_steps=3", "train.tracker=tensorboard", "train.checkpoint_every=0"),
                   out=tmp_path / "tb", quiet=True)
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3]
    assert [e.step for e in events.Scalars("val_loss")] == [3]


def test_wandb_tracker_gets_init_and_logs(tmp_path: Path, tiny_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake `wandb` module stands in for the real one (not installed, and it would need the network)."""
    calls: dict[str, list] = {"init": [], "log": [], "finish": []}

    class FakeRun:
        def log(self, values, step=None):
            calls["log"].append((step, dict(values)))

        def finish(self):
            calls["finish"].append(True)

    def init(**kwargs):
        calls["init"].append(kwargs)
        return FakeRun()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    cfg = tiny_cfg("train.max_steps=3", "train.tracker=wandb", "train.wandb_project=tiny-proj",
                   "train.checkpoint_every=0")
    run = pretrain(cfg, out=tmp_path / "wb", quiet=True)
    [kwargs] = calls["init"]
    assert kwargs["project"] == "tiny-proj" and kwargs["dir"] == str(run) and kwargs["config"] == to_dict(cfg)
    assert [s for s, v in calls["log"] if "loss" in v] == [1, 2, 3]
    assert [s for s, v in calls["log"] if "val_loss" in v] == [3]
    train, _ = read_metrics(run)
    assert [v["loss"] for s, v in calls["log"] if "loss" in v] == [r["loss"] for r in train if "loss" in r]
    assert calls["finish"] == [True]


def poison_training_forward(monkeypatch: pytest.MonkeyPatch, at_step: int) -> None:
    """Make the model's training-mode forward of step `at_step` (1-based; one micro-batch a step)
    return NaN logits. Eval and sampling forwards (eval mode) are not counted."""
    forward, count = Transformer.forward, [0]

    def poisoned(self, idx, **kwargs):
        out = forward(self, idx, **kwargs)
        if self.training:
            count[0] += 1
            if count[0] == at_step:
                out.logits = out.logits * float("nan")
        return out

    monkeypatch.setattr(Transformer, "forward", poisoned)


def test_nan_stops_and_names_the_last_good_checkpoint(tmp_path: Path, tiny_cfg,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    poison_training_forward(monkeypatch, at_step=5)
    cfg = tiny_cfg("train.max_steps=8", "train.checkpoint_every=2", "train.keep_checkpoints=10",
                   "train.on_nan=stop")
    with pytest.raises(TrainingDiverged) as info:
        pretrain(cfg, out=tmp_path / "nan", quiet=True)
    assert isinstance(info.value, UserError)
    last = tmp_path / "nan" / "checkpoints" / "step-0000004"
    assert "step 5" in str(info.value) and str(last) in str(info.value)
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in (tmp_path / "nan" / "checkpoints").iterdir()) == ["step-0000002", "step-0000004"]
    train, _ = read_metrics(tmp_path / "nan")
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert not (tmp_path / "nan" / "model.safetensors").exists()  # no final model from a diverged run


def test_nan_skip_completes_and_counts(tmp_path: Path, tiny_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    poison_training_forward(monkeypatch, at_step=3)
    cfg = tiny_cfg("train.max_steps=6", "train.on_nan=skip")
    run = pretrain(cfg, out=tmp_path / "skip", quiet=True)
    train, evals = read_metrics(run)
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert [r["nan_skips"] for r in train] == [0, 0, 1, 1, 1, 1]
    assert train[2]["grad_norm"] is None  # NaN is written as null: metrics.jsonl stays JSON
    assert "loss" not in train[2]  # a step whose update was skipped reports no loss, not a perfect 0.0
    assert all(math.isfinite(r["loss"]) for r in train[3:]) and all(math.isfinite(r["val_loss"]) for r in evals)
    assert "update skipped" in (run / "log.txt").read_text()
    assert (run / "checkpoints" / "step-0000006").is_dir()


def test_nan_skip_leaves_the_weights_of_the_poisoned_step(tmp_path: Path, tiny_cfg,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Poison step 3 of 3, checkpoint at 2 and 3: the weights of step 3 are those of step 2."""
    from llmlab.model.io import load_model

    poison_training_forward(monkeypatch, at_step=3)
    cfg = tiny_cfg("train.max_steps=3", "train.checkpoint_every=1", "train.eval_every=0", "train.on_nan=skip")
    run = pretrain(cfg, out=tmp_path / "skip", quiet=True)
    two, _ = load_model(run / "checkpoints" / "step-0000002")
    three, _ = load_model(run / "checkpoints" / "step-0000003")
    for k, v in two.state_dict().items():
        assert torch.equal(three.state_dict()[k], v), k


# ---------------------------------------------------------------------- exact resume after SIGKILL

def test_exact_resume_after_sigkill(tmp_path: Path, tiny, tiny_cfg, subprocess_env: dict[str, str],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Run A: 12 steps uninterrupted, in this process. Run B: the same config in a subprocess, checkpoints
    every 4 steps, killed with SIGKILL after it has logged step 10 (so rows 9-10 were logged after the
    last checkpoint, step 8), then `python -m llmlab pretrain --resume B` in a new process. Every logged
    loss, lr, grad norm and val loss of B equals A's exactly (same machine, one thread, one process),
    with no step logged twice. Dropout 0.1 makes the per-step RNG matter."""
    changes = ("train.max_steps=12", "train.checkpoint_every=4", "train.eval_every=4", "train.keep_checkpoints=5",
               "model.dropout=0.1")
    run_a = pretrain(tiny_cfg(*changes), out=tmp_path / "A", quiet=True)

    run_b = tmp_path / "B"
    kill_after_step(["pretrain", "--out", str(run_b), "--quiet", *tiny(*changes)], 10, tmp_path)
    assert (run_b / "checkpoints" / "step-0000008" / "trainer_state.pt").is_file()
    assert not (run_b / "checkpoints" / "step-0000012").exists()
    assert max(r["step"] for r in read_metrics(run_b)[0]) == 10  # rows 9, 10 were logged before the kill

    resumed = subprocess.run([sys.executable, "-m", "llmlab", "pretrain", "--resume", str(run_b), "--quiet"],
                             env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in (run_b / "log.txt").read_text()

    (a_train, a_eval), (b_train, b_eval) = read_metrics(run_a), read_metrics(run_b)
    assert [r["step"] for r in b_train] == list(range(1, 13))  # no duplicates, no gaps
    assert [r["step"] for r in b_eval] == [4, 8, 12]
    for key in ("loss", "lr", "grad_norm", "tokens"):
        assert [r[key] for r in b_train] == [r[key] for r in a_train], key
    assert [r["val_loss"] for r in b_eval] == [r["val_loss"] for r in a_eval]
    from llmlab.model.io import load_model

    final_a, _ = load_model(run_a)
    final_b, _ = load_model(run_b)
    for k, v in final_a.state_dict().items():
        assert torch.equal(final_b.state_dict()[k], v), k

    # more steps: a resumed run takes overrides, here a longer schedule
    code, err = cli(capsys, "pretrain", "--resume", str(run_b), "--quiet", "train.max_steps=16")
    assert code == 0, err
    b_train, b_eval = read_metrics(run_b)
    assert [r["step"] for r in b_train] == list(range(1, 17))
    assert [r["step"] for r in b_eval] == [4, 8, 12, 16]
    assert (run_b / "checkpoints" / "step-0000016").is_dir()
    assert "max_steps: 16" in (run_b / "checkpoints" / "step-0000016" / "config.yaml").read_text()


# ---------------------------------------------------------------------- CLI errors


@pytest.mark.parametrize(("changes", "extra", "message"), [
    ((), ("--input", "MISSING"), "missing.txt: no such file"),
    (("model.n_heads=3",), (), "model.n_heads (3) must divide model.d_model (64)"),
    (("train.seq_len=128",), (), "train.seq_len (128) is longer than model.max_seq_len (64)"),
    (("train.no_such_key=1",), (), "train.no_such_key"),
])
def test_cli_user_errors_are_one_line(tmp_path: Path, tiny, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch, changes, extra, message) -> None:
    monkeypatch.delenv("LLMLAB_DEBUG", raising=False)
    extra = tuple(str(tmp_path / "missing.txt") if a == "MISSING" else a for a in extra)
    code, err = cli(capsys, "pretrain", "--out", str(tmp_path / "run"), "--quiet", *extra, *tiny(*changes))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert message in err


def test_cli_resume_without_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMLAB_DEBUG", raising=False)
    (tmp_path / "empty").mkdir()
    code, err = cli(capsys, "pretrain", "--resume", str(tmp_path / "empty"), "--quiet")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and "no checkpoint to resume from" in err


def test_cli_error_in_a_real_process(tmp_path: Path, tiny, subprocess_env: dict[str, str]) -> None:
    """The real entry point: exit status 2 and one stderr line (a config error: no torch import needed)."""
    result = subprocess.run([sys.executable, "-m", "llmlab", "pretrain", "--out", str(tmp_path / "r"),
                             *tiny("model.n_heads=3")], env=subprocess_env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr


def test_cli_resume_honours_the_max_steps_flag(tmp_path: Path, tiny_cfg, capsys: pytest.CaptureFixture[str]) -> None:
    run = pretrain(tiny_cfg("train.max_steps=2", "train.eval_every=0", "train.checkpoint_every=2"),
                   out=tmp_path / "r", quiet=True)
    code, err = cli(capsys, "pretrain", "--resume", str(run), "--quiet", "--max-steps", "3")
    assert code == 0, err
    assert [r["step"] for r in read_metrics(run)[0]] == [1, 2, 3]


def test_final_model_without_periodic_checkpoints(tmp_path: Path, tiny_cfg) -> None:
    run = pretrain(tiny_cfg("train.max_steps=2", "train.eval_every=0", "train.checkpoint_every=0"),
                   out=tmp_path / "r", quiet=True)
    assert (run / "model.safetensors").is_file()


def test_init_starts_from_a_model_folders_weights(trained_run: Path, tmp_path: Path, tiny_cfg) -> None:
    """init=RUN: a fresh run (step 1, lr of warmup step 0) whose first loss is near the trained run's last
    ones, below the first of that run (random weights, ~ln 512); a model of another shape is one line;
    init and resume exclude each other."""
    from llmlab.config import ConfigError

    train, _ = read_metrics(trained_run)
    run = pretrain(tiny_cfg("train.max_steps=1", f"init={trained_run}"), out=tmp_path / "init", quiet=True)
    first = read_metrics(run)[0][0]
    assert first["step"] == 1 and first["lr"] == pytest.approx(1e-3 / 2)
    assert first["loss"] < train[0]["loss"] - 0.3
    assert first["loss"] == pytest.approx(sum(r["loss"] for r in train[-5:]) / 5, abs=0.3)
    with pytest.raises(UserError, match=r"do not fit the model as configured now .*set model\.\* to the init "):
        pretrain(tiny_cfg("train.max_steps=1", "model.d_model=32", f"init={trained_run}"), out=tmp_path / "bad",
                 quiet=True)
    with pytest.raises(ConfigError, match="init and resume exclude each other"):
        tiny_cfg(f"init={trained_run}", f"resume={trained_run}")
