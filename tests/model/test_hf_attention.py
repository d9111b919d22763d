"""llmlab's attention backends inside transformers: a tiny random HF Llama (and a Mistral with a
sliding window), saved and loaded back with attn_implementation="llmlab_*", gives eager's logits
and eager's greedy generations.

The ground truth is transformers' own "eager" attention (matmul, additive mask, softmax) on the
same weights. Weights are re-drawn with std 0.5 so that a wrong mask, scale or head grouping
moves the logits by far more than the fp32 tolerance. The tiled backend is registered with
tiles of 4 queries x 3 keys, so prompts of 9-13 tokens cross several tiles, partial ones included.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from llmlab.errors import UserError  # noqa: E402
from llmlab.model.hf_attention import register_hf_attention  # noqa: E402

NAMES = ("llmlab_naive", "llmlab_sdpa", "llmlab_tiled")
ATOL = RTOL = 1e-4  # fp32: the backends sum in different orders


@pytest.fixture(scope="module", autouse=True)
def _registered() -> Iterator[None]:
    register_hf_attention(q_block=4, k_block=3)
    yield


def save_tiny(folder: Path, *, seed: int = 0, mistral_window: int | None = None, **overrides) -> Path:
    """A seeded random 2-layer HF model (GQA by default: 4 query heads, 2 kv heads), saved to `folder`."""
    common = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, eos_token_id=None,
                  bos_token_id=None)
    common.update(overrides)
    if mistral_window is None:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**common))
    else:
        model = transformers.MistralForCausalLM(transformers.MistralConfig(sliding_window=mistral_window, **common))
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    model.save_pretrained(folder)
    return folder


@functools.cache  # the tests only read the models: load each (folder, attention) once
def load(folder: Path, name: str) -> torch.nn.Module:
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation=name)
    assert model.config._attn_implementation == name
    return model.eval()


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Llama with 4 query heads over 4 (MHA), 2 (GQA) or 1 (MQA) kv heads; Mistral (GQA) with a window of 4."""
    folders = {kind: save_tiny(tmp_path_factory.mktemp(f"hf-{kind}"), num_key_value_heads=kv)
               for kind, kv in (("mha", 4), ("gqa", 2), ("mqa", 1))}
    folders["mistral"] = save_tiny(tmp_path_factory.mktemp("hf-mistral"), mistral_window=4)
    return folders


