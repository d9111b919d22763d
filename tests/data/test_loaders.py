"""The bad-input matrix for llmlab.data.loaders: every error names the file, the line (1-based)
or the row (0-based), and what is wrong, in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import llmlab
from llmlab.data.loaders import LoadResult, iter_jsonl, load_rows, read_text_documents
from llmlab.data.schemas import SCHEMAS
from llmlab.errors import DataError, UserError

CHAT_OK = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def error_of(fn: Any, *args: Any, **kwargs: Any) -> str:
    """Run fn, expect a DataError, check its message is one line, return it."""
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    assert isinstance(info.value, UserError)  # so the CLI prints it without a traceback
    return message


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --- files that cannot be read ---------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    assert error_of(load_rows, path, "text") == f"{path}: no such file"
    assert error_of(lambda: list(iter_jsonl(path))) == f"{path}: no such file"
    assert error_of(read_text_documents, tmp_path / "f.txt") == f"{tmp_path / 'f.txt'}: no such file"


@pytest.mark.parametrize("content", ["", "  \n\n\t\n", "\r\n \r\n"])
@pytest.mark.parametrize("name", ["f.jsonl", "f.json", "f.txt"])
def test_empty_or_whitespace_only_file(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_bytes(content.encode())
    assert error_of(load_rows, path, "text") == f"{path}: file is empty"


def test_empty_parquet_file(tmp_path: Path) -> None:
    path = tmp_path / "f.parquet"
    path.write_bytes(b"")
    assert error_of(load_rows, path, "eval") == f"{path}: file is empty"


def test_invalid_json_on_line_3(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c" "d"}\n{"text": "e"}\n')
    message = error_of(load_rows, path, "text")
    assert message.startswith(f"{path}:3: invalid JSON (")
    # `{"text": "c" ` is 13 characters, so the unexpected `"d"` starts at column 14 (1-based)
    assert "Expecting ',' delimiter at column 14" in message


def test_iter_jsonl_line_numbers_skip_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_text('\n{"a": 1}\n   \n[2]\r\n\n"x"')  # CRLF and a missing final newline are fine
    assert list(iter_jsonl(path)) == [(2, {"a": 1}), (4, [2]), (6, "x")]


def test_utf8_bom_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "a"}\n')
    assert load_rows(path, "text").rows == [{"text": "a"}]


def test_non_utf8_byte_in_jsonl(tmp_path: Path) -> None:
    """Line 1 is 15 bytes (`{"text": "ok"}` + newline); on line 2, `{"text": "caf` is 13 bytes,
    so the Latin-1 e-acute 0xE9 sits at byte offset 15 + 13 = 28."""
    path = tmp_path / "f.jsonl"
    data = b'{"text": "ok"}\n{"text": "caf\xe9"}\n{"text": "z"}\n'
    path.write_bytes(data)
    assert data.index(b"\xe9") == 28
    expected = f"{path}: not valid UTF-8 at byte offset 28 (line 2)"
    assert error_of(load_rows, path, "text") == expected
    assert error_of(lambda: list(iter_jsonl(path))) == expected


def test_non_utf8_byte_in_text(tmp_path: Path) -> None:
    """`one\\n\\ntwo\\n` is 9 bytes, then `t` and 0xFF: offset 10, on line 4."""
    path = tmp_path / "f.txt"
    path.write_bytes(b"one\n\ntwo\nt\xff\n")
    expected = f"{path}: not valid UTF-8 at byte offset 10 (line 4)"
    assert error_of(read_text_documents, path) == expected
    assert error_of(load_rows, path, "text") == expected
    assert read_text_documents(path, errors="replace") == ["one", "two\nt\ufffd"]


def test_text_documents_split_at_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"  first doc\r\nline two\r\n\r\n\r\n\n second \n\n\n")
    assert read_text_documents(path) == ["first doc\nline two", "second"]
    assert read_text_documents(path, separator="line") == ["first doc", "two\n\n\n\n second"]
    assert load_rows(path, "text").rows == [{"text": "first doc\nline two"}, {"text": "second"}]


def test_unsupported_extension_for_non_text_schema(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text("prompt\nhi\n")
    message = error_of(load_rows, path, "eval")
    assert message.startswith(f"{path}: unsupported file type '.csv' for schema 'eval'")


def test_unknown_schema(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "f.jsonl", [{"text": "a"}])
    message = error_of(load_rows, path, "sft")
    assert message == "unknown schema 'sft' (valid: text, chat, prefs, responses, eval)"


# --- rows that fail their schema, reported as file:line ----------------------------------------


def test_non_object_row(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "f.jsonl", [{"text": "a"}, ["text", "b"]])
    assert error_of(load_rows, path, "text") == f"{path}:2: expected a JSON object, got list"


def test_missing_key(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "f.jsonl", [{"prompt": "p", "rejected": "r"}])
    assert error_of(load_rows, path, "prefs") == f"{path}:1: missing key 'chosen'"


def test_wrong_type(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "f.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r"}] * 2)
    with path.open("a") as f:
        f.write(json.dumps({"prompt": 3, "chosen": "c", "rejected": "r"}) + "\n")
    message = error_of(load_rows, path, "prefs")
    assert message == f"{path}:3: 'prompt' must be a string or a list of messages, got int"


def test_bad_role(tmp_path: Path) -> None:
    messages = [*CHAT_OK["messages"], {"role": "bot", "content": "x"}]
    path = write_jsonl(tmp_path / "f.jsonl", [CHAT_OK, {"messages": messages}])
    message = error_of(load_rows, path, "chat")
    assert (
        message == f"{path}:2: 'messages'[2]['role'] must be one of system, user, assistant, tool, got 'bot'"
    )


def test_chat_without_assistant(tmp_path: Path) -> None:
    row = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}
    path = write_jsonl(tmp_path / "f.jsonl", [row])
    assert error_of(load_rows, path, "chat") == f"{path}:1: 'messages' has no assistant message"


def test_prefs_conversational_form_is_accepted(tmp_path: Path) -> None:
    """TRL's conversational preference rows, and its standard (string) rows, with extra keys."""
    rows = [
        {
            "prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}],
            "chosen": [{"role": "assistant", "content": "4"}],
            "rejected": [{"role": "assistant", "content": "5"}],
            "meta": {"source": "hand"},
        },
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
    ]
    result = load_rows(write_jsonl(tmp_path / "f.jsonl", rows), "prefs")
    assert result == LoadResult(rows=rows, skipped=[])


