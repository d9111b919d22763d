"""llmlab.files: a result file is either the old one or the complete new one, never half written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmlab.files import atomic_open, write_json_atomic, write_jsonl_atomic, write_text_atomic


class Boom(Exception):
    pass


def test_writes_the_content(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    write_text_atomic(path, "hello\nworld ✓\n")
    assert path.read_text(encoding="utf-8") == "hello\nworld ✓\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old", encoding="utf-8")
    write_text_atomic(path, "new")
    assert path.read_text(encoding="utf-8") == "new"


def test_target_keeps_old_content_until_the_block_ends(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old", encoding="utf-8")
    with atomic_open(path) as f:
        f.write("new")
        f.flush()
        assert path.read_text(encoding="utf-8") == "old"
        siblings = [p for p in tmp_path.iterdir() if p != path]
        assert len(siblings) == 1  # the temporary file lives next to the target (same filesystem)
    assert path.read_text(encoding="utf-8") == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_exception_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path, error: type[BaseException]) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old", encoding="utf-8")
    with pytest.raises(error), atomic_open(path) as f:
        f.write("half of the new conte")
        raise error()
    assert path.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_exception_without_an_old_file_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    with pytest.raises(Boom), atomic_open(path) as f:
        f.write("partial")
        raise Boom()
    assert list(tmp_path.iterdir()) == []


def test_exception_in_a_row_generator_keeps_the_old_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"old": 1}\n', encoding="utf-8")

    def rows():
        yield {"a": 1}
        raise Boom()

    with pytest.raises(Boom):
        write_jsonl_atomic(path, rows())
    assert path.read_text(encoding="utf-8") == '{"old": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]


def test_creates_parent_folders(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c" / "out.txt"
    write_text_atomic(path, "x")
    assert path.read_text(encoding="utf-8") == "x"


def test_binary_mode(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    with atomic_open(path, "wb") as f:
        f.write(b"\x00\xff")
    assert path.read_bytes() == b"\x00\xff"


def test_json_and_jsonl(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "r.json", {"name": "é", "n": [1, 2]})
    assert json.loads((tmp_path / "r.json").read_text(encoding="utf-8")) == {"name": "é", "n": [1, 2]}
    assert "é" in (tmp_path / "r.json").read_text(encoding="utf-8")  # not \u00e9: readable by a human

    n = write_jsonl_atomic(tmp_path / "r.jsonl", ({"i": i} for i in range(3)))
    assert n == 3
    lines = (tmp_path / "r.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert write_jsonl_atomic(tmp_path / "empty.jsonl", []) == 0
    assert (tmp_path / "empty.jsonl").read_text(encoding="utf-8") == ""
