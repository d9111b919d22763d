"""Load the user's own data and check every row against a schema from `schemas.SCHEMAS`.

Inputs, chosen by path:

    a.jsonl          one JSON object per line              errors say  a.jsonl:7: ...
    a.json           one JSON list of objects              errors say  a.json[row 3]: ...
    a.parquet        read with pyarrow.parquet             errors say  a.parquet[row 3]: ...
    dir/             datasets.save_to_disk output          errors say  dir[row 3]: ...
    a.txt (or any)   schema "text" only: blank-line separated documents

Line numbers are 1-based (as in editors); `[row N]` is the 0-based row index (as in
`dataset[N]`), within the chosen split for a DatasetDict. Every problem is a `DataError`
with a one-line message, so the CLI can print it without a traceback.

`datasets` and `pyarrow` are imported only inside the readers that need them: importing
this module must stay cheap for `llmlab --help` and the data commands.
Left out: compressed files (.jsonl.gz), CSV, remote paths and the HF Hub.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from llmlab.data.schemas import SCHEMAS
from llmlab.errors import DataError

# A row together with where it came from (`a.jsonl:7`, `dir[row 3]`), for error messages.
Located = Generator[tuple[str, Any], None, None]

# Files that datasets.save_to_disk writes: state.json for a Dataset, dataset_dict.json for a DatasetDict.
_DATASET_MARKERS = ("state.json", "dataset_dict.json")


@dataclass(frozen=True)
class LoadResult:
    """Rows that passed the schema, and one `where: problem` message per skipped row (strict=False)."""

    rows: list[dict[str, Any]]
    skipped: list[str]


def _first_line(error: BaseException) -> str:
    """Library messages can span lines; ours must not."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def require_file(path: str | os.PathLike[str]) -> Path:
    """`path` as a Path, if it names a readable kind of file; else a one-line DataError saying why not."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a file")
    if not path.is_file():
        raise DataError(f"{path}: is not a regular file")
    return path


def _import_optional(module: str) -> ModuleType:
    """Import a heavy optional dependency, turning its absence into a one-line user error."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"reading this input needs {module!r}: pip install 'llmlab[hf]'") from None


def _not_utf8(path: Path, offset: int, line: int) -> DataError:
    return DataError(f"{path}: not valid UTF-8 at byte offset {offset} (line {line})")


def _decode(path: Path, data: bytes, errors: Literal["strict", "replace"] = "strict") -> str:
    """Decode a whole file, naming the first bad byte; a leading BOM (Windows editors) is dropped."""
    try:
        text = data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        raise _not_utf8(path, e.start, data.count(b"\n", 0, e.start) + 1) from None
    return text.removeprefix("\ufeff")


def read_text_documents(
    path: str | os.PathLike[str], *, separator: str = "\n\n", errors: Literal["strict", "replace"] = "strict"
) -> list[str]:
    """Split a plain-text file into documents at `separator` (a blank line), stripped, empties dropped.

    Newlines are normalised to "\\n" first, as Python's text mode does, so Windows files
    split the same way. errors="replace" turns bad bytes into U+FFFD instead of raising.
    """
    path = Path(path)
    require_file(path)
    text = _decode(path, path.read_bytes(), errors)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return [doc.strip() for doc in text.split(separator) if doc.strip()]


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, Any]]:
    """Stream (line_number, value) from a JSON Lines file, 1-based, skipping blank lines.

    The file is read in binary one line at a time, so memory does not grow with the file,
    and the byte offset of a bad UTF-8 byte can be reported exactly.
    """
    path = Path(path)
    require_file(path)
    offset = 0  # byte offset of the start of the current line
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _not_utf8(path, offset + e.start, lineno) from None
            offset += len(raw)
            if lineno == 1:
                line = line.removeprefix("\ufeff")
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
            yield lineno, value


def _jsonl_rows(path: Path) -> Located:
    empty = True
    for lineno, value in iter_jsonl(path):
        empty = False
        yield f"{path}:{lineno}", value
    if empty:
        raise DataError(f"{path}: file is empty")


