"""Writes bert_unicode.py: the Unicode tables of HF's BERT normalizer and pre-tokenizer, as ranges.

HF `tokenizers` (normalizers/bert.rs, pre_tokenizers/bert.rs) does not use one Unicode version:

    is_control, is_punctuation, is_mark_nonspacing   crate unicode_categories 0.1.1      Unicode 8.0.0
    NFD (strip_accents)                               unicode-normalization-alignments    Unicode 9.0.0
    to_lowercase, is_whitespace                       Rust's std (the wheel's compiler)   Unicode 17.0.0 (0.23)

Python's `unicodedata` has one version (13.0 on Python 3.10 ... 16.0 on 3.14) and the `regex`
module another (17.0 now); mixing those left 9 or 10 of 48 code-point sweep strings unequal. This
script reads the Unicode Character Database of each version as CPython's makeunicodedata.py
compiled it into the `unicodedata2` backport's headers, straight from the sdists on PyPI:

    pip download --no-deps --no-binary :all: unicodedata2==8.0.0 unicodedata2==9.0.0 unicodedata2==17.0.1
    python -m llmlab.tokenizers.make_bert_unicode unicodedata2-8.0.0.tar.gz unicodedata2-9.0.0.tar.gz \\
        unicodedata2-17.0.1.tar.gz            # rewrites src/llmlab/tokenizers/bert_unicode.py

(The versions were found by probing `tokenizers` 0.23.3 on every code point: it strips and splits
the marks and punctuation of 8.0 and no later, reorders the combining marks of 9.0 and no later,
and lowercases the case pairs of 17.0; tests/tokenizers/test_bert_parity.py holds it to that.)
Run by hand when HF changes a crate; nothing imports this module.
"""

from __future__ import annotations

import argparse
import re
import tarfile
from collections.abc import Iterable
from pathlib import Path

OUT = Path(__file__).with_name("bert_unicode.py")
CATEGORIES_VERSION, NFD_VERSION, LOWERCASE_VERSION = "8.0.0", "9.0.0", "17.0.0"  # HF's, and the newest


def _array(header: str, name: str) -> list[int]:
    """The integers of the C array `name[] = {...};` in `header` (records flattened)."""
    found = re.search(rf"[ *]{name}\[\] = \{{(.*?)\}};", header, flags=re.DOTALL)
    if found is None:
        raise SystemExit(f"no array {name} in the header")
    return [int(n) for n in re.findall(r"-?\d+", found.group(1))]


def _lookup(header: str, records: str, width: int) -> list[tuple[int, ...]]:
    """Each code point's record (a tuple of `width` fields), through makeunicodedata's two-level index."""
    shift = int(re.search(r"#define SHIFT (\d+)", header).group(1))  # type: ignore[union-attr]
    flat, index1, index2 = _array(header, records), _array(header, "index1"), _array(header, "index2")
    table = [tuple(flat[i:i + width]) for i in range(0, len(flat), width)]
    mask = (1 << shift) - 1
    return [table[index2[(index1[c >> shift] << shift) + (c & mask)]] for c in range(0x110000)]


def _read(sdist: Path, member: str, version: str) -> str:
    with tarfile.open(sdist) as tar:
        name = next(n for n in tar.getnames() if n.endswith(f"unicodedata2/{member}"))
        text = tar.extractfile(name).read().decode()  # type: ignore[union-attr]
    if member == "unicodedata_db.h" and f'#define UNIDATA_VERSION "{version}"' not in text:
        raise SystemExit(f"{sdist} is not Unicode {version}")
    return text


def database(sdist: Path, version: str) -> tuple[list[str], list[tuple[int, ...]]]:
    """Every code point's general category, and its record (category, combining class, bidi,
    mirrored, east asian width, normalization quick checks; NFD's in the low two bits)."""
    header = _read(sdist, "unicodedata_db.h", version)
    names = re.findall(r'"(\w\w)"', header.split("_PyUnicode_CategoryNames[] = {")[1].split("};")[0])
    records = _lookup(header, "_PyUnicode_Database_Records", 6)
    return [names[record[0]] for record in records], records


