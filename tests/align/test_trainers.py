"""The four trainers (pretrain, sft, rm train, dpo) on the shared toolkit, tested alike.

- Accumulation is exact: micro-batches of 1 with accumulation give the loss and every gradient of one
  full batch (float64 weights), for losses that are token means (pretrain, SFT, DPO's RPO term), example
  means (the reward model, DPO) and a global estimate (KTO's KL reference point).
- SIGKILL and `--resume` continue a run with identical logged losses, for each trainer.
- The README's alignment chain runs with default lengths on a model made by `llmlab pretrain`.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import llmlab.train.step as step_module
from conftest import kill_after_step, subprocess_environment
from llmlab.cli import main
from llmlab.config import load_config


def metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


# ---------------------------------------------------------------------- one tiny run per trainer


def pretrain_run(tiny_tokenizer_dir: Path, tmp_path: Path, out: Path, *changes: str) -> Path:
    from llmlab.train.config import PretrainConfig
    from llmlab.train.pretrain import pretrain

    base = ["model.vocab_size=400", "model.d_model=32", "model.n_layers=2", "model.n_heads=4", "model.max_seq_len=64",
            "train.seq_len=32", "train.batch_size=4", "train.warmup_steps=1", "train.eval_every=0", "train.log_every=1",
            "train.sample_tokens=0", "train.device=cpu", "data.corpus_chars=20000",
            f"data.tokenizer={tiny_tokenizer_dir}", f"data.cache_dir={tmp_path / 'cache'}"]
    return pretrain(load_config(PretrainConfig, None, [*base, *changes]), out=out, quiet=True)


def sft_run(model: Path, out: Path, *changes: str) -> Path:
    from llmlab.align.config import SFTConfig
    from llmlab.align.sft import sft

    base = ["data.n=24", "data.eval_fraction=0", "train.batch_size=4", "train.warmup_steps=1", "train.log_every=1",
            "train.eval_every=0", "train.device=cpu"]
    return sft(load_config(SFTConfig, None, [f"model={model}", *base, *changes]), out=out, quiet=True)


def rm_run(model: Path, out: Path, *changes: str) -> Path:
    from llmlab.align.config import RewardModelConfig
    from llmlab.align.rm_train import train_reward_model

    base = ["data.n=24", "data.eval_fraction=0", "train.batch_size=4", "train.warmup_steps=1", "train.log_every=1",
            "train.eval_every=0", "train.device=cpu"]
    return train_reward_model(load_config(RewardModelConfig, None, [f"model={model}", *base, *changes]), out=out,
                              quiet=True)


def dpo_run(model: Path, out: Path, *changes: str) -> Path:
    from llmlab.align.config import DPOConfig
    from llmlab.align.dpo_train import dpo

    base = ["data.n=24", "train.batch_size=4", "train.warmup_steps=1", "train.log_every=1", "train.eval_every=0",
            "train.device=cpu", "eval.n_pairs=0", "eval.n_prompts=0", "train.lr=1e-2"]
    return dpo(load_config(DPOConfig, None, [f"model={model}", *base, *changes]), out=out, quiet=True)


# ---------------------------------------------------------------------- accumulation is exact


def _double_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every model a trainer builds or loads becomes float64."""
    import llmlab.align.dpo_train as dpo_train
    import llmlab.align.rm_train as rm_train
    import llmlab.align.sft as sft_module
    import llmlab.train.pretrain as pretrain_module
    from llmlab.model.llama import Transformer

    def doubled(fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            if isinstance(out, tuple):
                return (out[0].double(), *out[1:])
            return out.double()
        return wrapper

    monkeypatch.setattr(pretrain_module, "Transformer", doubled(Transformer))
    for module in (sft_module, rm_train, dpo_train):
        monkeypatch.setattr(module, "load_trainee", doubled(module.load_trainee))
    monkeypatch.setattr(dpo_train, "load_policy", doubled(dpo_train.load_policy))
    monkeypatch.setattr(rm_train, "reward_model_from_policy", doubled(rm_train.reward_model_from_policy))


def _first_step_grads(monkeypatch: pytest.MonkeyPatch) -> dict[str, torch.Tensor]:
    """Filled with every parameter's gradient at the first optimiser step."""
    grads: dict[str, torch.Tensor] = {}
    real = step_module.clip_and_step

    def capture(model, optimizer, **kwargs):
        if not grads:
            base = getattr(model, "module", model)
            grads.update({n: p.grad.detach().clone() for n, p in base.named_parameters() if p.grad is not None})
        return real(model, optimizer, **kwargs)

    monkeypatch.setattr(step_module, "clip_and_step", capture)
    return grads


TRAINERS = {
    "pretrain": lambda d, tmp, out, *c: pretrain_run(d["tok"], tmp, out, *c),
    "sft": lambda d, tmp, out, *c: sft_run(d["model"], out, *c),
    "rm": lambda d, tmp, out, *c: rm_run(d["model"], out, *c),
    "dpo+rpo": lambda d, tmp, out, *c: dpo_run(d["model"], out, "rpo_alpha=1", *c),
    "kto": lambda d, tmp, out, *c: dpo_run(d["model"], out, "loss=kto", *c),
}


@pytest.mark.parametrize("trainer", list(TRAINERS))
def test_accumulation_equals_one_full_batch(trainer: str, tiny_model_dir: Path, tiny_tokenizer_dir: Path,
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One step over a batch of 4, as one forward (micro_batch_size=4) and as four of one
    (micro_batch_size=1): same loss and same gradients, within 1e-6 in float64. The examples differ in
    length, so a rule that averaged each micro-batch's own mean would fail here (SFT by ~1e-2)."""
    _double_everything(monkeypatch)
    dirs = {"tok": tiny_tokenizer_dir, "model": tiny_model_dir}
    results = []
    for micro in (4, 1):
        grads = _first_step_grads(monkeypatch)
        run = TRAINERS[trainer](dirs, tmp_path, tmp_path / f"micro{micro}", "train.max_steps=1",
                                f"train.micro_batch_size={micro}", "train.checkpoint_every=0")
        results.append((metrics(run)[0]["loss"], grads))
    (loss_full, grads_full), (loss_accum, grads_accum) = results
    assert abs(loss_full - loss_accum) <= 1e-6
    assert grads_full.keys() == grads_accum.keys() and grads_full
    for name, g in grads_full.items():
        assert g.dtype == torch.float64, name
        torch.testing.assert_close(grads_accum[name], g, rtol=0, atol=1e-6, msg=name)


# ---------------------------------------------------------------------- SIGKILL, then --resume

RESUMABLE = {  # command words, extra arguments (beyond --model), the logged values compared
    "sft": (["sft"], ["data.n=24", "data.eval_fraction=0.2", "train.eval_every=3"],
            ("loss", "grad_norm", "lr", "tokens")),
    "rm": (["rm", "train"], ["data.n=24", "train.eval_every=3", "lora.r=4", "train.lr=1e-2"],
           ("loss", "accuracy", "margin", "grad_norm")),
    "dpo": (["dpo"], ["data.n=24", "loss=kto", "rpo_alpha=1", "eval.n_pairs=8", "eval.n_prompts=0",
                      "train.eval_every=3", "train.lr=1e-2"],
            ("loss", "margin", "kl", "nll", "grad_norm")),
}


@pytest.mark.parametrize("trainer", list(RESUMABLE))
def test_sigkill_then_resume_logs_the_same_losses(trainer: str, tiny_model_dir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Run A: 8 steps uninterrupted. Run B: the same, checkpoints every 3 steps, SIGKILLed after logging
    step 5 (rows 4-5 were logged after the step-3 checkpoint), then `llmlab <trainer> --resume B`. B's
    logged values equal A's exactly (`==`), no step is logged twice, and the final weights are equal."""
    words, extra, keys = RESUMABLE[trainer]
    common = [*words, "--model", str(tiny_model_dir), "--quiet", "train.max_steps=8", "train.batch_size=4",
              "train.checkpoint_every=3", "train.keep_checkpoints=2", "train.warmup_steps=1", "train.log_every=1",
              "train.device=cpu", *extra]
    assert main([*common, "--out", str(tmp_path / "A")]) == 0
    kill_after_step([*common, "--out", str(tmp_path / "B")], 5, tmp_path)
    assert not (tmp_path / "B" / "checkpoints" / "step-0000006").exists()
    resumed = subprocess.run([sys.executable, "-m", "llmlab", *words, "--resume", str(tmp_path / "B"), "--quiet"],
                             env=subprocess_environment(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in (tmp_path / "B" / "log.txt").read_text()
    a, b = metrics(tmp_path / "A"), metrics(tmp_path / "B")
    a_train, b_train = [r for r in a if "loss" in r], [r for r in b if "loss" in r]
    assert [r["step"] for r in b_train] == list(range(1, 9))
    for key in keys:
        assert [r[key] for r in b_train] == [r[key] for r in a_train], key
    a_eval, b_eval = [r for r in a if "eval_loss" in r], [r for r in b if "eval_loss" in r]
    assert [r["step"] for r in b_eval] == [3, 6, 8]
    assert [r["eval_loss"] for r in b_eval] == [r["eval_loss"] for r in a_eval]
    from safetensors.torch import load_file

    weights = "model.safetensors"
    wa, wb = load_file(str(tmp_path / "A" / weights)), load_file(str(tmp_path / "B" / weights))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


# ---------------------------------------------------------------------- the README's chain


def test_readme_alignment_chain_with_default_lengths(tiny_tokenizer_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """pretrain -> sft -> rm train -> dpo -> sample-prefs -> eval-prefs as the README chains them, with no
    max_length given anywhere: every command takes the length from the model (here 128 tokens, shorter
    than many task-world chats, which the commands truncate and count instead of failing)."""
    steps = ["train.max_steps=2", "train.device=cpu", "train.batch_size=4", "train.warmup_steps=1"]
    pt, sft, rm, dpo, pairs, ev = (tmp_path / n for n in ("pt", "sft", "rm", "dpo", "onpolicy", "eval"))
    commands = [
        ["pretrain", "--tokenizer", str(tiny_tokenizer_dir), "--out", str(pt), "model.vocab_size=400",
         "model.d_model=32", "model.n_layers=2", "model.n_heads=4", "model.max_seq_len=128", "train.seq_len=128",
         "data.corpus_chars=20000", f"data.cache_dir={tmp_path / 'cache'}", "train.eval_batches=1",
         "train.sample_tokens=0", *steps],
        ["sft", "--model", str(pt), "--out", str(sft), "data.n=32", *steps],
        ["rm", "train", "--model", str(sft), "--out", str(rm), "data.n=32", *steps],
        ["dpo", "--model", str(sft), "--out", str(dpo), "data.n=32", "eval.n_pairs=4", "eval.n_prompts=4",
         "eval.max_new_tokens=4", *steps],
        ["sample-prefs", "--model", str(sft), "--out", str(pairs), "n=4", "max_new_tokens=4", "device=cpu"],
        ["eval-prefs", "--model", str(dpo), "--out", str(ev), "eval.n_pairs=4", "eval.n_prompts=4",
         "eval.max_new_tokens=4", "device=cpu"],
    ]
    for argv in commands:
        at = argv.index("--out") + 2  # flags first, then the key=value overrides
        code = main([*argv[:at], "--quiet", *argv[at:]])
        assert code == 0, (argv[0], capsys.readouterr().err[-2000:])
    assert (dpo / "eval.md").is_file() and (dpo / "curves.png").is_file() and (ev / "eval.md").is_file()
    assert (pairs / "summary.json").is_file()
    log = (sft / "log.txt").read_text()
    assert "at most 128 tokens" in log  # the model's context, not a 512 default
    assert "max_length: 0" in (dpo / "config.yaml").read_text()


# ---------------------------------------------------------------------- 2 DDP processes == 1 process


def _trainer_argv(trainer: str, tiny_model_dir: Path, tiny_tokenizer_dir: Path, tmp_path: Path) -> list[str]:
    """Command words and flags; the key=value overrides follow."""
    if trainer == "pretrain":
        return ["pretrain", "--tokenizer", str(tiny_tokenizer_dir)]
    words = {"sft": ["sft"], "rm": ["rm", "train"], "dpo": ["dpo"]}[trainer]
    return [*words, "--model", str(tiny_model_dir)]


DDP_OVERRIDES = {
    "pretrain": ["model.vocab_size=400", "model.d_model=32", "model.n_layers=2", "model.n_heads=4",
                 "model.max_seq_len=64", "train.seq_len=32", "data.corpus_chars=20000", "train.sample_tokens=0"],
    "sft": ["data.n=32"],
    "rm": ["data.n=32"],
    "dpo": ["data.n=32", "loss=kto", "rpo_alpha=1", "eval.n_pairs=0", "eval.n_prompts=0"],
}


@pytest.mark.slow
@pytest.mark.parametrize("trainer", list(DDP_OVERRIDES))
def test_two_ddp_processes_equal_one(trainer: str, tiny_model_dir: Path, tiny_tokenizer_dir: Path,
                                     tmp_path: Path) -> None:
    """torchrun with 2 processes (gloo), the global batch of 8 split 4 + 4 and micro-batches of 2, logs the
    losses and gradient norms of one process with batch 8: the accumulation rule's counts are global
    (SFT's tokens differ between the ranks' halves; KTO's KL estimate is over both)."""
    argv = _trainer_argv(trainer, tiny_model_dir, tiny_tokenizer_dir, tmp_path)
    overrides = [*DDP_OVERRIDES[trainer], "train.max_steps=3", "train.batch_size=8", "train.micro_batch_size=2",
                 "train.warmup_steps=1", "train.log_every=1", "train.eval_every=0", "train.device=cpu",
                 "train.lr=1e-2", f"data.cache_dir={tmp_path / 'cache'}" if trainer == "pretrain" else "data.seed=0"]
    assert main([*argv, "--out", str(tmp_path / "one"), "--quiet", *overrides]) == 0
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "llmlab", *argv, "--out", str(tmp_path / "two"), "--quiet", *overrides],
                            env=subprocess_environment(), capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    one = [r for r in metrics(tmp_path / "one") if "loss" in r]
    two = [r for r in metrics(tmp_path / "two") if "loss" in r]
    assert [r["step"] for r in one] == [r["step"] for r in two] == [1, 2, 3]
    for a, b in zip(one, two, strict=True):
        for key in ("loss", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)
    assert "2 process(es)" in (tmp_path / "two" / "log.txt").read_text()


# ---------------------------------------------------------------------- the same frame for all four

FAST_RUNS = {
    "pretrain": lambda d, tmp, out, *c: pretrain_run(d["tok"], tmp, out, *c),
    "sft": lambda d, tmp, out, *c: sft_run(d["model"], out, *c),
    "rm": lambda d, tmp, out, *c: rm_run(d["model"], out, *c),
    "dpo": lambda d, tmp, out, *c: dpo_run(d["model"], out, *c),
}
MODULES = {"pretrain": "llmlab.train.pretrain", "sft": "llmlab.align.sft", "rm": "llmlab.align.rm_train",
           "dpo": "llmlab.align.dpo_train"}


@pytest.mark.parametrize("trainer", list(FAST_RUNS))
def test_every_trainer_writes_tensorboard_events(trainer: str, tiny_model_dir: Path, tiny_tokenizer_dir: Path,
                                                 tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = FAST_RUNS[trainer]({"tok": tiny_tokenizer_dir, "model": tiny_model_dir}, tmp_path, tmp_path / "run",
                             "train.max_steps=2", "train.tracker=tensorboard", "train.checkpoint_every=0")
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    losses = [e.value for e in events.Scalars("loss")]
    assert losses == pytest.approx([r["loss"] for r in metrics(run) if "loss" in r], rel=1e-6)


@pytest.mark.parametrize("trainer", list(FAST_RUNS))
@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_every_trainer_has_the_nan_policy(trainer: str, policy: str, tiny_model_dir: Path, tiny_tokenizer_dir: Path,
                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A NaN loss at step 3: `stop` ends the run naming the step-2 checkpoint, `skip` drops that update, counts
    it and finishes."""
    import importlib

    from llmlab.errors import TrainingDiverged

    module = importlib.import_module(MODULES[trainer])
    real = module.finish_step

    def poisoned(model, optimizer, loss, **kwargs):
        return real(model, optimizer, float("nan") if kwargs["done"] == 3 else loss, **kwargs)

    monkeypatch.setattr(module, "finish_step", poisoned)
    run_it = lambda: FAST_RUNS[trainer]({"tok": tiny_tokenizer_dir, "model": tiny_model_dir}, tmp_path,  # noqa: E731
                                        tmp_path / "run", "train.max_steps=4", "train.checkpoint_every=2",
                                        f"train.on_nan={policy}")
    if policy == "stop":
        with pytest.raises(TrainingDiverged, match=r"step 3 .*step-0000002"):
            run_it()
        assert not (tmp_path / "run" / "checkpoints" / "step-0000004").exists()
    else:
        rows = [r for r in metrics(run_it()) if "loss" in r]
        assert rows[-1]["step"] == 4 and rows[-1]["nan_skips"] == 1
        assert all(math.isfinite(r["loss"]) for r in rows)


@pytest.mark.parametrize("config", ["SFTConfig", "RewardModelConfig", "DPOConfig"])
@pytest.mark.parametrize("key", ["train.seq_len=64", "train.fsdp=true", "train.sample_tokens=8", "train.compile=true"])
def test_a_key_the_trainer_does_not_use_is_an_error(config: str, key: str) -> None:
    import llmlab.align.config as configs
    from llmlab.errors import ConfigError

    with pytest.raises(ConfigError, match=key.split("=")[0].replace(".", r"\.")):
        load_config(getattr(configs, config), None, ["model=some/model", key])
