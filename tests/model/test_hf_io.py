"""llmlab <-> transformers: the exported folder loads in `AutoModelForCausalLM` and gives the same
logits, hidden states and attention weights; folders written by transformers load in llmlab; what
llmlab cannot represent is refused in one line, and pickled weights are never unpickled.

Weights are re-drawn with std 0.5 (norm weights and biases included): with the default init
(norms at 1, biases at 0, std 0.02) a wrong norm, a missing bias or a swapped q/k split would
move the logits by less than the tolerance. fp32 throughout; logits agree to 1e-4.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import one_thread

transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file, save_file  # noqa: E402

from llmlab.errors import UserError  # noqa: E402
from llmlab.model.config import ModelConfig  # noqa: E402
from llmlab.model.hf_io import export_hf, from_hf  # noqa: E402
from llmlab.model.llama import Transformer  # noqa: E402

TINY = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, d_ff=48, max_seq_len=64)
ATOL = 1e-4
VARIANTS = {
    "mha": {},
    "gqa": {"n_kv_heads": 2},
    "mqa": {"n_kv_heads": 1},
    "untied": {"tie_embeddings": False, "n_kv_heads": 2},
    "mistral_window": {"sliding_window": 5, "n_kv_heads": 2},
    "qwen2_bias": {"qkv_bias": True, "n_kv_heads": 2, "tie_embeddings": False},
}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Module scope: the `exported` models are built and exported on one thread too."""
    with one_thread():
        yield


def randomise(module: torch.nn.Module, seed: int, std: float = 0.5) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)


def tiny_model(seed: int = 0, **overrides) -> Transformer:
    model = Transformer(replace(TINY, **overrides))
    randomise(model, seed)
    return model.eval()


def tokens(B: int, T: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 64, (B, T), generator=torch.Generator().manual_seed(seed))


def hf_load(directory: Path) -> torch.nn.Module:
    return transformers.AutoModelForCausalLM.from_pretrained(
        directory, attn_implementation="eager", dtype=torch.float32).eval()


@pytest.fixture(scope="module", params=list(VARIANTS))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    model = tiny_model(**VARIANTS[request.param])
    directory = export_hf(model, tmp_path_factory.mktemp(request.param))
    return request.param, model, hf_load(directory)


# ---------------------------------------------------------------------- export


def test_export_architecture(exported: tuple) -> None:
    name, _, hf = exported
    want = {"mistral_window": "MistralForCausalLM", "qwen2_bias": "Qwen2ForCausalLM"}.get(name, "LlamaForCausalLM")
    assert type(hf).__name__ == want