def test_prefs_mixed_forms_rejected(tmp_path: Path) -> None:
    row = {"prompt": "2+2?", "chosen": [{"role": "assistant", "content": "4"}], "rejected": "5"}
    message = error_of(load_rows, write_jsonl(tmp_path / "f.jsonl", [row]), "prefs")
    assert "mixed forms ('prompt' is a str, 'chosen' is a list, 'rejected' is a str)" in message


@pytest.mark.parametrize(
    ("schema", "row", "problem"),
    [
        ("text", {"text": "  "}, "'text' is empty"),
        ("text", {"text": None}, "'text' must be a string, got None"),
        ("chat", {"messages": []}, "'messages' is empty"),
        ("chat", {"messages": "hi"}, "'messages' must be a list of messages, got str"),
        ("chat", {"messages": [{"role": "user"}]}, "'messages'[0] missing key 'content'"),
        ("chat", {"messages": ["hi"]}, "'messages'[0] must be an object with 'role' and 'content', got str"),
        (
            "chat",
            {"messages": [{"role": "assistant", "content": 1}]},
            "'messages'[0]['content'] must be a string, got int",
        ),
        (
            "prefs",
            {
                "prompt": [{"role": "user", "content": "q"}],
                "chosen": [{"role": "user", "content": "a"}],
                "rejected": [{"role": "assistant", "content": "b"}],
            },
            "'chosen' has no assistant message",
        ),
        # the trainers' checks (schemas.normalise_pair / normalise_chat), shared with `data validate`
        ("prefs", {"prompt": " ", "chosen": "a", "rejected": "b"}, "'prompt' is empty"),
        ("prefs", {"prompt": "q", "chosen": "", "rejected": "b"}, "'chosen' is empty"),
        ("prefs", {"prompt": "q", "chosen": "a", "rejected": "\n"}, "'rejected' is empty"),
        ("prefs", {"prompt": "q", "chosen": "same", "rejected": "same"}, "'chosen' and 'rejected' are the same"),
        (
            "prefs",
            {
                "prompt": [{"role": "user", "content": "q"}],
                "chosen": [{"role": "assistant", "content": "4"}],
                "rejected": [{"role": "assistant", "content": "4"}],
            },
            "'chosen' and 'rejected' are the same",
        ),
        (
            "prefs",
            {
                "prompt": [{"role": "user", "content": "q"}],
                "chosen": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}],
                "rejected": [{"role": "assistant", "content": "c"}],
            },
            "'chosen' must end with an assistant message",
        ),
        (
            "prefs",
            {
                "prompt": [{"role": "user", "content": "q"}],
                "chosen": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "a"}],
                "rejected": [{"role": "assistant", "content": "c"}],
            },
            "'chosen' repeats a conversation that is not 'prompt'",
        ),
        (
            "chat",
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]},
            "'messages' has no non-empty assistant message",
        ),
        ("responses", {"prompt": "p"}, "missing key 'response'"),
        ("eval", {"prompt": ""}, "'prompt' is empty"),
        ("eval", 7, "expected a JSON object, got int"),
    ],
)
def test_schema_problems(schema: str, row: Any, problem: str) -> None:
    assert SCHEMAS[schema](row) == problem


