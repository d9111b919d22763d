"""llmlab model folders: save_model / load_model round trips, readable YAML, one-line errors for
broken folders, and no pickle anywhere on the load path."""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from llmlab.errors import UserError
from llmlab.model.config import ModelConfig
from llmlab.model.io import CONFIG_FILE, WEIGHTS_FILE, load_model, save_model
from llmlab.model.llama import Transformer

TINY = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48, max_seq_len=64)


def tiny_model(**overrides) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(replace(TINY, **overrides))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model.eval()


@pytest.mark.parametrize("fields", [{}, {"tie_embeddings": False}, {"qkv_bias": True, "sliding_window": 5}],
                         ids=["tied", "untied", "bias_window"])
def test_round_trip_gives_identical_logits(fields: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model(**fields)
    save_model(model, tmp_path)

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle was used")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    back, tokenizer = load_model(tmp_path)
    assert tokenizer is None and not back.training
    assert back.cfg == model.cfg
    assert (back.head.weight is back.embed.weight) == model.cfg.tie_embeddings
    idx = torch.randint(0, 64, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(back(idx).logits, model(idx).logits)
    torch.testing.assert_close(back.cos, model.cos, rtol=0, atol=0)


def test_folder_is_yaml_and_safetensors(tmp_path: Path) -> None:
    """model.yaml is plain YAML of the config; the weights file is safetensors (an 8-byte header length,
    then JSON), and a tied head is stored once."""
    save_model(tiny_model(), tmp_path)
    data = yaml.safe_load((tmp_path / CONFIG_FILE).read_text())
    assert data["d_model"] == 32 and data["n_kv_heads"] == 2 and data["tie_embeddings"] is True
    raw = (tmp_path / WEIGHTS_FILE).read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert raw[8:9] == b"{" and b"embed.weight" in raw[8:8 + header_len]
    assert b"head.weight" not in raw[8:8 + header_len].replace(b"embed.weight", b"")
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))


def test_overrides_and_dtype(tmp_path: Path) -> None:
    save_model(tiny_model(), tmp_path)
    model, _ = load_model(tmp_path, overrides={"attention": "naive", "max_seq_len": 128}, dtype=torch.float64)
    assert model.cfg.attention == "naive" and model.cos.shape[0] == 128
    assert model.embed.weight.dtype == torch.float64


def broken(tmp_path: Path, how: str) -> Path:
    save_model(tiny_model(), tmp_path)
    weights, config = tmp_path / WEIGHTS_FILE, tmp_path / CONFIG_FILE
    if how == "no_weights":
        weights.unlink()
    elif how == "bad_yaml":
        config.write_text("d_model: [unclosed\n")
    elif how == "unknown_key":
        config.write_text(config.read_text() + "n_experts: 4\n")
    elif how == "wrong_shape":
        config.write_text(config.read_text().replace("d_ff: 48", "d_ff: 64"))
    elif how == "no_folder":
        return tmp_path / "nowhere"
    elif how == "empty_folder":
        config.unlink()
        weights.unlink()
    elif how == "truncated_weights":
        weights.write_bytes(weights.read_bytes()[:200])
    elif how == "garbage_weights":
        weights.write_bytes(b"\x00" * 64)
    return tmp_path


@pytest.mark.parametrize(("how", "message"), [
    ("no_weights", "missing"), ("bad_yaml", CONFIG_FILE), ("unknown_key", "n_experts"),
    ("wrong_shape", "shape"), ("no_folder", "no such model folder"), ("empty_folder", "not a model folder"),
])
def test_broken_folders_are_one_line_user_errors(how: str, message: str, tmp_path: Path) -> None:
    directory = broken(tmp_path, how)
    with pytest.raises(UserError, match=message) as info:
        load_model(directory)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("how", ["truncated_weights", "garbage_weights"])
def test_corrupt_weights_are_user_errors(how: str, tmp_path: Path) -> None:
    directory = broken(tmp_path, how)
    with pytest.raises(UserError, match=WEIGHTS_FILE):
        load_model(directory)
