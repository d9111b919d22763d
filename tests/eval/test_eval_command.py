"""`llmlab eval`: the tiny llmlab model and its HF export through the real entry point, user prompt files,
and bad inputs (one line, exit 2, before any model loads)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmlab.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = ("n_prompts=9", "n_documents=4", "max_new_tokens=4", "samples=2", "k=2", "n_boot=200", "batch_size=8",
         "device=cpu")


def run_two_models(tiny_model_dir: Path, tiny_hf_dir: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["eval", "--models", f"llmlab={tiny_model_dir},hf={tiny_hf_dir}", "--out", str(out), "--quiet",
                 *SMALL]) == 0
    return capsys.readouterr().out


@pytest.mark.slow
def test_python_m_llmlab_eval(tiny_model_dir: Path, tiny_hf_dir: Path, tmp_path: Path) -> None:
    """The real entry point (35 s on two busy cores, mostly importing torch and transformers)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("LLMLAB_DEBUG", None)
    done = subprocess.run([sys.executable, "-m", "llmlab", "eval", "--models",
                           f"llmlab={tiny_model_dir},hf={tiny_hf_dir}", "--out", str(tmp_path / "ev"), "--quiet",
                           *SMALL], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# llmlab eval") and "| hf | 9 |" in done.stdout
    assert json.loads((tmp_path / "ev" / "eval.json").read_text())["summary"]["hf"]["win_rate"]["mean"] == 0.5


def test_two_models(tiny_model_dir: Path, tiny_hf_dir: Path, tmp_path: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    """The llmlab folder and its HF export are the same model: the same greedy answers (every win-rate verdict
    a tie: 0.5), the same perplexity to 1e-4, zero paired differences; every figure has n and an interval."""
    out = tmp_path / "ev"
    stdout = run_two_models(tiny_model_dir, tiny_hf_dir, out, capsys)
    assert stdout.startswith("# llmlab eval") and "| hf | 9 |" in stdout
    for name in ("eval.md", "eval.json", "answers.jsonl", "accuracy.png", "rates.png", "length.png",
                 "perplexity.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "eval.json").read_text())
    assert saved["baseline"] == "llmlab" and list(saved["models"]) == ["llmlab", "hf"]
    a, b = saved["summary"]["llmlab"], saved["summary"]["hf"]
    for s in (a, b):
        for key in ("accuracy", "refusal_unsafe", "over_refusal_benign", "format", "pass@1", "pass@k", "tokens",
                    "chars", "perplexity", "bits_per_byte"):
            assert {"n", "mean", "lo", "hi"} <= set(s[key]) and s[key]["n"] >= 1, key
        assert s["accuracy"]["n"] == 9 and s["refusal_unsafe"]["n"] == 1 and s["format"]["n"] == 1
        assert s["perplexity"]["n"] == 4 and s["perplexity"]["lo"] <= s["perplexity"]["mean"] <= s["perplexity"]["hi"]
    assert b["perplexity"]["mean"] == pytest.approx(a["perplexity"]["mean"], rel=1e-4)
    assert b["win_rate"]["mean"] == 0.5 and b["win_rate"]["ties"] == 9 and "win_rate" not in a
    d = b["vs_baseline"]
    assert d["against"] == "llmlab" and d["difference"] == 0.0 and d["tokens"]["difference"] == 0.0
    assert d["bits_per_byte"]["difference"] == pytest.approx(0.0, abs=1e-5)
    rows = [json.loads(x) for x in (out / "answers.jsonl").read_text().splitlines()]
    assert len(rows) == 18 and [r["answer"] for r in rows[:9]] == [r["answer"] for r in rows[9:]]
    assert all(r["win"] is None for r in rows[:9]) and all(r["win"] == 0.5 for r in rows[9:])


def test_user_prompt_files(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """{"prompt"} and single-turn chat rows, task-world and foreign: gold figures and the gold judge's win rate
    count only the two task-world prompts; refusals and length count all three."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "What is 4 * 7?"}) + "\n"
                       + json.dumps({"messages": [{"role": "user", "content": "Tell me a joke."},
                                                  {"role": "assistant", "content": "No."}]}) + "\n\n"
                       + json.dumps({"messages": [{"role": "user", "content": "Reverse the word 'honey'."}]}) + "\n")
    text = tmp_path / "text.txt"
    text.write_text("A first held-out document.\n\nA second one, a little longer than the first.\n")
    code = main(["eval", "--models", f"a={tiny_model_dir},b={tiny_model_dir}", "--prompts", str(prompts),
                 "--text", str(text), "--out", str(tmp_path / "ev"), "--quiet", *SMALL])
    assert code == 0
    saved = json.loads((tmp_path / "ev" / "eval.json").read_text())
    s = saved["summary"]["b"]
    assert s["accuracy"]["n"] == 2 and s["tokens"]["n"] == 3 and s["perplexity"]["n"] == 2
    assert s["win_rate"]["n"] == 2 and saved["judged_prompts"] == 2 and saved["prompts"]["task_world"] == 2
    assert "2 with gold labels" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["--models", "a=/no/such/folder"], "--models a=/no/such/folder: no such model folder"),
    (["--models", "a"], "'a' is not NAME=DIR"),
    (["--models", "a=X,a=X"], "the name 'a' is given twice"),
    (["--models", "a=X", "--judge", "oracle"], "unknown judge 'oracle'"),
    (["--models", "a=X", "--prompts", "BAD"], "BAD.jsonl:2: expected"),
    (["--models", "a=X", "k=5", "samples=2"], "need 1 <= k <= samples"),
])
def test_bad_inputs_are_one_line_errors(args: list[str], message: str, tiny_model_dir: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "BAD.jsonl"
    bad.write_text(json.dumps({"prompt": "What is 4 * 7?"}) + "\n" + json.dumps({"text": "no prompt"}) + "\n")
    args = [str(bad) if a == "BAD" else a.replace("X", str(tiny_model_dir)) for a in args]
    code = main(["eval", *args, "--out", str(tmp_path / "ev"), "--quiet", "device=cpu"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "ev").exists()  # nothing started


def test_report_tables_from_known_figures() -> None:
    """Two models over two prompts: b is right where a is wrong on one prompt (accuracy +0.5 ± 0.5, z 1.0), wins
    it and ties the other (win rate 0.75); bits per byte 2.0 -> 1.9 on two documents with no spread."""
    from llmlab.align.feedback.judges import Verdict
    from llmlab.eval.compare import report_md
    from llmlab.eval.perplexity import DocumentLoss, perplexity_figures
    from llmlab.eval.policies import Answered, paired, summarise
    from llmlab.eval.winrate import win_rate

    a = [Answered("count", 0.0, 0.0, 2, 0.0, 0.0, "1"), Answered("count", 1.0, 0.0, 2, 1.0, 1.0, "2")]
    b = [Answered("count", 1.0, 0.0, 4, 1.0, 1.0, "3 ."), Answered("count", 1.0, 0.0, 4, 1.0, 1.0, "2 .")]
    summary = summarise({"a": a, "b": b}, baseline="a", intervals="bootstrap", n_boot=200)
    for name, bpb in (("a", 2.0), ("b", 1.9)):
        summary[name].update(perplexity_figures([DocumentLoss(bpb * math.log(2) * 10, 5, 10)] * 2, n_boot=200))
    summary["b"]["vs_baseline"]["bits_per_byte"] = paired([2.0, 2.0], [1.9, 1.9])
    summary["b"]["win_rate"] = win_rate([Verdict(1.0), Verdict(0.5)], n_boot=200)
    meta = {"models": {"a": "A", "b": "B"}, "baseline": "a", "judge": "gold", "judged_prompts": 2, "k": 2,
            "samples": 2, "temperature": 1.0, "prompts": {"n": 2, "source": "x", "task_world": 2},
            "text": {"n": 2, "source": "y"}, "intervals": "95% bootstrap"}
    lines = report_md(meta, summary).splitlines()
    row = next(line for line in lines if line.startswith("| b | +0.500"))
    assert row.startswith("| b | +0.500 ± 0.500 (z 1.0) | - | - | - | +0.500 ± 0.500 (z 1.0) |")
    assert row.endswith("| +2.000 ± 0.000 | +2.000 ± 0.000 | -0.1000 ± 0.0000 |")  # tokens, characters, bits/byte
    win = next(line for line in lines if line.startswith("| b | 4.0 ["))
    # 1.9 bits per byte, 2 bytes per token: 3.8 bits per token, perplexity 2^3.8 = 13.929
    assert "| 13.929 [13.929, 13.929] | 1.900 [1.900, 1.900] | 0.75 [0.50, 1.00] | 1/1/0 | - |" in win
    assert "| a | 2.0 [2.0, 2.0] | 1.0 [1.0, 1.0] |" in "\n".join(lines)