def lowercase_mappings(sdist: Path) -> dict[int, str]:
    """Full lowercase mappings (SpecialCasing included) that are not the identity."""
    header = _read(sdist, "unicodetype_db.h", LOWERCASE_VERSION)
    extended = _array(header, "_PyUnicode_ExtendedCase")
    out = {}
    for c, (_, lower, _, _, _, flags) in enumerate(_lookup(header, "_PyUnicode_TypeRecords", 6)):
        if flags & 0x4000:  # EXTENDED_CASE_MASK: `lower` is (length << 24) | index
            mapped = "".join(map(chr, extended[lower & 0xFFFF:(lower & 0xFFFF) + (lower >> 24)]))
        else:
            mapped = chr(c + lower)
        if mapped != chr(c):
            out[c] = mapped
    return out


def ranges(points: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted code points as inclusive ranges: [1, 2, 3, 7] -> [(1, 3), (7, 7)]."""
    out: list[tuple[int, int]] = []
    for c in sorted(points):
        if out and out[-1][1] == c - 1:
            out[-1] = (out[-1][0], c)
        else:
            out.append((c, c))
    return out


def _format_ranges(name: str, comment: str, points: Iterable[int]) -> str:
    cells = [f"(0x{lo:04X}, 0x{hi:04X})," for lo, hi in ranges(points)]
    lines = [" ".join(cells[i:i + 6]) for i in range(0, len(cells), 6)]
    return f"# {comment}\n{name} = (\n" + "".join(f"    {line}\n" for line in lines) + ")\n"


def nfd_starters(cat9: list[str], records17: list[tuple[int, ...]]) -> list[int]:
    """Code points unassigned in 9.0 (for HF's NFD: combining class 0, no decomposition) that
    Unicode 17.0, and so a Python up to it, gives a combining class or a canonical decomposition."""
    return [c for c, k in enumerate(cat9) if k == "Cn" and (records17[c][1] or records17[c][5] & 3)]


def render(cat8: list[str], cat9: list[str], records17: list[tuple[int, ...]], lower17: dict[int, str]) -> str:
    pairs = [f"(0x{c:04X}, {m!r})," for c, m in sorted(lower17.items())]
    return "\n".join([
        '"""Generated by make_bert_unicode.py (which says from what); do not edit. Read by bert_text.py."""',
        "",
        f'CATEGORIES_VERSION = "{CATEGORIES_VERSION}"',
        f'NFD_VERSION = "{NFD_VERSION}"',
        f'LOWERCASE_VERSION = "{LOWERCASE_VERSION}"',
        "",
        _format_ranges("OTHER", f"Cc Cf Co in Unicode {CATEGORIES_VERSION}: unicode_categories' is_other",
                       (c for c, k in enumerate(cat8) if k in ("Cc", "Cf", "Co"))),
        _format_ranges("PUNCTUATION", f"Pc Pd Ps Pe Pi Pf Po in Unicode {CATEGORIES_VERSION}: is_punctuation",
                       (c for c, k in enumerate(cat8) if k[0] == "P")),
        _format_ranges("NONSPACING_MARKS", f"Mn in Unicode {CATEGORIES_VERSION}: is_mark_nonspacing",
                       (c for c, k in enumerate(cat8) if k == "Mn")),
        _format_ranges("NFD_STARTERS", f"unassigned in Unicode {NFD_VERSION}, but combining or decomposing in "
                       f"{LOWERCASE_VERSION}", nfd_starters(cat9, records17)),
        f"# full lowercase mappings of Unicode {LOWERCASE_VERSION} (char::to_lowercase), the identity left out",
        "LOWERCASE = (",
        *(f"    {' '.join(pairs[i:i + 6])}" for i in range(0, len(pairs), 6)),
        ")",
        "",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ucd8", type=Path, help="unicodedata2-8.0.0.tar.gz")
    parser.add_argument("ucd9", type=Path, help="unicodedata2-9.0.0.tar.gz")
    parser.add_argument("ucd17", type=Path, help="unicodedata2-17.0.*.tar.gz")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    text = render(database(args.ucd8, CATEGORIES_VERSION)[0], database(args.ucd9, NFD_VERSION)[0],
                  database(args.ucd17, LOWERCASE_VERSION)[1], lowercase_mappings(args.ucd17))
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(text):,} characters)")


if __name__ == "__main__":
    main()