def test_exported_logits_hidden_states_and_attentions_match_hf(exported: tuple) -> None:
    """T = 13 > the Mistral window of 5, so the window shapes the logits."""
    _, model, hf = exported
    idx = tokens(2, 13)
    with torch.no_grad():
        ours = model(idx, return_attention=True, return_hidden=True)
        theirs = hf(idx, output_hidden_states=True, output_attentions=True)
    torch.testing.assert_close(ours.logits, theirs.logits, rtol=0, atol=ATOL)
    assert len(ours.hidden_states) == len(theirs.hidden_states) == TINY.n_layers + 1
    for a, b in zip(ours.hidden_states, theirs.hidden_states, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=ATOL)
    assert len(ours.attentions) == len(theirs.attentions) == TINY.n_layers
    for a, b in zip(ours.attentions, theirs.attentions, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_left_padded_batch_matches_hf_attention_mask(exported: tuple) -> None:
    """Rows of 11, 6 and 9 real tokens, left-padded to 11: llmlab's key_padding_mask + per-row positions
    against HF's attention_mask + position_ids, on the real positions; and row by row alone."""
    _, model, hf = exported
    lengths = (11, 6, 9)
    idx = tokens(3, 11, seed=2)
    real = torch.zeros(3, 11, dtype=torch.bool)
    for row, n in enumerate(lengths):
        real[row, 11 - n:] = True
        idx[row, : 11 - n] = 0
    positions = (real.long().cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        ours = model(idx, positions=positions, key_padding_mask=real).logits
        theirs = hf(idx, attention_mask=real.long(), position_ids=positions).logits
        torch.testing.assert_close(ours[real], theirs[real], rtol=0, atol=ATOL)
        for row, n in enumerate(lengths):
            alone = model(idx[row:row + 1, 11 - n:]).logits[0]
            torch.testing.assert_close(ours[row, 11 - n:], alone, rtol=0, atol=ATOL)


def test_both_window_and_bias_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="sliding window and q/k/v biases"):
        export_hf(tiny_model(sliding_window=4, qkv_bias=True), tmp_path)


# ---------------------------------------------------------------------- import


def hf_tiny(kind: str, **extra) -> torch.nn.Module:
    common = {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
              "rms_norm_eps": 1e-6, "tie_word_embeddings": False} | extra
    extra = {}
    if kind == "llama":
        config = transformers.LlamaConfig(**common, **extra)
        model = transformers.LlamaForCausalLM(config)
    elif kind == "mistral":
        config = transformers.MistralConfig(**common, sliding_window=4, **extra)
        model = transformers.MistralForCausalLM(config)
    else:
        config = transformers.Qwen2Config(**common, **extra)
        model = transformers.Qwen2ForCausalLM(config)
    randomise(model, seed=3)
    return model.eval()


@pytest.mark.parametrize("kind", ["llama", "mistral", "qwen2"])
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_from_hf_matches_transformers(kind: str, tied: bool, tmp_path: Path) -> None:
    hf = hf_tiny(kind, tie_word_embeddings=tied)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    model, tokenizer = from_hf(tmp_path)
    assert tokenizer is None
    assert model.cfg.qkv_bias == (kind == "qwen2")
    assert model.cfg.sliding_window == (4 if kind == "mistral" else None)
    assert model.cfg.tie_embeddings == tied
    idx = tokens(2, 12)
    with torch.no_grad():
        torch.testing.assert_close(model(idx).logits, hf(idx).logits, rtol=0, atol=ATOL)


def test_sharded_safetensors_load(tmp_path: Path) -> None:
    hf = hf_tiny("llama")
    hf.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="20KB")
    assert len(list(tmp_path.glob("*.safetensors"))) > 2
    model, _ = from_hf(tmp_path)
    idx = tokens(1, 10)
    with torch.no_grad():
        torch.testing.assert_close(model(idx).logits, hf(idx).logits, rtol=0, atol=ATOL)


def edit_config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize(("changes", "message"), [
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope scaling"),
    ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}}, "rope scaling"),
    ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
    ({"mlp_bias": True}, "MLP bias"),
    ({"attention_bias": True}, "attention_bias"),
    ({"model_type": "gpt2"}, "model_type 'gpt2'"),
    ({"head_dim": 16}, "head_dim 16"),
])
def test_unsupported_configs_are_refused(changes: dict, message: str, tmp_path: Path) -> None:
    hf_tiny("llama").save_pretrained(tmp_path, safe_serialization=True)
    edit_config(tmp_path, **changes)
    with pytest.raises(UserError, match=message) as info:
        from_hf(tmp_path)
    assert "\n" not in str(info.value)


class Booby:
    """Unpickling this touches a marker file: the proof that a loader ran pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_pickled_weights_are_never_unpickled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hf_tiny("llama").save_pretrained(tmp_path, safe_serialization=True)
    for f in tmp_path.glob("*.safetensors"):
        f.unlink()
    marker = tmp_path / "unpickled"
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps(Booby(marker)))

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle was used")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    with pytest.raises(UserError, match="safetensors") as info:
        from_hf(tmp_path)
    assert "pytorch_model.bin" in str(info.value)
    assert not marker.exists()


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    hf_tiny("llama").save_pretrained(tmp_path, safe_serialization=True)
    path = tmp_path / "model.safetensors"
    state = load_file(path)
    del state["model.layers.1.mlp.up_proj.weight"]
    save_file(state, path, metadata={"format": "pt"})
    with pytest.raises(UserError, match=r"model\.layers\.1\.mlp\.up_proj\.weight is missing"):
        from_hf(tmp_path)


def test_round_trip_through_hf_folder(tmp_path: Path) -> None:
    """export_hf then from_hf: the same model, fused tensors rebuilt exactly."""
    model = tiny_model(n_kv_heads=2, qkv_bias=True, tie_embeddings=False)
    back, _ = from_hf(export_hf(model, tmp_path))
    assert back.cfg == replace(model.cfg, max_seq_len=64)
    for (name, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
