"""Shared pieces of the alignment tests: one tiny model, as an llmlab folder and as an HF folder.

The tokenizer is a byte-level BPE of 400 ids (395 merges/bytes + CHAT_SPECIALS) trained on a
few task-world documents; the model is a 2-layer, 32-wide Llama (about 0.04M parameters) with
random weights, saved once per session. Torch runs on one thread: the test machines share two
cores (see tests/train/conftest.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

TINY_MODEL = {"d_model": 32, "n_layers": 2, "n_heads": 4, "max_seq_len": 128}


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with one_thread():
        yield


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with tokenizer.json: BPE of 400 ids with llmlab's chat specials."""
    from llmlab.data.chat import CHAT_SPECIALS
    from llmlab.data.config import GenerateConfig
    from llmlab.data.corpora import pretrain_documents, sft_rows
    from llmlab.tokenizers.bpe_train import train_bpe

    docs = list(pretrain_documents(GenerateConfig(kind="pretrain", chars=30_000)))
    docs += [m["content"] for row in sft_rows(GenerateConfig(kind="sft", n=200)) for m in row["messages"]]
    directory = tmp_path_factory.mktemp("align-tokenizer")
    train_bpe(docs, vocab_size=400, special_tokens=CHAT_SPECIALS).save(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> Path:
    """An llmlab model folder (model.yaml, model.safetensors, tokenizer.json): random, seeded weights."""
    import torch

    from llmlab.model.io import save_model
    from llmlab.model.llama import Transformer
    from llmlab.tokenizers.hf_io import load_tokenizer

    tok = load_tokenizer(tiny_tokenizer_dir / "tokenizer.json")
    torch.manual_seed(0)
    with one_thread():
        model = Transformer(_tiny_config(tok.vocab_size))
    directory = tmp_path_factory.mktemp("align-tiny-model")
    save_model(model, directory, tok)
    return directory


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The same model exported as an HF Llama folder (with llmlab's chat template in tokenizer_config.json)."""
    from llmlab.model.hf_io import export_hf
    from llmlab.model.io import load_model

    model, tok = load_model(tiny_model_dir)
    return export_hf(model, tmp_path_factory.mktemp("align-tiny-hf"), tok)


def _tiny_config(vocab_size: int):
    from llmlab.model.config import ModelConfig

    return ModelConfig(vocab_size=vocab_size, **TINY_MODEL)
