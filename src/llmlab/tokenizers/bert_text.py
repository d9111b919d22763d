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

Character classes come from the `regex` module's Unicode tables (and `unicodedata` for NFD).
HF uses the Rust `unicode_categories` crate, whose tables are older, so the two disagree on
characters assigned in recent Unicode versions: HF counts them as unassigned (Cn), i.e.
control characters, and drops them; llmlab keeps them (tested over all code points, and
the disagreements are listed in the test). The CJK ranges are HF's, which start the
Extension E/F range at U+2B920 where Google's BERT starts at U+2B820.

Leaves out: HF's alignment offsets (which input characters each output character came
from); nothing in llmlab reads them.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import regex

from llmlab.tokenizers.normalizers import lowercase

# HF's is_control: categories Cc, Cf, Co, Cs (not Cn, unassigned) except \t \n \r, plus U+FFFD.
_CONTROL = regex.compile(r"[\p{Cc}\p{Cf}\p{Co}\p{Cs}\ufffd--[\t\n\r]]+", flags=regex.V1)
# HF's is_whitespace: the White_Space property (Rust's char::is_whitespace), \t \n \r included.
_WHITESPACE = regex.compile(r"[\p{White_Space}--[ ]]+", flags=regex.V1)
_WHITESPACE_RUNS = regex.compile(r"\p{White_Space}+")
# Python's str.split() splits on White_Space and on these four, which BERT keeps inside words
_PYTHON_ONLY_SPACE = regex.compile(r"[\x1c-\x1f]")
_CJK = regex.compile(
    "([\u4e00-\u9fff\u3400-\u4dbf\U00020000-\U0002a6df\U0002a700-\U0002b73f\U0002b740-\U0002b81f"
    "\U0002b920-\U0002ceaf\uf900-\ufaff\U0002f800-\U0002fa1f])")
_NONSPACING_MARKS = regex.compile(r"\p{Mn}+")
# BERT's punctuation: Unicode P* plus every ASCII non-alphanumeric printable ("$", "+", "^", "`", ...)
_PUNCT = r"\p{P}!-/:-@\[-`{-~"
_WORD = regex.compile(rf"[^{_PUNCT}]+|[{_PUNCT}]")  # within a whitespace-free chunk


@dataclass(frozen=True)
class BertNormalizer:
    """HF's BertNormalizer; the defaults are BERT uncased's. A dataclass, so it pickles to workers."""

    clean_text: bool = True
    handle_chinese_chars: bool = True
    strip_accents: bool | None = None  # None: strip when `lowercase`
    lowercase: bool = True

    def __call__(self, text: str) -> str:
        if self.clean_text:
            text = _WHITESPACE.sub(lambda m: " " * len(m.group()), _CONTROL.sub("", text))
        if self.handle_chinese_chars:
            text = _CJK.sub(r" \1 ", text)
        if self.strip_accents if self.strip_accents is not None else self.lowercase:
            text = _NONSPACING_MARKS.sub("", unicodedata.normalize("NFD", text))
        if self.lowercase:
            text = lowercase(text)
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
    return _WORD.findall(chunk)


def bert_pre_tokenize(text: str) -> list[str]:
    """Split on whitespace (dropped) and around punctuation (each mark a word of its own).

    >>> bert_pre_tokenize("isn't it $5.00?")
    ['isn', "'", 't', 'it', '$', '5', '.', '00', '?']
    """
    return [word for chunk in whitespace_chunks(text) for word in _WORD.findall(chunk)]
