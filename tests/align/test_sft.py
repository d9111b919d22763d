"""SFT: the loss is a hand-masked cross-entropy; a tiny run lowers it, evaluates, checkpoints and saves a
model that `llmlab generate` reads; LoRA + packing on an HF folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from llmlab.align.config import SFTConfig
from llmlab.align.data import collate_chats, encode_chats, load_chat_rows, sample_indices
from llmlab.align.logprobs import model_logits, nll_loss, sequence_mean_nll
from llmlab.align.models import load_policy
from llmlab.align.sft import prepare_chats, sft
from llmlab.config import load_config
from llmlab.errors import ConfigError


def tiny_sft(model: Path, *overrides: str) -> SFTConfig:
    base = ["data.n=48", "max_length=96", "train.batch_size=8", "train.max_steps=30", "train.warmup_steps=3",
            "train.lr=0.003", "train.eval_every=15", "train.log_every=5", "train.checkpoint_every=20",
            "train.device=cpu", "data.eval_fraction=0.1"]
    return load_config(SFTConfig, None, [f"model={model}", *base, *overrides])


def test_loss_is_the_hand_masked_cross_entropy(tiny_model_dir: Path) -> None:
    """loss = mean over t with mask[t] (t >= 1) of -log softmax(logits[t - 1])[ids[t]], over the batch,
    padding and non-assistant tokens excluded; computed here in float64 from the logits."""
    model, tok = load_policy(str(tiny_model_dir), device="cpu")
    rows, _ = load_chat_rows(strict=True, n=3, seed=4)
    examples, _ = encode_chats(rows, tok, max_length=128)
    batch = collate_chats(examples, tok.pad_id)
    logits = model_logits(model, batch["ids"], batch["attention_mask"])
    logp = F.log_softmax(logits.double(), dim=-1)
    terms = [-logp[b, t - 1, batch["ids"][b, t]] for b in range(len(examples))
             for t in range(1, batch["ids"].shape[1]) if batch["loss_mask"][b, t]]
    assert len(terms) == sum(sum(e.mask[1:]) for e in examples)
    torch.testing.assert_close(nll_loss(logits, batch["ids"], batch["loss_mask"]).double(),
                               torch.stack(terms).mean(), atol=1e-5, rtol=1e-5)


def test_sequence_norm_weighs_every_chat_the_same(tiny_model_dir: Path) -> None:
    """loss_norm=sequence: the mean over chats of each chat's float64 mean of its assistant tokens'
    cross-entropy; it differs from the token mean when the answers' lengths differ."""
    model, tok = load_policy(str(tiny_model_dir), device="cpu")
    rows, _ = load_chat_rows(strict=True, n=4, seed=4)
    examples, _ = encode_chats(rows, tok, max_length=128)
    assert len({sum(e.mask[1:]) for e in examples}) > 1  # answers of different lengths
    batch = collate_chats(examples, tok.pad_id)
    with torch.no_grad():
        logits = model_logits(model, batch["ids"], batch["attention_mask"])
    logp = F.log_softmax(logits.double(), dim=-1)
    per_chat = [torch.stack([-logp[b, t - 1, batch["ids"][b, t]] for t in range(1, batch["ids"].shape[1])
                             if batch["loss_mask"][b, t]]).mean() for b in range(len(examples))]
    got = sequence_mean_nll(logits, batch["ids"], batch["loss_mask"]).double()
    torch.testing.assert_close(got, torch.stack(per_chat), atol=1e-5, rtol=1e-5)
    assert abs(float(got.mean()) - float(nll_loss(logits, batch["ids"], batch["loss_mask"]))) > 1e-3


def test_sequence_norm_does_not_depend_on_micro_batches(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Accumulating 4 micro-batches of 2 chats gives the same run as one batch of 8 (train/batches.py's
    rule counts chats, not tokens, under loss_norm=sequence)."""
    runs = [sft(tiny_sft(tiny_model_dir, "loss_norm=sequence", "train.max_steps=3", "train.eval_every=0",
                         "train.checkpoint_every=0", "train.log_every=1", *extra), out=tmp_path / name, quiet=True)
            for name, extra in (("one", ()), ("micro", ("train.micro_batch_size=2",)))]
    losses = [[json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
               if '"loss"' in line] for run in runs]
    assert len(losses[0]) == 3
    assert losses[0] == pytest.approx(losses[1], rel=1e-4, abs=1e-5)
    # step 1 is logged before any update: the mean over its 8 chats of each chat's own mean
    cfg = tiny_sft(tiny_model_dir, "loss_norm=sequence")
    model, tok = load_policy(str(tiny_model_dir), device="cpu")
    train_set, _ = prepare_chats(cfg, tok, cfg.max_length, log=lambda _: None)
    first = [train_set[i] for i in sample_indices(0, 8, len(train_set), seed=cfg.train.seed)]
    batch = collate_chats(first, tok.pad_id)
    with torch.no_grad():
        per_chat = sequence_mean_nll(model_logits(model, batch["ids"], batch["attention_mask"]), batch["ids"],
                                     batch["loss_mask"])
    assert losses[0][0] == pytest.approx(float(per_chat.double().mean()), rel=1e-4)


def test_sequence_norm_refuses_packing(tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="loss_norm=sequence weighs chats"):
        tiny_sft(tiny_model_dir, "loss_norm=sequence", "packing=true")


def test_sft_run_lowers_the_loss_and_saves_a_generatable_model(tiny_model_dir: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from llmlab.cli import main

    run = sft(tiny_sft(tiny_model_dir), out=tmp_path / "run", quiet=True)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.5, losses
    assert len(evals) == 2 and evals[-1] < evals[0] + 1e-6
    assert (run / "checkpoints" / "step-0000020" / "trainer_state.pt").is_file()
    assert (run / "model.yaml").is_file() and (run / "config.yaml").is_file()
    capsys.readouterr()
    code = main(["generate", "--model", str(run), "--chat", "--prompt", "What is 2+3?", "--max-new-tokens", "4",
                 "--temperature", "0", "--device", "cpu"])
    assert code == 0  # the tiny model may answer with <|end|> at once: the output can be empty


def test_sft_lora_with_packing_on_an_hf_model(tiny_hf_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_sft(tiny_hf_dir, "train.max_steps=4", "train.checkpoint_every=0", "train.eval_every=0",
                   "packing=true", "lora.r=4", "max_length=128")
    run = sft(cfg, out=tmp_path / "run", quiet=True)
    log = (run / "log.txt").read_text()
    assert "packing:" in log and "LlamaForCausalLM" in log
    assert (run / "config.json").is_file() and (run / "model.safetensors").is_file()
    model, _tok = load_policy(str(run), device="cpu")  # merged: a plain HF model again
    assert not any("lora" in name for name, _ in model.named_parameters())