@pytest.mark.parametrize(
    ("schema", "row"),
    [
        ("text", {"text": "a", "id": 1}),
        ("chat", CHAT_OK),
        ("prefs", {"prompt": "q", "chosen": "a", "rejected": "b"}),
        (  # TRL's implicit-prompt form: chosen and rejected repeat the prompt before their answer
            "prefs",
            {
                "prompt": [{"role": "user", "content": "q"}],
                "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}],
            },
        ),
        ("responses", {"prompt": "", "response": ""}),
        ("eval", {"prompt": "q", "answer": "a", "family": "arith"}),
    ],
)
def test_schema_accepts(schema: str, row: Any) -> None:
    assert SCHEMAS[schema](row) is None


# --- strict=False -------------------------------------------------------------------------------


def test_lenient_skips_and_collects(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "f.jsonl", [{"prompt": "a"}, {"prompt": ""}, {"q": 1}, {"prompt": "b"}])
    result = load_rows(path, "eval", strict=False)
    assert result.rows == [{"prompt": "a"}, {"prompt": "b"}]
    assert result.skipped == [f"{path}:2: 'prompt' is empty", f"{path}:3: missing key 'prompt'"]


def test_lenient_with_zero_valid_rows(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "f.jsonl", [{"q": 1}, {"q": 2}, {"q": 3}])
    message = error_of(load_rows, path, "eval", strict=False)
    assert message == f"{path}: no valid rows (3 skipped; first: {path}:1: missing key 'prompt')"


def test_lenient_still_stops_on_invalid_json(tmp_path: Path) -> None:
    """strict is about the schema; a file that does not parse is never half read."""
    path = tmp_path / "f.jsonl"
    path.write_text('{"prompt": "a"}\n{oops\n')
    assert error_of(load_rows, path, "eval", strict=False).startswith(f"{path}:2: invalid JSON")


# --- .json ----------------------------------------------------------------------------------------


def test_json_list(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_text(json.dumps([{"prompt": "a"}, {"prompt": "b", "answer": "c"}], indent=2))
    assert load_rows(path, "eval").rows == [{"prompt": "a"}, {"prompt": "b", "answer": "c"}]
    path.write_text(json.dumps([{"prompt": "a"}, {"prompt": 1}]))
    assert error_of(load_rows, path, "eval") == f"{path}[row 1]: 'prompt' must be a string, got int"


def test_json_that_is_not_a_list(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_text('{"prompt": "a"}')
    assert error_of(load_rows, path, "eval") == f"{path}: expected a JSON list of rows, got dict"
    path.write_text("[]")
    assert error_of(load_rows, path, "eval") == f"{path}: no rows"


def test_jsonl_saved_as_json_gets_a_hint(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "f.json", [{"prompt": "a"}, {"prompt": "b"}])
    message = error_of(load_rows, path, "eval")
    assert message.startswith(f"{path}:2: invalid JSON (Extra data")
    assert "name it .jsonl" in message


# --- parquet and saved HF datasets: [row N], 0-based ---------------------------------------------


def test_parquet_with_bad_row(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "f.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "a"}, {"prompt": "b"}, {"prompt": ""}]), path)
    assert error_of(load_rows, path, "eval") == f"{path}[row 2]: 'prompt' is empty"
    assert load_rows(path, "eval", strict=False).rows == [{"prompt": "a"}, {"prompt": "b"}]


def test_file_that_is_not_parquet(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    path = tmp_path / "f.parquet"
    path.write_text("not parquet at all")
    assert error_of(load_rows, path, "eval").startswith(f"{path}: not a readable parquet file (")


def test_missing_optional_dependency(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` raise ImportError
    assert "needs 'pyarrow'" in error_of(load_rows, path, "eval")


def test_saved_dataset(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    bad = {"messages": [{"role": "user", "content": "u"}, {"role": "bot", "content": "b"}]}
    datasets.Dataset.from_list([CHAT_OK, CHAT_OK]).save_to_disk(tmp_path / "good")
    datasets.Dataset.from_list([CHAT_OK, bad]).save_to_disk(tmp_path / "bad")
    assert load_rows(tmp_path / "good", "chat").rows == [CHAT_OK, CHAT_OK]
    message = error_of(load_rows, tmp_path / "bad", "chat")
    assert message.startswith(f"{tmp_path / 'bad'}[row 1]: 'messages'[1]['role'] must be one of")


def test_saved_dataset_dict_and_missing_split(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    path = tmp_path / "dd"
    splits = {"train": [{"text": "a"}], "validation": [{"text": "b"}]}
    datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()}).save_to_disk(path)
    assert load_rows(path, "text", split="validation").rows == [{"text": "b"}]
    assert load_rows(path, "text").rows == [{"text": "a"}]
    message = error_of(load_rows, path, "text", split="test")
    assert message == f"{path}: no split 'test' (available: train, validation)"


def test_directory_that_is_not_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    message = error_of(load_rows, tmp_path, "text")
    assert message == f"{tmp_path}: is a directory but not a dataset saved with datasets.save_to_disk"


# --- import cost ------------------------------------------------------------------------------------


def test_import_does_not_load_heavy_libraries() -> None:
    src = Path(llmlab.__file__).resolve().parents[1]
    code = (
        "import sys, llmlab.data.loaders; "
        "print(sorted(m for m in ('datasets', 'pyarrow', 'torch') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
