"""The C encoder's Python side: which split patterns it scans itself, and its Unicode tables.

`_fastbpe.c` encodes byte-level BPE without the interpreter: it splits the text with a
hand-written scanner, then merges each chunk (or takes it from its cache). bpe.py stays the
oracle: the same ids, and tests/tokenizers/test_fastbpe.py compares the two on every pattern
below. Nothing here is needed for correctness: without the compiled module (no C compiler at
install time) or with LLMLAB_PURE_PYTHON=1, bpe.py encodes alone.

A scanner is a *spec*, not a pattern: the patterns in use are one family of alternatives tried
in order (contraction, letters, digits, punctuation, whitespace), each in a few variants:

    field          values
    contractions   0 none | 1 's|'t|'re|'ve|'m|'ll|'d | 2 the same, (?i:...)
    letters        0 \\p{L}+ | 1  ?\\p{L}+ | 2 [^\\r\\n\\p{L}\\p{N}]?\\p{L}+ | 3 o200k's cased pair
    letter_suffix  1: o200k's (?i:'s|...)? after the word
    digits_max     \\p{N}{1,max}; 0 for \\p{N}+
    digits_space    ?\\p{N}...
    punct_space     ?[^\\s\\p{L}\\p{N}]+
    punct_tail     0 | 1 [\\r\\n]* | 2 [\\r\\n/]*
    nonspace_runs  1: the whole pattern is \\S+|\\s+
    whitespace...  in order: 1 \\s++$ | 2 \\s*[\\r\\n]+ | 3 \\s+(?!\\S) | 4 \\s+ | 5 \\s

Only the exact pattern strings in SPECS get a scanner; any other pattern is split by the
`regex` module and its chunks encoded in C (`Engine.encode_chunks`).

The Unicode classes come from the `regex` module itself (so both paths read one Unicode
version): one byte per code point, built once (about 0.25 s) and kept in the user's cache
folder, keyed by the `regex` version.
"""

from __future__ import annotations

import os
from array import array
from pathlib import Path
from typing import Any

from llmlab.tokenizers import compiled
from llmlab.tokenizers import pre_tokenizers as pt

_fastbpe: Any = compiled.load("_fastbpe")

# the class bits of _fastbpe.c: (bit, the regex class it stands for)
_CLASSES = ((1, r"\p{L}"), (2, r"\p{N}"), (4, r"\s"), (8, r"\p{M}"), (16, r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]"),
            (32, r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"))
_FOLD_LETTERS = "strevmld"  # what `(?i:x)` may match in a contraction
_TABLE_VERSION = 1  # bump when _CLASSES changes: the cached tables are rebuilt

# pattern -> (contractions, letters, letter_suffix, digits_max, digits_space, punct_space, punct_tail,
#             nonspace_runs, *whitespace alternatives); the table in the docstring reads them
SPECS: dict[str, tuple[int, ...]] = {
    pt.GPT2: (1, 1, 0, 0, 1, 1, 0, 0, 3, 4),
    pt.R50K_BASE: (1, 1, 0, 0, 1, 1, 0, 0, 1, 3, 5),
    pt.CL100K: (2, 2, 0, 3, 0, 1, 1, 0, 2, 3, 4),  # also Llama 3's
    pt.CL100K_BASE: (2, 2, 0, 3, 0, 1, 1, 0, 1, 2, 3, 5),
    pt.O200K_BASE: (0, 3, 1, 3, 0, 1, 2, 0, 2, 3, 4),
    pt.TEKKEN: (0, 3, 0, 1, 0, 1, 2, 0, 2, 3, 4),
    pt.QWEN2: (2, 2, 0, 1, 0, 1, 1, 0, 2, 3, 4),
    pt.DIGITS: (1, 1, 0, 1, 0, 1, 0, 0, 3, 4),
    pt.WORDS: (0, 0, 0, 3, 0, 0, 0, 0, 4),
    pt.WHITESPACE: (0, 0, 0, 0, 0, 0, 0, 1),
}

_tables_set = False


def available() -> bool:
    """Whether the C encoder can be used (built, and not switched off by LLMLAB_PURE_PYTHON=1)."""
    return compiled.enabled(_fastbpe)


def engine(byte_ids: list[int], ranks: dict[tuple[int, int], tuple[int, int]], whole: dict[bytes, int] | None,
           cache_limit: int) -> Any:
    """A `_fastbpe.Engine`: `ranks` is bpe.py's {(left id, right id): (rank, merged id)}; `whole` maps
    the vocabulary's bytes to ids when a chunk that is a token is taken whole (ignore_merges)."""
    global _tables_set
    assert _fastbpe is not None
    if not _tables_set:
        _fastbpe.set_tables(*unicode_tables())
        _tables_set = True
    return _fastbpe.Engine(byte_ids, ranks, whole, cache_limit)


def merge_splits(ranks: dict[bytes, int]) -> dict[bytes, int] | None:
    """For each token of 2+ bytes, where the merge that makes it splits it (tiktoken_file.py's
    `bpe_parts` in C, for reading rank files fast), or -(parts) when its BPE is not one pair;
    None without the C encoder."""
    return _fastbpe.merge_splits(ranks) if available() else None


def unicode_tables() -> tuple[bytes, list[list[int]]]:
    """(one class byte per code point, the code points `(?i:x)` matches for each x in "strevmld")."""
    import regex

    cache = _cache_dir() / f"fastbpe-classes-v{_TABLE_VERSION}-regex-{regex.__version__}.bin"
    try:
        data = cache.read_bytes()
    except OSError:
        data = b""
    if len(data) != _TABLES_SIZE:
        data = _build_tables()
        try:
            from llmlab.files import atomic_open

            with atomic_open(cache, "wb") as f:
                f.write(data)
        except OSError:  # a read-only home: build them again next time
            pass
    folds = array("I", data[0x110000:])
    return data[:0x110000], [[c for c in folds[k * _FOLDS:(k + 1) * _FOLDS] if c] for k in range(len(_FOLD_LETTERS))]


_FOLDS = 4  # at most this many code points per letter (_fastbpe.c's N_FOLDS)
_TABLES_SIZE = 0x110000 + 4 * _FOLDS * len(_FOLD_LETTERS)


def _build_tables() -> bytes:
    """The class table, then for each letter its folds as _FOLDS uint32 (0 = none)."""
    import regex

    every = "".join(map(chr, range(0x110000)))
    table = bytearray(0x110000)
    for bit, cls in _CLASSES:
        for m in regex.finditer(cls + "+", every):
            start, end = m.span()
            table[start:end] = bytes(b | bit for b in table[start:end])
    folds = array("I")
    for c in _FOLD_LETTERS:
        found = [m.start() for m in regex.finditer(f"(?i:{c})", every)]
        if len(found) > _FOLDS:
            raise RuntimeError(f"(?i:{c}) matches {len(found)} code points; _fastbpe.c keeps {_FOLDS}")
        folds.extend(found + [0] * (_FOLDS - len(found)))
    return bytes(table) + folds.tobytes()


def _cache_dir() -> Path:
    try:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    except (RuntimeError, KeyError):  # no home folder to be found: the tables go in the temp folder
        import tempfile

        base = tempfile.gettempdir()
    return Path(base) / "llmlab"