def logits(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def left_padded() -> tuple[torch.Tensor, torch.Tensor]:
    """Three prompts of 11, 7 and 4 tokens, padded on the left to 11."""
    torch.manual_seed(1)
    ids = torch.randint(1, 64, (3, 11))
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, :4] = 0
    mask[2, :7] = 0
    return ids.masked_fill(mask == 0, 0), mask


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", ["mha", "gqa", "mqa"])
def test_logits_match_eager(dirs: dict[str, Path], name: str, kind: str):
    folder = dirs[kind]
    ids = torch.randint(1, 64, (2, 13), generator=torch.Generator().manual_seed(2))
    expected = logits(load(folder, "eager"), ids)
    torch.testing.assert_close(logits(load(folder, name), ids), expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("name", NAMES)
def test_left_padded_batch_matches_eager_at_real_tokens(dirs: dict[str, Path], name: str):
    """Padding positions see no key: llmlab outputs zeros there, eager an average, so only real
    tokens are compared. Each row also equals its own prompt run alone, without padding."""
    ids, mask = left_padded()
    real = mask.bool()
    got = logits(load(dirs["gqa"], name), ids, mask)
    torch.testing.assert_close(got[real], logits(load(dirs["gqa"], "eager"), ids, mask)[real], atol=ATOL, rtol=RTOL)
    alone = logits(load(dirs["gqa"], name), ids[2:, 7:])  # row 2 without its 7 pads
    torch.testing.assert_close(got[2, 7:], alone[0], atol=ATOL, rtol=RTOL)
    assert not got.isnan().any()


@pytest.mark.parametrize("name", NAMES)
def test_mistral_sliding_window_matches_eager(dirs: dict[str, Path], name: str):
    """A window of 4 over 11 tokens: most keys fall outside it, so a missed window shows."""
    folder = dirs["mistral"]
    ids, mask = left_padded()
    real = mask.bool()
    expected = logits(load(folder, "eager"), ids, mask)
    torch.testing.assert_close(logits(load(folder, name), ids, mask)[real], expected[real], atol=ATOL, rtol=RTOL)


def greedy(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                              pad_token_id=0, **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_greedy_generate_matches_eager(dirs: dict[str, Path], name: str):
    """Left-padded prefill, then one-token decode steps against the dynamic KV cache."""
    ids, mask = left_padded()
    expected = greedy(load(dirs["gqa"], "eager"), ids, mask)
    assert expected.shape == (3, 19)
    assert torch.equal(greedy(load(dirs["gqa"], name), ids, mask), expected)


def test_static_cache_without_a_mask_matches_eager(dirs: dict[str, Path]):
    """A static cache hands over all its 16 slots, filled or not, and no attention_mask says which:
    the mask builder must tell the attention where the keys end (prefill of 8, then one token)."""
    model = load(dirs["gqa"], "llmlab_tiled")
    ids = torch.randint(1, 64, (1, 9), generator=torch.Generator().manual_seed(3))
    cache = transformers.StaticCache(config=model.config, max_cache_len=16)
    with torch.no_grad():
        prefill = model(input_ids=ids[:, :8], cache=cache, use_cache=True).logits
        step = model(input_ids=ids[:, 8:], cache=cache, use_cache=True).logits
    expected = logits(load(dirs["gqa"], "eager"), ids)
    torch.testing.assert_close(torch.cat([prefill, step], dim=1), expected, atol=ATOL, rtol=RTOL)


def test_mistral_window_generate_matches_eager(dirs: dict[str, Path]):
    """Decoding past the window: the sliding-window cache keeps only the last keys."""
    folder = dirs["mistral"]
    ids, mask = left_padded()
    assert torch.equal(greedy(load(folder, "llmlab_tiled"), ids, mask), greedy(load(folder, "eager"), ids, mask))


def test_registered_names():
    triton_here = torch.cuda.is_available() and importlib.util.find_spec("triton") is not None
    assert register_hf_attention(q_block=4, k_block=3) == [*NAMES, *(["llmlab_triton"] if triton_here else [])]


def test_dropout_is_refused_in_training(tmp_path: Path):
    folder = save_tiny(tmp_path, attention_dropout=0.1)
    model = load(folder, "llmlab_tiled").train()
    with pytest.raises(UserError, match="no dropout"):
        model(input_ids=torch.ones(1, 5, dtype=torch.long))
    logits(model.eval(), torch.ones(1, 5, dtype=torch.long))  # eval: dropout 0, runs


def test_custom_4d_mask_is_refused(dirs: dict[str, Path]):
    mask = torch.ones(1, 1, 5, 5, dtype=torch.bool).tril()
    with pytest.raises(UserError, match="2D padding mask"):
        logits(load(dirs["gqa"], "llmlab_naive"), torch.ones(1, 5, dtype=torch.long), mask)


def test_packed_position_ids_are_refused(dirs: dict[str, Path]):
    """Two sequences packed in one row (positions restart at 0): refused, not silently mixed."""
    model = load(dirs["gqa"], "llmlab_sdpa")
    with pytest.raises(UserError, match="packed sequences"), torch.no_grad():
        model(input_ids=torch.ones(1, 6, dtype=torch.long), position_ids=torch.tensor([[0, 1, 2, 0, 1, 2]]))


def test_bad_tile_sizes_are_refused():
    with pytest.raises(UserError, match="tile sizes must be positive"):
        register_hf_attention(q_block=0)


def test_why_the_tiled_backend_is_not_named_llmlab_flash():
    """transformers takes any name containing "flash" for a FlashAttention kernel and tries to load one
    when the model is built (see the module docstring). If this starts failing, transformers changed
    its rule and the name llmlab_flash becomes possible."""
    from transformers.utils.generic import is_flash_attention_requested

    assert is_flash_attention_requested(requested_attention_implementation="llmlab_flash")
    assert not any(is_flash_attention_requested(requested_attention_implementation=name) for name in NAMES)
