"""Shared test settings: offline, headless, seeded; torch on one thread (`one_thread`); and the tiny model
every trainer's tests use (tiny_tokenizer_dir, tiny_model_dir, tiny_hf_dir).

The tokenizer is a byte-level BPE of 400 ids (395 merges/bytes + CHAT_SPECIALS) trained on a
few task-world documents; the model is a 2-layer, 32-wide Llama (about 0.04M parameters) with
random weights, saved once per session as an llmlab folder and as an HF folder.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one intra-op thread inside the block, the thread count restored afterwards.

    The tests' tensors are tiny and the test machines share two cores, so more threads only add
    synchronisation: a (2, 4, 37, 37) naive attention backward took 280 ms on two busy threads and
    0.8 ms on one, a 64-wide matmul ~30x longer. The exact-resume training test also needs the same
    thread count in the test process as in its subprocesses.

    For session- and module-scoped fixtures: `from conftest import one_thread` (this file is the
    module `conftest`: tests/ has no __init__.py). For tests: the `one_torch_thread` fixture.
    """
    import torch  # here: the data and tokenizer tests never import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """`one_thread` around one test: `pytestmark = pytest.mark.usefixtures("one_torch_thread")` in a
    test module, or an autouse fixture in a directory's conftest.py that requests it."""
    with one_thread():
        yield


TINY_MODEL = {"d_model": 32, "n_layers": 2, "n_heads": 4, "max_seq_len": 128}


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


# ---------------------------------------------------------------------- killing a run mid-way

PAUSE_HOOK = '''
"""`python -m llmlab` with one change, so that the test can SIGKILL the run at a known point: touch
PAUSE_MARKER and hang after logging training step PAUSE_AT, or, with PAUSE_CALL="module:name:N", at the
N-th call of module.name (before it runs). With PAUSE_SIGINT set, it sends itself a Ctrl-C there instead."""
import importlib, os, signal, sys, time
from pathlib import Path
from llmlab.cli import main
from llmlab.runs import Run

def pause():
    Path(os.environ["PAUSE_MARKER"]).touch()
    if os.environ.get("PAUSE_SIGINT"):  # a Ctrl-C instead of a hang: the run goes on to handle it
        os.kill(os.getpid(), signal.SIGINT)
        return
    time.sleep(600)

if "PAUSE_CALL" in os.environ:
    module_name, name, nth = os.environ["PAUSE_CALL"].split(":")
    module, calls = importlib.import_module(module_name), [0]
    real = getattr(module, name)

    def pausing(*args, **kwargs):
        calls[0] += 1
        if calls[0] == int(nth):
            pause()
        return real(*args, **kwargs)

    setattr(module, name, pausing)
else:
    metrics, pause_at = Run.metrics, int(os.environ["PAUSE_AT"])

    def pausing_metrics(self, step, **values):
        metrics(self, step, **values)
        if step == pause_at and "loss" in values:
            pause()

    Run.metrics = pausing_metrics
raise SystemExit(main(sys.argv[1:]))
'''


def subprocess_environment() -> dict[str, str]:
    """The environment of `python -m llmlab` subprocesses: offline, one torch thread, no debug, this src."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("LLMLAB_DEBUG", None)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env


def kill_after_step(argv: list[str], step: int, tmp_path: Path, *, call: str = "") -> None:
    """Run `llmlab *argv` in a subprocess and SIGKILL it once it has logged training step `step`, or, with
    `call="module:name:N"`, when it makes the N-th call of module.name."""
    marker, hook = tmp_path / "paused", tmp_path / "pause_hook.py"
    hook.write_text(PAUSE_HOOK)
    where = {"PAUSE_CALL": call} if call else {"PAUSE_AT": str(step)}
    proc = subprocess.Popen([sys.executable, str(hook), *argv], env={**subprocess_environment(), **where,
                            "PAUSE_MARKER": str(marker)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc.poll() is None, f"the run ended early: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, f"the run never reached step {step} / {call}"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the JAX tests last. subtle: importing jax starts its thread pool, and a process that forks after
    that may deadlock (JAX warns so); later tests fork (data loaders, the benchmark harness), so no test
    may run after jax is imported in this process."""
    items.sort(key=lambda item: "jax" in item.path.name)  # stable: every other test keeps its order