def _json_rows(path: Path) -> Located:
    """A .json file holding one list of rows; positions are list indices, since json has no line API."""
    text = _decode(path, path.read_bytes())
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        # subtle: "Extra data" on line 2 is the classic sign of JSON Lines saved as .json
        hint = "; is it JSON Lines? name it .jsonl" if e.msg == "Extra data" else ""
        raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno}{hint})") from None
    if not isinstance(value, list):
        raise DataError(f"{path}: expected a JSON list of rows, got {type(value).__name__}")
    for i, row in enumerate(value):
        yield f"{path}[row {i}]", row


def _parquet_rows(path: Path) -> Located:
    """Stream a parquet file in record batches, so only one batch is held as Python objects."""
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    pa = _import_optional("pyarrow")
    pq = _import_optional("pyarrow.parquet")
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable parquet file ({_first_line(e)})") from None
    i = 0
    for batch in parquet.iter_batches():
        for row in batch.to_pylist():
            yield f"{path}[row {i}]", row
            i += 1


def _dataset_rows(path: Path, split: str) -> Located:
    """A folder written by datasets.save_to_disk: a Dataset, or a DatasetDict from which we take `split`."""
    if not any((path / marker).is_file() for marker in _DATASET_MARKERS):
        raise DataError(f"{path}: is a directory but not a dataset saved with datasets.save_to_disk")
    datasets = _import_optional("datasets")
    try:
        dataset = datasets.load_from_disk(str(path))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot load the saved dataset ({_first_line(e)})") from None
    if isinstance(dataset, datasets.DatasetDict):
        if split not in dataset:
            raise DataError(f"{path}: no split {split!r} (available: {', '.join(dataset)})")
        dataset = dataset[split]
    for i, row in enumerate(dataset):
        yield f"{path}[row {i}]", row


def _text_rows(path: Path) -> Located:
    documents = read_text_documents(path)
    if not documents:
        raise DataError(f"{path}: file is empty")
    for i, doc in enumerate(documents):
        yield f"{path}[doc {i}]", {"text": doc}


_FILE_READERS = {".jsonl": _jsonl_rows, ".json": _json_rows, ".parquet": _parquet_rows}


def _located_rows(path: Path, schema: str, split: str) -> Located:
    """Pick the reader from the path: a folder is a saved dataset, a file goes by its extension."""
    if path.is_dir():
        return _dataset_rows(path, split)
    require_file(path)
    reader = _FILE_READERS.get(path.suffix.lower())
    if reader is not None:
        return reader(path)
    if schema == "text":
        return _text_rows(path)
    raise DataError(
        f"{path}: unsupported file type {path.suffix or '(no extension)'!r} for schema {schema!r} "
        "(use .jsonl, .json, .parquet or a folder from datasets.save_to_disk)"
    )


def load_rows(
    path: str | os.PathLike[str], schema: str, *, strict: bool = True, split: str = "train"
) -> LoadResult:
    """Load rows and check each against SCHEMAS[schema].

    strict=True stops at the first bad row, so a broken file is never half used.
    strict=False skips bad rows and returns their messages in `skipped`, for data that is
    known to be noisy; it still fails when no row at all is valid.
    `split` picks the split of a saved DatasetDict and is ignored for other inputs.
    """
    if schema not in SCHEMAS:
        raise DataError(f"unknown schema {schema!r} (valid: {', '.join(SCHEMAS)})")
    validate = SCHEMAS[schema]
    path = Path(path)
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    # closing(): stopping at a bad row must close the file now, not when the generator is collected
    with contextlib.closing(_located_rows(path, schema, split)) as located:
        for where, row in located:
            problem = validate(row)
            if problem is None:
                rows.append(row)
            elif strict:
                raise DataError(f"{where}: {problem}")
            else:
                skipped.append(f"{where}: {problem}")
    if skipped and not rows:
        raise DataError(f"{path}: no valid rows ({len(skipped)} skipped; first: {skipped[0]})")
    if not rows:
        raise DataError(f"{path}: no rows")
    return LoadResult(rows=rows, skipped=skipped)
