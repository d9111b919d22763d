"""SentencePiece's precompiled normalisation map ("precompiled_charsmap"), read and applied.

A SentencePiece model carries its normaliser (nmt_nfkc, nfkc, ...) as data, not as a rule name:
a blob in `normalizer_spec.precompiled_charsmap` (and, base64, in the `Precompiled` normalizer
of HF tokenizer.json files converted from such models):

    uint32 little-endian: n, the size of the trie in bytes
    n bytes: a Darts double-array trie over the UTF-8 bytes of the source strings, as uint32 units
    the rest: the replacements, each NUL-terminated; a trie value is an offset into this part

A unit packs: label (bits 0-7, and bit 31 so that a value unit never matches a label), has_leaf
(bit 8), offset (bits 10-30, shifted left by 8 more when bit 9 is set), value (bits 0-30). From
node p, the child for byte c is p ^ offset(unit[p]) ^ c when that unit's label is c; a node with
has_leaf holds its value at p ^ offset(unit[p]) (the child for byte 0).

`read_charsmap` walks the whole trie once (level by level, in NumPy) into a dict source ->
replacement, so that applying it is dict look-ups. That is exact because every source is whole
UTF-8 characters, and so is every replacement; a replacement may be "" (the character is deleted,
e.g. most control characters under nmt_nfkc).

Two ways of applying it, because the two reference libraries differ:

    SentencePiece (`Charsmap.prefix`): at each position the longest source that starts there; an
        unmatched character stays itself. sp_text.SentencePieceNormalizer adds the whitespace rules.
    HF tokenizers (`Charsmap.hf_precompiled`): per extended grapheme cluster of under 6 UTF-8 bytes,
        the *shortest* source that is a prefix of the cluster replaces the whole cluster; otherwise
        (no match, or a longer cluster) each character on its own. (spm_precompiled's transform takes
        the first result of a common-prefix search.) Graphemes are the `regex` module's \\X, whose
        Unicode version may differ from the unicode-segmentation crate HF uses.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from functools import lru_cache

import regex

from llmlab.errors import UserError

_GRAPHEMES = regex.compile(r"\X")


def read_charsmap(blob: bytes) -> dict[str, str]:
    """source string -> replacement of a precompiled charsmap; a UserError names what is malformed."""
    import numpy as np  # only where a charsmap is read: keeps `import llmlab.tokenizers` light

    if len(blob) < 4:
        raise UserError("precompiled_charsmap: shorter than its 4-byte header")
    (trie_size,) = struct.unpack_from("<I", blob)
    if trie_size % 4 or 4 + trie_size > len(blob):
        raise UserError(f"precompiled_charsmap: trie size {trie_size} does not fit the {len(blob)}-byte blob")
    units = np.frombuffer(blob, dtype="<u4", count=trie_size // 4, offset=4).astype(np.int64)
    strings = blob[4 + trie_size:]
    if not len(units):
        return {}

    offsets = (units >> 10) << ((units & (1 << 9)) >> 6)
    labels = units & ((1 << 31) | 0xFF)  # a value unit has bit 31 set, so it is no byte's child
    # Every unit whose label is a byte c is the child c of the node whose base is its position ^ c;
    # grouped by that base, a level's children are found with two binary searches (no 256-way probe).
    positions = np.nonzero((labels >= 1) & (labels <= 0xFF))[0]
    parent_base = positions ^ labels[positions]
    order = np.argsort(parent_base, kind="stable")
    by_base, children = parent_base[order], positions[order]
    table: dict[str, str] = {}
    replacements: dict[int, str] = {}  # offset in `strings` -> its replacement (many sources share one)
    nodes = np.array([0], dtype=np.int64)
    keys: list[bytes] = [b""]
    for _ in range(64):  # no source is longer than a few characters; 64 bytes bounds a malformed trie
        bases = nodes ^ offsets[nodes]
        lo = np.searchsorted(by_base, bases, "left")
        hi = np.searchsorted(by_base, bases, "right")
        counts = hi - lo
        if not counts.sum():
            return table
        owner = np.repeat(np.arange(len(nodes)), counts)
        index = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(lo, counts)
        new_nodes = children[index]
        new_keys = [keys[o] + bytes((c,)) for o, c in zip(owner.tolist(), labels[new_nodes].tolist(), strict=True)]
        value_pos = new_nodes ^ offsets[new_nodes]
        leaves = np.nonzero((units[new_nodes] >> 8) & 1)[0]
        if len(leaves) and value_pos[leaves].max() >= len(units):
            raise UserError("precompiled_charsmap: a trie value lies outside the trie")
        for n, start in zip(leaves.tolist(), (units[value_pos[leaves]] & ((1 << 31) - 1)).tolist(), strict=True):
            value = replacements.get(start)
            if value is None:
                value = replacements[start] = _replacement(strings, start)
            try:
                table[new_keys[n].decode("utf-8")] = value
            except UnicodeDecodeError:
                raise UserError(f"precompiled_charsmap: the source {new_keys[n]!r} is not UTF-8") from None
        nodes, keys = new_nodes, new_keys
    raise UserError("precompiled_charsmap: the trie has sources over 64 bytes long (malformed?)")


def _replacement(strings: bytes, start: int) -> str:
    end = strings.find(b"\0", start)
    if start > len(strings) or end < 0:
        raise UserError("precompiled_charsmap: a replacement lies outside the blob or is not terminated")
    try:
        return strings[start:end].decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"precompiled_charsmap: the replacement at {start} is not UTF-8") from None


@lru_cache(maxsize=4)
def _cached_table(blob: bytes) -> dict[str, str]:
    """Models share a few charsmaps (nmt_nfkc's above all), and reading one takes about a second."""
    return read_charsmap(blob)


class Charsmap:
    """A read charsmap, ready to apply; plain data, so tokenizers holding one pickle into workers."""

    def __init__(self, table: Mapping[str, str]) -> None:
        self.table = dict(table)
        self.max_len = max((len(k) for k in self.table), default=0)
        singles = sorted(k for k in self.table if len(k) == 1)
        longer = [k for k in self.table if len(k) > 1]
        firsts, seconds = sorted({k[0] for k in longer}), sorted({k[1] for k in longer})
        # where a source can match: a one-character source, or the first two characters of a longer
        # one (nmt_nfkc has "A" + U+0300 -> "À", so "A" alone is no reason to stop); the rest is copied
        parts = [_char_class(singles)] if singles else []
        if longer:
            parts.append(f"{_char_class(firsts)}(?={_char_class(seconds)})")
        self._starts = re.compile("|".join(parts)) if parts else None
        # no match is possible in text without any of these (checked at C speed, before the regex)
        self._needed = frozenset(singles) | frozenset(seconds)
        # ... and in ASCII text, without any of these (nmt_nfkc: the control characters; nfkc: none)
        ascii_needed = sorted(c for c in self._needed if c.isascii())
        self._ascii_needed = re.compile(_char_class(ascii_needed)) if ascii_needed else None

    @classmethod
    def from_blob(cls, blob: bytes) -> Charsmap:
        return cls(_cached_table(bytes(blob)))

    def __getstate__(self) -> dict[str, object]:  # the compiled regex is rebuilt, not pickled
        return {"table": self.table}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(state["table"])  # type: ignore[misc]

    def prefix(self, text: str, i: int) -> tuple[str, int] | None:
        """(replacement, characters consumed) of the longest source at text[i:], or None."""
        table = self.table
        for n in range(min(self.max_len, len(text) - i), 0, -1):
            hit = table.get(text[i:i + n])
            if hit is not None:
                return hit, n
        return None

    def leaves_unchanged(self, text: str) -> bool:
        """Whether no source occurs in `text` (so both ways of applying the map return it as it is):
        a quick test that may say False for text that it leaves unchanged after all.

        ASCII text (most prose and code) is tested against the map's few ASCII sources with one
        regex; other text against the set of characters a match needs (at C speed: the full regex
        of `chunks` is slow on such a large character class).
        """
        if self._starts is None:
            return True
        if text.isascii():
            return self._ascii_needed is None or not self._ascii_needed.search(text)
        return self._needed.isdisjoint(text)

    def chunks(self, text: str) -> list[tuple[str, bool]]:
        """SentencePiece's normalisation of `text`, as (piece, matched) in order: matched pieces are
        one source's replacement, unmatched ones runs of characters copied unchanged."""
        out: list[tuple[str, bool]] = []
        if self.leaves_unchanged(text):
            return [(text, False)] if text else []
        pos = 0
        while True:
            m = self._starts.search(text, pos)
            if m is None:
                break
            i = m.start()
            hit = self.prefix(text, i)
            if hit is None:  # a source starts with this character but none matches here
                out.append((text[pos:i + 1], False))
                pos = i + 1
                continue
            if i > pos:
                out.append((text[pos:i], False))
            out.append((hit[0], True))
            pos = i + hit[1]
        if pos < len(text):
            out.append((text[pos:], False))
        return out

    def hf_precompiled(self, text: str) -> str:
        """HF tokenizers' `Precompiled` normalizer (see the module docstring)."""
        if self.leaves_unchanged(text) or not self._starts.search(text):  # type: ignore[union-attr]
            return text
        table = self.table
        out: list[str] = []
        for grapheme in _GRAPHEMES.findall(text):
            if len(grapheme) == 1:
                out.append(table.get(grapheme, grapheme))
                continue
            if len(grapheme.encode("utf-8")) < 6:
                hit = next((table[grapheme[:n]] for n in range(1, len(grapheme) + 1) if grapheme[:n] in table), None)
                if hit is not None:
                    out.append(hit)
                    continue
            out.extend(table.get(c, c) for c in grapheme)
        return "".join(out)


def _char_class(chars: list[str]) -> str:
    """A character class of sorted `chars` as ranges: [\\x01-\\x1f...], which `re` matches fast."""
    points = [ord(c) for c in chars]
    spans: list[list[int]] = []
    for p in points:
        if spans and p == spans[-1][1] + 1:
            spans[-1][1] = p
        else:
            spans.append([p, p])
    return "[" + "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
                         for a, b in spans) + "]"
