"""SentencePiece's text handling around the model, exactly: normalisation in, decoding out.

Normalisation (SentencePiece's `Normalizer::Normalize`, for `.model` files):

    the text is cut into chunks: a precompiled-charsmap source and its replacement (charsmap.py),
    or one character the map leaves alone
    remove_extra_whitespaces: chunks that are exactly " " are dropped from the start; then a
        chunk's leading spaces are dropped when the output so far ends with a space; at the end,
        trailing "▁" are dropped (in the output, so a literal "▁" at the end goes too)
    add_dummy_prefix: "▁" in front, unless nothing is left
    escape_whitespaces: " " -> "▁" (a literal "▁" in the text stays "▁", and then reads as a space,
        unless the charsmap maps it: nmt_nfkc maps it to " ")

    nmt_nfkc: "  Hello\u3000 wörld\u200b " -> "▁Hello▁wörld"   (U+3000 -> " ", U+200B deleted, spaces squeezed)

Decoding (`SentencePieceProcessor.decode`): control pieces (<s>, </s>) give "", the unknown piece
gives " ⁇ " (U+2047 between spaces), runs of byte pieces give their bytes as UTF-8 (each byte of a
malformed sequence one U+FFFD), "▁" gives " "; the first piece loses one leading "▁" when the model adds a dummy prefix or
removes extra whitespace, and with remove_extra_whitespaces every piece does until some text is
written (sentencepiece 0.2: ["▁", "▁", "x"] -> "x" then, " x" without it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import regex

from llmlab.tokenizers.charsmap import Charsmap

SPACE = "\u2581"  # "▁"
UNK_SURFACE = " \u2047 "  # SentencePiece's text for an unknown piece: " ⁇ "
_SPACE_RUNS = re.compile(" {2,}")
_WORDS = re.compile(f"{SPACE}+[^{SPACE}]*|[^{SPACE}]+")  # cut before each run of "▁" (re: faster here)
_INNER_SPACE = re.compile(f"[^{SPACE}]{SPACE}")
_ESCAPED_BYTE = regex.compile("[\udc80-\udcff]")


class SentencePieceNormalizer:
    """text -> the escaped text a SentencePiece model segments; plain data, so it pickles."""

    def __init__(self, charsmap: Charsmap | None, *, add_dummy_prefix: bool = True,
                 remove_extra_whitespaces: bool = True, escape_whitespaces: bool = True) -> None:
        self.charsmap = charsmap
        self.add_dummy_prefix = add_dummy_prefix
        self.remove_extra_whitespaces = remove_extra_whitespaces
        self.escape_whitespaces = escape_whitespaces

    def __call__(self, text: str) -> str:
        if self.charsmap is None or self.charsmap.leaves_unchanged(text):
            return self._unmapped(text)
        return self._from_chunks(self.charsmap.chunks(text))

    def _unmapped(self, text: str) -> str:
        """The normalisation of text that the charsmap leaves as it is: `_from_chunks([(text, False)])`,
        in a few string operations (most text, so this is the fast path; tested equal)."""
        space = SPACE if self.escape_whitespaces else " "
        if self.remove_extra_whitespaces:
            text = text.lstrip(" ")
            if "  " in text:
                text = _SPACE_RUNS.sub(" ", text)
        if not text:
            return ""
        if self.escape_whitespaces:
            text = text.replace(" ", SPACE)
        if self.add_dummy_prefix:
            text = space + text
        return text.rstrip(space) if self.remove_extra_whitespaces else text

    def _from_chunks(self, chunks: list[tuple[str, bool]]) -> str:
        """The normalisation of text whose charsmap `chunks` are given (see the module docstring)."""
        squeeze = self.remove_extra_whitespaces
        if squeeze:
            chunks = _drop_leading_spaces(chunks)
        if not chunks:
            return ""
        space = SPACE if self.escape_whitespaces else " "
        out: list[str] = [space] if self.add_dummy_prefix else []
        prev_space = squeeze
        for piece, matched in chunks:
            if squeeze:
                if not matched:  # one character at a time: runs of spaces squeeze to one
                    piece = _SPACE_RUNS.sub(" ", piece)
                if prev_space:
                    piece = piece.lstrip(" ")
                if piece:
                    prev_space = piece.endswith(" ")
            if piece:
                out.append(piece)
        normalized = "".join(out)
        if self.escape_whitespaces:
            normalized = normalized.replace(" ", SPACE)
        return normalized.rstrip(space) if squeeze else normalized


def cuts_are_exact(pieces: Iterable[str]) -> bool:
    """Whether escaped text may be segmented word by word (`cut_words`) with the same result as whole:
    true when no piece has "▁" after another character, so no piece can cross a cut. Pieces of "▁"
    only ("▁▁▁▁", allow_whitespace_only_pieces in Llama 2's model) are fine: a run is never cut."""
    return not any(_INNER_SPACE.search(p) for p in pieces)


def cut_words(escaped: str) -> list[str]:
    """Escaped text cut before each run of "▁": "a▁▁b▁c" -> ["a", "▁▁b", "▁c"]."""
    return _WORDS.findall(escaped)


def _drop_leading_spaces(chunks: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """Chunks less those at the start that are exactly " " (an unmatched run loses its leading spaces)."""
    for n, (piece, matched) in enumerate(chunks):
        if matched:
            if piece != " ":
                return chunks[n:]
            continue
        rest = piece.lstrip(" ")
        if rest:
            return [(rest, False), *chunks[n + 1:]]
    return []


def sp_decode(ids: Iterable[int], pieces: Mapping[int, str] | list[str], *, controls: frozenset[int],
              unknown: int, byte_of: Mapping[int, int], strip_first_space: bool, strip_all_leading: bool = False) -> str:
    """SentencePiece's decode of `ids` (see the module docstring); `byte_of`: byte piece id -> byte."""
    out: list[str] = []
    pending = bytearray()
    written = False  # whether any text is out yet
    seen = False  # bos_ws_seen: a piece lost its leading "▁" (with remove_extra_whitespaces never set)
    for i in ids:
        b = byte_of.get(i)
        if b is not None:
            pending.append(b)
            continue
        if pending:
            out.append(_utf8_per_byte(bytes(pending)))
            pending.clear()
            written = written or bool(out[-1])
        first = not (seen or written)
        seen = False
        if i in controls:
            continue
        if i == unknown:
            text = UNK_SURFACE
        else:
            piece = pieces[i]
            if first and strip_first_space and piece.startswith(SPACE):
                piece = piece[1:]
                seen = not strip_all_leading
            text = piece.replace(SPACE, " ")
        if text:
            out.append(text)
            written = True
    if pending:
        out.append(_utf8_per_byte(bytes(pending)))
    return "".join(out)


def _utf8_per_byte(data: bytes) -> str:
    """UTF-8 with every byte of a malformed sequence one U+FFFD, as SentencePiece decodes byte pieces."""
    text = data.decode("utf-8", errors="surrogateescape")
    return _ESCAPED_BYTE.sub("\ufffd", text) if not text.isascii() else text
