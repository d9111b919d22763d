"""Shared pieces of the training tests.

One tiny byte-level BPE (512 ids) and one token cache per session: tokenizer training and
tokenization dominate tiny runs, and the cache key (tokenizer + corpus settings) is the same
for every test that uses the built-in corpus. Torch runs on one thread: the test machines
share two cores, where more threads only thrash (a 64-wide matmul is ~30x slower on two
busy threads than on one), and the exact-resume test needs the same thread count in the
test process and in its subprocesses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import one_thread, subprocess_environment  # the shared ones (tests/conftest.py)

# The tiny run: 0.1M parameters, 8 x 32 tokens a step, ~40 ms a step on one CPU thread.
TINY = {
    "model.vocab_size": "512", "model.d_model": "64", "model.n_layers": "2", "model.n_heads": "4",
    "model.max_seq_len": "64", "train.seq_len": "32", "train.batch_size": "8", "train.max_steps": "6",
    "train.warmup_steps": "2", "train.eval_every": "3", "train.eval_batches": "2", "train.checkpoint_every": "3",
    "train.log_every": "1", "train.sample_tokens": "8", "train.device": "cpu", "data.corpus_chars": "200000",
}


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with one_thread():
        yield


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llmlab.data.chat import CHAT_SPECIALS
    from llmlab.data.config import GenerateConfig
    from llmlab.data.corpora import pretrain_documents
    from llmlab.tokenizers.bpe_train import train_bpe

    directory = tmp_path_factory.mktemp("tokenizer")
    docs = list(pretrain_documents(GenerateConfig(kind="pretrain", chars=100_000)))
    train_bpe(docs, vocab_size=512, special_tokens=CHAT_SPECIALS).save(directory)
    return directory


@pytest.fixture(scope="session")
def token_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("token-cache")


@pytest.fixture(scope="session")
def tiny(tokenizer_dir: Path, token_cache: Path) -> Callable[..., list[str]]:
    """tiny("train.max_steps=12", ...) -> the tiny run's `key=value` overrides with these changed."""

    def overrides(*changes: str) -> list[str]:
        values = {**TINY, "data.tokenizer": str(tokenizer_dir), "data.cache_dir": str(token_cache)}
        for change in changes:
            key, _, value = change.partition("=")
            values[key] = value
        return [f"{k}={v}" for k, v in values.items()]

    return overrides


@pytest.fixture(scope="session")
def tiny_cfg(tiny: Callable[..., list[str]]) -> Callable[..., object]:
    """tiny_cfg("train.max_steps=12", ...) -> a PretrainConfig, resolved as the CLI resolves it."""
    from llmlab.config import load_config
    from llmlab.train.config import PretrainConfig

    return lambda *changes: load_config(PretrainConfig, None, tiny(*changes))


@pytest.fixture(scope="session")
def subprocess_env() -> dict[str, str]:
    """The environment of `python -m llmlab` subprocesses (tests/conftest.py)."""
    return subprocess_environment()
