"""BERT's normalizer and pre-tokenizer: the text stages in front of a WordPiece model.

Follows HF tokenizers' `BertNormalizer` and `BertPreTokenizer` (normalizers/bert.rs,
pre_tokenizers/bert.rs), which follow Google's BERT `BasicTokenizer`:

    "Héllo,\tWORLD!\x00 中文"
      clean_text            -> "Héllo, WORLD! 中文"          controls dropped, whitespace -> " "
      handle_chinese_chars  -> "Héllo, WORLD!  中  文 "       CJK ideographs become words of their own
      strip_accents         -> "Hello, WORLD!  中  文 "       NFD, then nonspacing marks (Mn) dropped
      lowercase             -> "hello, world!  中  文 "
      pre-tokenize          -> ["hello", ",", "world", "!", "中", "文"]

The stages run in that order, as in HF: lowercasing comes last, so a mark that lowercasing
creates ("İ" -> "i" + U+0307) is kept. `strip_accents=None` means "strip when lowercasing",
which is what BERT uncased does and what HF writes as `"strip_accents": null`.

Character classes are HF's, version for version, from the generated tables of bert_unicode.py
(make_bert_unicode.py says how they were made): HF's Rust crates each carry their own Unicode.

    control (clean_text drops it)   Cc Cf Co of Unicode 8.0, but \\t \\n \\r; and U+FFFD.
                                    Unassigned code points (Cn) are kept, whatever their
                                    category became later: U+0890 (Cf since 14.0) is kept.
    punctuation (a word of its own) P* of Unicode 8.0, plus every ASCII non-alphanumeric
                                    printable ("$", "+", "^", "`", ...)
    strip_accents                   NFD of Unicode 9.0, then the Mn of Unicode 8.0 dropped:
                                    a mark added since stays (U+07FD, 11.0); U+1734, Mn
                                    in 8.0 and Mc since 14.0, goes
    lowercase                       Rust's char::to_lowercase, Unicode 17.0 (tokenizers 0.23)
    whitespace                      White_Space (Rust's char::is_whitespace; stable since 6.3)

The Unicode of Python (`unicodedata`, `str.lower`) and of the `regex` module is used only where
it cannot differ: Python's NFD for characters assigned by 9.0 (decompositions and combining
classes never change once assigned), `regex`'s \\p{M} to find marks that are then looked up in
the 8.0 table, and `str.lower` topped up with the case pairs it lacks. The CJK ranges are HF's,
which start the Extension E/F range at U+2B920 where Google's BERT starts at U+2B820.
tests/tokenizers/test_bert_parity.py checks every code point of planes 0, 1 and 14 against HF.

Leaves out: HF's alignment offsets (which input characters each output character came
from); nothing in llmlab reads them.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import regex

from llmlab.tokenizers import bert_unicode
from llmlab.tokenizers.normalizers import lowercase

Ranges = Iterable[tuple[int, int]]
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def _char_class(ranges: Ranges, *, bmp_only: bool = False) -> str:
    """The inside of a [...] class: ((0x41, 0x5A), (0x5F, 0x5F)) -> "\\U00000041-\\U0000005A\\U0000005F"."""
    if bmp_only:
        ranges = [(lo, min(hi, 0xFFFF)) for lo, hi in ranges if lo <= 0xFFFF]
    return "".join(f"\\U{lo:08X}" if lo == hi else f"\\U{lo:08X}-\\U{hi:08X}" for lo, hi in ranges)


@dataclass(frozen=True)
class _ClassPattern:
    """A pattern over HF's character classes, compiled twice. `re` tests the BMP part of a class
    with a bitmap but its astral ranges one by one (tens of them: about 10x slower), so text without
    an astral member of the class (most text, emoji included) is matched without them."""

    bmp: re.Pattern[str]
    full: re.Pattern[str]
    astral: tuple[tuple[int, int], ...]  # the astral ranges of the classes, sorted
    above: re.Pattern[str]  # a character at or above the lowest code point of the classes

    @classmethod
    def compile(cls, template: str, **classes: Ranges) -> _ClassPattern:
        """`template` with each {name} the class of those ranges: "[^{punct}]+" ..."""
        listed = {k: sorted(v) for k, v in classes.items()}
        bmp, full = (re.compile(template.format(**{k: _char_class(v, bmp_only=b) for k, v in listed.items()}))
                     for b in (True, False))
        everything = sorted(r for v in listed.values() for r in v)
        return cls(bmp, full, tuple(r for r in everything if r[1] > 0xFFFF),
                   re.compile(f"[\\U{everything[0][0]:08X}-\\U0010FFFF]"))

    def of(self, text: str) -> re.Pattern[str] | None:
        """The pattern for `text`; None when no character of `text` can be in the classes."""
        if self.above.search(text) is None:
            return None
        if text.isascii() or _ASTRAL.search(text) is None:
            return self.bmp
        for c in {ord(ch) for ch in _ASTRAL.findall(text)}:  # few
            k = bisect.bisect_right(self.astral, (c, 0x10FFFF)) - 1
            if k >= 0 and self.astral[k][0] <= c <= self.astral[k][1]:
                return self.full
        return self.bmp


def _without(ranges: Ranges, points: str) -> list[tuple[int, int]]:
    """The ranges less some code points: ((0, 31),), "\t" -> [(0, 8), (10, 31)]."""
    out = []
    for lo, hi in ranges:
        for c in sorted(map(ord, points)):
            if lo <= c <= hi:
                out += [(lo, c - 1)] if lo < c else []
                lo = c + 1
        out += [(lo, hi)] if lo <= hi else []
    return out


# Rust's char::is_whitespace: the White_Space property. Python's str.split() also splits on
# U+001C..U+001F, which BERT keeps inside words (clean_text removes them anyway).
_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_PYTHON_ONLY_SPACE = re.compile("[\x1c-\x1f]")
_WHITESPACE_RUNS = re.compile(f"[{_SPACE}]+")
# HF's clean_text: drop is_control (is_other less \t \n \r) and U+FFFD, then whitespace -> " "
_CONTROL = _ClassPattern.compile("[{control}]+", control=_without([*bert_unicode.OTHER, (0xFFFD, 0xFFFD)], "\t\n\r"))
_WHITESPACE = re.compile(f"[{_SPACE.replace(' ', '')}]+")
_CJK = re.compile(
    "([\u4e00-\u9fff\u3400-\u4dbf\U00020000-\U0002a6df\U0002a700-\U0002b73f\U0002b740-\U0002b81f"
    "\U0002b920-\U0002ceaf\uf900-\ufaff\U0002f800-\U0002fa1f])")
# HF's nonspacing marks are marks (M*) in every later Unicode too: `regex`'s \p{M} finds them fast
_MARKS = regex.compile(r"\p{M}+")
_NONSPACING = dict.fromkeys(c for lo, hi in bert_unicode.NONSPACING_MARKS for c in range(lo, hi + 1))  # -> None
_NFD_STARTERS = _ClassPattern.compile("([{starters}]+)", starters=bert_unicode.NFD_STARTERS)
# BERT's punctuation: HF's P* plus every ASCII non-alphanumeric printable ("$", "+", "^", "`", ...)
_ASCII_PUNCT = [(0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)]
_WORD = _ClassPattern.compile("[^{punct}]+|[{punct}]", punct=[*bert_unicode.PUNCTUATION, *_ASCII_PUNCT])
# the case pairs this Python's str.lower lacks (or maps otherwise), applied before it
_LOWER_MISSING = {c: m for c, m in bert_unicode.LOWERCASE if lowercase(chr(c)) != m}
_LOWER_MISSING_RE = _ClassPattern.compile("[{cased}]", cased=[(c, c) for c in _LOWER_MISSING]) if _LOWER_MISSING else None


def nfd(text: str) -> str:
    """NFD as HF's unicode-normalization-alignments (Unicode 9.0) computes it.

    Python's NFD agrees on every character assigned by 9.0 (decompositions and combining classes
    never change once assigned). A later one is, for HF, a starter (combining class 0) without a
    decomposition, so the text is normalized around it: "a" + U+0301 (230) + U+1DFA (218, Unicode
    14) is reordered by Python, not by HF.
    """
    starters = _NFD_STARTERS.of(text)
    parts = starters.split(text) if starters is not None else [text]
    if len(parts) == 1:
        return unicodedata.normalize("NFD", text)
    return "".join(unicodedata.normalize("NFD", p) if i % 2 == 0 else p for i, p in enumerate(parts))


def bert_lowercase(text: str) -> str:
    """Rust's char::to_lowercase on each character (Unicode 17.0), as HF's Lowercase."""
    missing = _LOWER_MISSING_RE.of(text) if _LOWER_MISSING_RE is not None else None
    if missing is not None and missing.search(text) is not None:
        text = text.translate(_LOWER_MISSING)
    return lowercase(text)


@dataclass(frozen=True)
class BertNormalizer:
    """HF's BertNormalizer; the defaults are BERT uncased's. A dataclass, so it pickles to workers."""

    clean_text: bool = True
    handle_chinese_chars: bool = True
    strip_accents: bool | None = None  # None: strip when `lowercase`
    lowercase: bool = True

    def __call__(self, text: str) -> str:
        if self.clean_text:
            control = _CONTROL.of(text)
            if control is not None:
                text = control.sub("", text)
            text = _WHITESPACE.sub(lambda m: " " * len(m.group()), text)
        if self.handle_chinese_chars:
            text = _CJK.sub(r" \1 ", text)
        if self.strip_accents if self.strip_accents is not None else self.lowercase:
            text = _MARKS.sub(lambda m: m.group().translate(_NONSPACING), nfd(text))
        if self.lowercase:
            text = bert_lowercase(text)
        return text


def whitespace_chunks(text: str) -> list[str]:
    """The text split on White_Space, empty chunks dropped: BertPreTokenizer's first step.

    `str.split()` is the fast path; it is exact unless the text holds U+001C..U+001F, which
    Python counts as whitespace and BERT does not (clean_text removes them anyway).
    """
    if _PYTHON_ONLY_SPACE.search(text) is None:
        return text.split()
    return [c for c in _WHITESPACE_RUNS.split(text) if c]


def split_punctuation(chunk: str) -> list[str]:
    """A whitespace-free chunk cut around punctuation, each mark a word of its own."""
    word = _WORD.of(chunk)
    return word.findall(chunk) if word is not None else [chunk]


def bert_pre_tokenize(text: str) -> list[str]:
    """Split on whitespace (dropped) and around punctuation (each mark a word of its own).

    >>> bert_pre_tokenize("isn't it $5.00?")
    ['isn', "'", 't', 'it', '$', '5', '.', '00', '?']
    """
    return [word for chunk in whitespace_chunks(text) for word in split_punctuation(chunk)]
