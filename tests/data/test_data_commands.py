"""`llmlab data validate|score|generate` through the CLI: what they accept is what the trainers accept,
and every bad input is one line naming the file (and the line, or the byte offset)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmlab.cli import main
from llmlab.data.schemas import SCHEMAS, normalise_chat, normalise_pair


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


GOOD = {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}


@pytest.mark.parametrize(("bad", "problem"), [
    ({"prompt": "", "chosen": "4", "rejected": "5"}, "'prompt' is empty"),
    ({"prompt": "What is 2+2?", "chosen": "4", "rejected": "4"}, "'chosen' and 'rejected' are the same"),
    ({"prompt": "What is 2+2?", "chosen": " ", "rejected": "5"}, "'chosen' is empty"),
])
def test_validate_prefs_refuses_what_the_trainers_refuse(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         bad: dict[str, str], problem: str) -> None:
    """`data validate --schema prefs` used to pass these rows, which `dpo` and `rm train` then rejected."""
    path = write_jsonl(tmp_path / "prefs.jsonl", [GOOD, bad, GOOD])
    assert main(["data", "validate", "--input", str(path), "--schema", "prefs"]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{path}:2: {problem}", f"{path}: 2 valid prefs rows, 1 malformed"]


def test_validate_prefs_strict_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_jsonl(tmp_path / "prefs.jsonl", [GOOD, {**GOOD, "rejected": GOOD["chosen"]}])
    assert main(["data", "validate", "--input", str(path), "--schema", "prefs", "strict=true"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {path}:2: 'chosen' and 'rejected' are the same\n"


def test_validate_chat_refuses_an_empty_assistant_turn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    empty = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]}
    path = write_jsonl(tmp_path / "chats.jsonl", [ok, empty])
    assert main(["data", "validate", "--input", str(path), "--schema", "chat"]) == 2
    assert capsys.readouterr().out.splitlines()[0] == f"{path}:2: 'messages' has no non-empty assistant message"


def test_the_schemas_use_the_trainers_normalisers() -> None:
    """One checker: a row the schema passes normalises without a problem, and a normaliser's problem
    is the schema's problem (llmlab.align.data imports normalise_pair / normalise_chat from here)."""
    pairs = [GOOD, {**GOOD, "prompt": ""}, {**GOOD, "chosen": "5"},
             {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}],
              "rejected": [{"role": "assistant", "content": "a"}]}]
    for row in pairs:
        result = normalise_pair(row)
        assert SCHEMAS["prefs"](row) == (result if isinstance(result, str) else None)
    chat = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]}
    assert SCHEMAS["chat"](chat) == normalise_chat(chat)


@pytest.mark.parametrize("command", [["validate", "--schema", "eval"], ["score"]])
def test_non_utf8_input_names_file_line_and_byte(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 command: list[str]) -> None:
    good = b'{"prompt": "What is 2+2?", "response": "4"}\n'
    path = tmp_path / "rows.jsonl"
    path.write_bytes(good + b'{"prompt": "caf\xe9", "response": "x"}\n')
    assert main(["data", *command, "--input", str(path)]) == 2
    offset = len(good) + len(b'{"prompt": "caf')
    assert capsys.readouterr().err == f"error: {path}: not valid UTF-8 at byte offset {offset} (line 2)\n"


def test_generate_out_that_is_a_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.jsonl").mkdir()
    assert main(["data", "generate", "--n", "3", "--out", str(tmp_path / "x.jsonl")]) == 2
    assert capsys.readouterr().err == f"error: --out {tmp_path / 'x.jsonl'}: is a directory, not a file\n"
    assert [p.name for p in tmp_path.iterdir()] == ["x.jsonl"]


def test_score_out_that_is_a_folder_fails_before_scoring(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = write_jsonl(tmp_path / "r.jsonl", [{"prompt": "What is 2+2?", "response": "4"}])
    (tmp_path / "report").mkdir()
    assert main(["data", "score", "--input", str(rows), "--out", str(tmp_path / "report")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing printed: the check comes first
    assert captured.err == f"error: --out {tmp_path / 'report'}: is a directory, not a file\n"
