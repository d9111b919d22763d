"""`llmlab bench inference`: its pure pieces by hand, the quality gate, and the command end to end.

A tiny saved model (vocab 64, d_model 32, 2 layers) and a few tokens, so the file runs in seconds on
a loaded machine: the timings mean nothing here; the tests check the rows, the gate and the errors.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from llmlab.bench import inference
from llmlab.bench.config import BenchInferenceConfig
from llmlab.bench.inference import agreement, gate, kv_cache_bytes, perplexity, set_attention, windows
from llmlab.cli import main
from llmlab.model.config import ModelConfig
from llmlab.model.io import save_model
from llmlab.model.llama import Transformer

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48, max_seq_len=64)
FAST = ["--quiet", "repeats=1", "new_tokens=4", "prompt_len=6", "eval_tokens=96", "seq_len=31", "batches=[1,2]",
        "threads=1"]


def tiny() -> Transformer:
    torch.manual_seed(0)
    return Transformer(TINY).eval()


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    save_model(tiny(), tmp_path / "model")
    return tmp_path / "model"


def test_pure_pieces_by_hand() -> None:
    """agreement [[1, 2, 3], [4]] vs [[1, 5, 3], [4]]: 3 of 4 positions. Uniform logits over V give
    cross-entropy log V, so perplexity V. KV cache: 2 (K, V) x 2 layers x B 3 x 2 kv heads x 10 x
    head_dim 8 x 4 bytes = 7680. 100 ids in windows of 31 + 1: 3 rows of 32."""
    assert agreement([[1, 2, 3], [4]], [[1, 5, 3], [4]]) == 0.75
    rows = torch.randint(0, 64, (2, 9))
    assert math.isclose(perplexity(torch.zeros(2, 8, 64), rows), 64.0, rel_tol=1e-6)
    assert kv_cache_bytes(tiny(), 3, 10) == 2 * 2 * 3 * 2 * 10 * 8 * 4 == 7680
    assert windows(torch.arange(100), 31).shape == (3, 32)
    assert torch.equal(windows(torch.arange(100), 31)[1], torch.arange(32, 64))
    assert windows(torch.arange(5), 31).shape == (1, 5)  # a short text is one window


def test_set_attention_swaps_the_backend_of_the_loaded_model() -> None:
    """After the swap every layer runs naive attention (it can return weights only as naive; here the
    logits equal naive-config logits exactly, and sdpa's up to float rounding)."""
    model = tiny()
    x = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        sdpa = model(x).logits
        set_attention(model, "naive")
        assert model.cfg.attention == "naive" and all(b.attn.cfg.attention == "naive" for b in model.blocks)
        naive = model(x).logits
    reference = Transformer(TINY.__class__(**{**vars(TINY), "attention": "naive"})).eval()
    reference.load_state_dict(model.state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(naive, reference(x).logits, rtol=0, atol=0)
    torch.testing.assert_close(naive, sdpa, rtol=0, atol=1e-5)


def test_gate_names_the_backend_and_the_number() -> None:
    cfg = BenchInferenceConfig(model="m")
    row = {"backend": "flash", "max_logit_diff": 0.25, "tolerance_logits": 1e-3, "perplexity": 10.5,
           "ppl_delta": 0.5, "agreement": 0.5}
    fails = gate(row, cfg)
    assert fails == ["flash: max |logit diff| 0.25 > tolerance.flash 0.001",
                     "flash: perplexity delta +0.5 (0.05 relative) > tolerance.perplexity 0.001",
                     "flash: greedy agreement 0.500 < tolerance.agreement 0.9"]
    assert gate({**row, "max_logit_diff": 1e-4, "ppl_delta": 0.0, "agreement": 1.0}, cfg) == []
    assert gate({**row, "max_logit_diff": float("nan"), "ppl_delta": 0.0, "agreement": 1.0}, cfg) != []


def test_command_end_to_end(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = main(["bench", "inference", "--model", str(model_dir), "--attention", "naive,flash,triton",
                 "--out", str(out), *FAST])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    for name in ("config.yaml", "table.md", "results.json", "inference.png"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in results["rows"]] == ["original", "naive", "flash"]
    assert results["original_attention"] == "sdpa"
    if not torch.cuda.is_available():
        assert results["skipped"] == ["triton: skipped (needs CUDA; this run is on cpu)"]
        assert "triton: skipped (needs CUDA" in captured.out
    for r in results["rows"]:
        assert set(r["speed"]) == {"1", "2"}
        assert r["speed"]["1"]["tokens_per_s"] > 0 and r["speed"]["1"]["token_p95_ms"] >= r["speed"]["1"]["token_p50_ms"]
        assert r["kv_cache_mib"] * 2**20 == 2 * 2 * 2 * 2 * (6 + 4) * 8 * 4  # b2, prompt 6 + 4 new tokens
        assert r["max_logit_diff"] < 1e-4 and r["agreement"] == 1.0 and r["failures"] == []
    assert results["rows"][0]["max_logit_diff"] == 0.0
    assert "| naive |" in captured.out and "| flash |" in captured.out


def test_a_backend_past_its_tolerance_fails_loudly(model_dir: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A naive backend whose logits are off by 0.5 exceeds tolerance.naive (1e-3): exit 1, one line."""
    real = inference.forward_logits

    def off_when_naive(model: Transformer, rows: torch.Tensor) -> torch.Tensor:
        logits = real(model, rows)
        return logits + 0.5 * (model.cfg.attention == "naive")

    monkeypatch.setattr(inference, "forward_logits", off_when_naive)
    code = main(["bench", "inference", "--model", str(model_dir), "--attention", "naive,sdpa",
                 "--out", str(tmp_path / "run"), *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1] == "error: quality gate failed: naive: max |logit diff| 0.5 > tolerance.naive 0.001"
    assert (tmp_path / "run" / "table.md").is_file()  # the table is written before the run fails


@pytest.mark.parametrize(("args", "message"), [
    (["--attention", "naive,turbo"], "turbo"),
    (["--attention", "sdpa,sdpa"], "given twice"),
    (["batches=[0]"], "batches"),
])
def test_bad_settings_are_one_line_errors(model_dir: Path, tmp_path: Path, args: list[str], message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "inference", "--model", str(model_dir), "--out", str(tmp_path / "run"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_a_folder_that_is_not_a_model_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    for folder, message in ((tmp_path / "empty", "not a model folder"), (tmp_path / "absent", "no such model folder")):
        code = main(["bench", "inference", "--model", str(folder), "--out", str(tmp_path / f"run-{folder.name}")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and message in err[0], err
    code = main(["bench", "inference", "--out", str(tmp_path / "run-none")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["error: model is required: --model DIR (an llmlab or HF model folder)"]
