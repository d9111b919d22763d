"""Every `llmlab` command line of the README's command block runs as printed, in order, in a fresh folder,
at tiny size: each line gets `key=value` overrides appended (overrides win over flags and defaults), and
the files a user would bring (responses.jsonl, my_prefs.jsonl, notes.txt, ./my-hf-model) are made just
before the line that reads them. Left out: `torchrun` (tests/align/test_trainers.py runs DDP) and
`llmlab demo` (tests/test_demo.py runs it small)."""

from __future__ import annotations

import io
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from llmlab.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"

TINY_PRETRAIN = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.max_seq_len=128", "train.seq_len=32",
                 "train.batch_size=2", "train.max_steps=2", "train.eval_every=2", "train.eval_batches=1",
                 "train.sample_tokens=4", "train.checkpoint_every=2", "data.corpus_chars=20000"]
TINY_ALIGN = ["train.max_steps=2", "train.batch_size=2", "train.eval_every=2", "train.eval_batches=1", "data.n=8"]
TINY_EVAL = ["eval.n_prompts=2", "eval.n_pairs=2", "eval.max_new_tokens=4"]
TINY = {  # command words -> overrides appended to the README's line
    "data generate": lambda line: ["chars=20000"] if "--kind pretrain" in line else ["n=16"],
    "tokenizer train": lambda line: ["vocab_size=300", "corpus_chars=20000"],
    "pretrain": lambda line: ["train.max_steps=3"] if "--resume" in line else TINY_PRETRAIN,
    "generate": lambda line: ["max_new_tokens=4"],
    "chat": lambda line: ["max_new_tokens=4"],
    "sft": lambda line: ["train.max_steps=3"] if "--resume" in line else TINY_ALIGN,
    "rm train": lambda line: TINY_ALIGN,
    "dpo": lambda line: [*TINY_ALIGN, *TINY_EVAL],
    "sample-prefs": lambda line: ["n=4", "samples=2", "max_new_tokens=4"],
    "eval-prefs": lambda line: TINY_EVAL,
    "bench attention": lambda line: ["min_len=32", "max_len=64", "repeats=1", "decode_calls=1", "check_max_len=64",
                                     "check_grads_max_len=64", "matmul_n=64"],
}


def readme_commands() -> list[str]:
    """The `llmlab ...` lines of the bash block under the README's "## Commands", comments cut,
    continuations joined."""
    block = README.read_text(encoding="utf-8").split("## Commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines, current = [], ""
    for raw in block.splitlines():
        text = re.sub(r"\s+#.*$", "", raw).strip() if not raw.lstrip().startswith("#") else ""
        current = f"{current} {text.rstrip(chr(92)).strip()}".strip()
        if text.endswith("\\"):
            continue
        if current.startswith("llmlab ") and not current.startswith("llmlab demo"):
            lines.append(current)
        current = ""
    return lines


def words_of(argv: list[str]) -> str:
    two = " ".join(argv[:2])
    return two if two in TINY else argv[0]


def bring_user_files(line: str, here: Path) -> None:
    """The files a user brings, made from what the earlier lines wrote."""
    if "responses.jsonl" in line:
        rows = [json.loads(x) for x in (here / "eval.jsonl").read_text().splitlines()[:4]]
        (here / "responses.jsonl").write_text("".join(json.dumps({"prompt": r["prompt"], "response": "42"}) + "\n"
                                                      for r in rows))
    if "my_prefs.jsonl" in line:
        shutil.copy(here / "prefs.jsonl", here / "my_prefs.jsonl")
    if "notes.txt" in line:
        (here / "notes.txt").write_text("Some notes.\nA second line, with ünïcode.\n")
    if "./my-hf-model" in line and not (here / "my-hf-model").exists():
        shutil.copytree(here / "hf" / "pt", here / "my-hf-model")


@pytest.mark.slow
def test_the_readme_command_block_runs_as_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    commands = readme_commands()
    assert len(commands) >= 30, commands
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO("What is 2 + 3?\n/reset\n/exit\n"))
    for line in commands:
        argv = shlex.split(line)[1:]
        bring_user_files(line, tmp_path)
        extra = TINY.get(words_of(argv), lambda line: [])(line)
        code = main([*argv, "--quiet", *extra] if "--print-config" not in argv else argv)
        err = capsys.readouterr().err
        assert code == 0, f"{line}\n{err[-2000:]}"
