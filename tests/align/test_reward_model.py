"""Reward models: Bradley-Terry by hand, last-token pooling under right padding, training on separable
data, save/load round trips, and transformers' SequenceClassification scoring the same."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from llmlab.align.config import RewardModelConfig
from llmlab.align.data import collate_pairs, encode_pairs
from llmlab.align.models import load_policy
from llmlab.align.reward_model import (
    RewardModel,
    bradley_terry_loss,
    load_reward_model,
    reward_model_from_policy,
    save_reward_model,
    score_texts,
)
from llmlab.align.rm_train import train_reward_model
from llmlab.config import load_config

ROWS = [{"prompt": "What is 2+3?", "chosen": "5", "rejected": "It is six, I think."},
        {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "No."}]


def test_bradley_terry_by_hand() -> None:
    """-log sigma(x) = log(1 + e^-x):  x = 2 -> 0.126928;  x = 0 -> log 2;  margin 1: x = 1 -> 0.313262;
    x = -3 -> 3.048587."""
    rc, rr = torch.tensor([2.0, 0.5, 2.0, -1.0]), torch.tensor([0.0, 0.5, 1.0, 2.0])
    torch.testing.assert_close(bradley_terry_loss(rc, rr), torch.tensor([0.126928, math.log(2), 0.313262, 3.048587]))
    torch.testing.assert_close(bradley_terry_loss(rc, rr, margin=1.0)[0], torch.tensor(0.313262))


def test_soft_bradley_terry_against_numpy() -> None:
    """Soft labels p: -(p log sigma(d - m) + (1 - p) log sigma(-d - m)), d = r_c - r_r, in NumPy float64 with
    log sigma(x) = -logaddexp(0, -x); p = 1 is the hard loss bit for bit; for m = 0 the minimum over d is at
    log(p / (1 - p)) (cross-entropy against p)."""
    import numpy as np

    rc = np.array([2.0, 0.5, 2.0, -1.0, 10.0, 0.3])
    rr = np.array([0.0, 0.5, 1.0, 2.0, -10.0, 0.1])
    p = np.array([0.9, 0.5, 1.0, 0.75, 0.6, 0.0])
    for m in (0.0, 1.0):
        d = rc - rr
        expected = -(p * -np.logaddexp(0.0, -(d - m)) + (1 - p) * -np.logaddexp(0.0, -(-d - m)))
        got = bradley_terry_loss(torch.from_numpy(rc), torch.from_numpy(rr), margin=m, p_chosen=torch.from_numpy(p))
        torch.testing.assert_close(got, torch.from_numpy(expected), rtol=1e-12, atol=1e-12)
    x, y = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    assert torch.equal(bradley_terry_loss(x, y, margin=0.5, p_chosen=torch.ones(8)), bradley_terry_loss(x, y, margin=0.5))
    d = torch.tensor([math.log(0.8 / 0.2)], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(bradley_terry_loss(d, torch.zeros(1, dtype=torch.float64),
                                                     p_chosen=torch.tensor([0.8])).sum(), d)
    assert abs(grad.item()) < 1e-7  # p_chosen float32: 0.8 to 1e-8


def test_reward_is_read_at_the_last_real_token(tiny_model_dir: Path) -> None:
    """Padded batch rewards == each sequence scored alone == score(hidden at the last real token)."""
    policy, tok = load_policy(str(tiny_model_dir), device="cpu")
    rm = reward_model_from_policy(policy).eval()
    examples, _ = encode_pairs(ROWS, tok, max_length=64, max_prompt_length=32)
    batch = collate_pairs(examples, tok.pad_id)
    assert not batch["attention_mask"].all()  # there is padding to get wrong
    with torch.no_grad():
        rewards = rm(batch["ids"], batch["attention_mask"])
        for b in range(batch["ids"].shape[0]):
            n = int(batch["attention_mask"][b].sum())
            alone = rm(batch["ids"][b: b + 1, :n], batch["attention_mask"][b: b + 1, :n])
            torch.testing.assert_close(rewards[b: b + 1], alone, atol=1e-5, rtol=1e-5)
            hidden = rm.hidden_states(batch["ids"][b: b + 1, :n], batch["attention_mask"][b: b + 1, :n])
            torch.testing.assert_close(alone, rm.score(hidden[:, -1]).squeeze(-1))


def test_rm_learns_separable_pairs(tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = [{"prompt": f"Question {i}: is it good?", "chosen": f"Yes, good {i}.", "rejected": f"No, bad {i}."}
            for i in range(40)]
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(RewardModelConfig, None, [
        f"model={tiny_model_dir}", f"data.input=[{data}]", "data.eval_fraction=0.2", "max_length=64",
        "max_prompt_length=32", "train.batch_size=8", "train.max_steps=25", "train.warmup_steps=2",
        "train.lr=0.003", "train.eval_every=25", "train.log_every=5", "train.device=cpu"])
    run = train_reward_model(cfg, out=tmp_path / "rm", quiet=True)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    final = [m for m in metrics if "eval_accuracy" in m][-1]
    assert final["eval_accuracy"] > 0.5 and final["eval_accuracy"] >= 0.875, final
    rm, tok = load_reward_model(run)
    good, bad = score_texts(rm, tok, [("Question 99: is it good?", "Yes, good 99."),
                                      ("Question 99: is it good?", "No, bad 99.")])
    assert good > bad


@pytest.fixture(scope="module")
def saved_rm(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RewardModel, object]:
    policy, tok = load_policy(str(tiny_model_dir), device="cpu")
    torch.manual_seed(0)
    rm = reward_model_from_policy(policy).eval()
    return save_reward_model(rm, tok, tmp_path_factory.mktemp("rm")), rm, tok


def test_saved_rm_loads_back_in_llmlab_and_as_hf_sequence_classification(saved_rm) -> None:
    from transformers import AutoModelForSequenceClassification

    directory, rm, tok = saved_rm
    examples, _ = encode_pairs(ROWS, tok, max_length=64, max_prompt_length=32)
    batch = collate_pairs(examples, tok.pad_id)
    with torch.no_grad():
        expected = rm(batch["ids"], batch["attention_mask"])
        loaded, _ = load_reward_model(directory)
        torch.testing.assert_close(loaded(batch["ids"], batch["attention_mask"]), expected)
        hf = AutoModelForSequenceClassification.from_pretrained(str(directory / "hf")).eval()
        assert hf.config.pad_token_id == tok.pad_id and hf.config.num_labels == 1
        out = hf(input_ids=batch["ids"], attention_mask=batch["attention_mask"].long()).logits.squeeze(-1)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


def test_hf_trunk_matches_the_llmlab_trunk_and_round_trips(saved_rm, tiny_hf_dir: Path, tmp_path: Path) -> None:
    _, rm, _tok = saved_rm
    policy, hf_tok = load_policy(str(tiny_hf_dir), device="cpu")
    hf_rm = RewardModel(policy.base_model, rm.score).eval()
    examples, _ = encode_pairs(ROWS, hf_tok, max_length=64, max_prompt_length=32)
    batch = collate_pairs(examples, hf_tok.pad_id)
    with torch.no_grad():
        expected = rm(batch["ids"], batch["attention_mask"])
        torch.testing.assert_close(hf_rm(batch["ids"], batch["attention_mask"]), expected, atol=1e-4, rtol=1e-4)
        save_reward_model(hf_rm, hf_tok, tmp_path / "hf-rm")
        loaded, _ = load_reward_model(tmp_path / "hf-rm")
        torch.testing.assert_close(loaded(batch["ids"], batch["attention_mask"]), expected, atol=1e-4, rtol=1e-4)


def test_rm_score_command(saved_rm, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from llmlab.cli import main

    directory, rm, tok = saved_rm
    (expected,) = score_texts(rm, tok, [("What is 2+3?", "5")])
    capsys.readouterr()
    assert main(["rm", "score", "--model", str(directory), "--prompt", "What is 2+3?", "--response", "5",
                 "--device", "cpu"]) == 0
    assert float(capsys.readouterr().out) == pytest.approx(expected, abs=1e-5)
    data = tmp_path / "responses.jsonl"
    data.write_text(json.dumps({"prompt": "What is 2+3?", "response": "5"}) + "\n")
    assert main(["rm", "score", "--model", str(directory), "--input", str(data), "--device", "cpu"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["reward"] == pytest.approx(expected, abs=1e-5)


def test_an_hf_reward_model_with_pickled_weights_is_refused(tiny_hf_dir: Path, tmp_path: Path) -> None:
    """load_reward_model reads safetensors only: a folder whose weights are a pytorch_model.bin is one line,
    and the file is never unpickled (its bytes are not even a pickle here)."""
    from llmlab.align.models import load_policy
    from llmlab.align.reward_model import load_reward_model, reward_model_from_policy, save_reward_model
    from llmlab.errors import UserError

    policy, tok = load_policy(str(tiny_hf_dir), device="cpu")
    folder = save_reward_model(reward_model_from_policy(policy), tok, tmp_path / "rm")
    assert load_reward_model(folder)[0] is not None
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(UserError, match="only safetensors"):
        load_reward_model(folder)
