"""The code-point sweep that holds llmlab's BERT WordPiece to HF `tokenizers`, shared by
tests/tokenizers/test_bert_parity.py and benchmarks/bert_parity.py.

    SWEEP          every code point of planes 0, 1 and 14 but the surrogates, in 48 strings of
                   4,096 consecutive ones
    char_vocab()   BERT's specials, a few words, and every non-whitespace character of those
                   planes alone and with "##": a difference in cleaning, splitting, accent
                   stripping or lowercasing changes the ids instead of hiding in an [UNK]
    mismatches()   the strings whose ids or decoded text differ between llmlab and HF
"""

from __future__ import annotations

from functools import cache
from typing import Any

from llmlab.tokenizers.wordpiece import DEFAULT_SPECIAL_TOKENS, WordPieceTokenizer

POINTS = [c for plane in (0, 1, 14) for c in range(plane << 16, (plane + 1) << 16) if not 0xD800 <= c < 0xE000]
SWEEP = ["".join(map(chr, POINTS[i:i + 4096])) for i in range(0, len(POINTS), 4096)]


@cache
def char_vocab() -> dict[str, int]:
    # White_Space never is in a word; U+001C..U+001F (Python's whitespace too) are, for BERT
    chars = [chr(c) for c in POINTS if not chr(c).isspace() or 0x1C <= c <= 0x1F]
    pieces = [*DEFAULT_SPECIAL_TOKENS, "the", "##ing", "ab", "##cd", *chars, *("##" + c for c in chars)]
    return {p: i for i, p in enumerate(pieces)}


def mismatches(ours: WordPieceTokenizer, hf: Any, strings: list[str]) -> list[int]:
    """Indices of the strings whose ids (HF matches specials in text: llmlab does when allowed) or
    decoded text differ; `hf` is a `tokenizers.Tokenizer`."""
    bad = []
    for k, s in enumerate(strings):
        ids = hf.encode(s, add_special_tokens=False).ids
        if ours.encode(s, allowed_special="all") != ids or ours.decode(ids) != hf.decode(ids, skip_special_tokens=False):
            bad.append(k)
    return bad
