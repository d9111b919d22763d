"""How a tokenizer treats a text: compression, fertility, UNKs, vocabulary use, per script and per language.

    stats = analyze(tok, text)      # a frozen TextStats
    stats.bytes_per_token, stats.fertility, stats.by_script["Cyrillic"].fertility

Definitions (all on one text):

    bytes / token      UTF-8 bytes of the text / tokens                     (higher: better compression)
    chars / token      characters / tokens
    word               a run of letters, marks and digits in a spaced script (`größe`, `नमस्ते`, `2024`),
                       or one character of a script written without spaces (each Han ideograph, each
                       kana); punctuation and symbols are not words
    fertility          tokens per word (Rust et al. 2021, https://arxiv.org/abs/2012.15613): a word's
                       tokens are those that overlap its bytes in the text, so a token spanning two
                       CJK characters counts for both and CJK fertility may be below 1
    continued words    share of words that take 2+ tokens
    UNK rate           share of tokens that are the tokenizer's unknown token (`unk_id`)
    partial tokens     share of tokens whose bytes are not valid UTF-8 alone: pieces of a character,
                       which is what byte fallback (and byte-level BPE on rare scripts) produces
    vocab utilisation  distinct ordinary tokens used / ordinary vocabulary size (specials left out)
    premium            tokens for a language's text / tokens for the parallel English text (Petrov
                       et al. 2023, https://arxiv.org/abs/2305.15425)

Alignment of tokens to words ("in-context"): each token's bytes (`token_bytes`, so Unigram's
"▁" counts as the space it stands for) are laid end to end over the text, and a word's tokens are
those whose byte span overlaps it. This needs the tokens to spell the text: exactly (byte-level
BPE), or its NFKC form after one added space (Unigram's normaliser and dummy prefix), each
unknown token standing for the run of characters it replaced (`align_pieces`). Otherwise
(lowercasing, WordPiece's "##") each word is encoded alone ("per-word"), with its leading space,
and tokens that are only whitespace are not counted; per-word counts can differ from in-context
ones where a token would span a word and the punctuation next to it. `alignment` says which was
used. Left out: offsets from HF's `tokenizers`, and scripts beyond the listed ones (their words
count under "Other").
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import regex

from llmlab.errors import UserError
from llmlab.tokenizers.base import Tokenizer
from llmlab.tokenizers.bytelevel import visible

_CJK = r"\p{Han}\p{Hiragana}\p{Katakana}ー"
WORD = regex.compile(rf"[{_CJK}]|(?:(?![{_CJK}])[\p{{L}}\p{{M}}\p{{N}}])+")
SCRIPTS = ("Latin", "Cyrillic", "Greek", "Devanagari", "Arabic", "Hebrew", "Han", "Hiragana", "Katakana", "Hangul",
           "Thai")
_SCRIPT_RES = tuple((name, regex.compile(rf"\p{{{name}}}")) for name in SCRIPTS)


@dataclass(frozen=True)
class ScriptStats:
    words: int
    tokens: int  # tokens overlapping the script's words (a token on two words counts for each)
    fertility: float
    continued_words: float


@dataclass(frozen=True)
class TextStats:
    n_bytes: int
    n_chars: int
    n_tokens: int
    n_words: int
    bytes_per_token: float
    chars_per_token: float
    fertility: float
    continued_words: float
    unk_tokens: int
    unk_rate: float
    partial_tokens: int
    partial_rate: float
    vocab_used: int
    vocab_size: int  # ordinary tokens, specials left out
    vocab_utilisation: float
    length_histogram: dict[int, int]  # token length in bytes -> count
    top_tokens: tuple[tuple[str, int], ...]  # (visible token, count), most frequent first
    unused_tokens: int
    unused_examples: tuple[str, ...]  # the first unused multi-byte tokens, by id
    by_script: dict[str, ScriptStats] = field(default_factory=dict)
    alignment: str = "in-context"  # or "per-word"


def script_of(word: str) -> str:
    """The script of a word's first letter; "Digits" for a number, "Other" for unlisted scripts.

    >>> script_of("größe"), script_of("東"), script_of("ー"), script_of("2024")
    ('Latin', 'Han', 'Katakana', 'Digits')
    """
    first = next((c for c in word if c.isalpha() or c == "ー"), None)
    if first is None:
        return "Digits" if word[:1].isdigit() else "Other"
    if first == "ー":  # the prolonged sound mark is script Common, but it only follows kana
        return "Katakana"
    return next((name for name, pattern in _SCRIPT_RES if pattern.match(first)), "Other")


def word_spans(text: str) -> list[tuple[int, int, str]]:
    """(start byte, end byte, word) of every word, by the definition above.

    >>> word_spans("ab 日本")
    [(0, 2, 'ab'), (3, 6, '日'), (6, 9, '本')]
    """
    out = []
    offset, last = 0, 0
    for m in WORD.finditer(text):
        offset += len(text[last:m.start()].encode("utf-8"))
        size = len(m.group().encode("utf-8"))
        out.append((offset, offset + size, m.group()))
        offset += size
        last = m.end()
    return out


def tokens_per_word(spans: Sequence[tuple[int, int, str]], pieces: Sequence[bytes]) -> list[int]:
    """For each word span, how many token byte spans overlap it (tokens' bytes join to the text).

    >>> tokens_per_word([(0, 2, "ab"), (3, 6, "abc")], [b"ab", b" ab", b"c"])
    [1, 2]
    """
    ends = []
    pos = 0
    for piece in pieces:
        pos += len(piece)
        ends.append(pos)
    counts = []
    t = 0
    for start, end, _ in spans:
        while t < len(ends) and ends[t] <= start:  # tokens entirely before the word
            t += 1
        k, begin = t, ends[t - 1] if t else 0
        n = 0
        while k < len(ends) and begin < end:
            n += 1
            begin = ends[k]
            k += 1
        counts.append(n)
    return counts


def align_pieces(data: bytes, pieces: Sequence[bytes | None]) -> list[bytes] | None:
    """Each token's bytes within `data`, if the pieces spell it; None stands for an unknown token,
    which takes the bytes up to where the next piece matches. None if they do not spell `data`.

    >>> align_pieces(" ab ☃x".encode(), [b" a", b"b", b" ", None, b"x"])
    [b' a', b'b', b' ', b'\\xe2\\x98\\x83', b'x']
    """
    out: list[bytes] = []
    pos = 0
    for k, piece in enumerate(pieces):
        if piece is None:
            after = pieces[k + 1] if k + 1 < len(pieces) else b""
            if after is None:  # two unknowns in a row: where one ends is not determined
                return None
            end = data.find(after, pos + 1) if after else len(data)
            if end <= pos:
                return None
            piece = data[pos:end]
        elif not data.startswith(piece, pos):
            return None
        out.append(piece)
        pos += len(piece)
    return out if pos == len(data) else None


def _in_context_tokens_per_word(tok: Tokenizer, text: str, ids: Sequence[int],
                                spans: Sequence[tuple[int, int, str]]) -> list[int] | None:
    """Tokens per word by byte overlap, over the text or the form the tokenizer spells (module docstring)."""
    unk = unk_ids(tok)
    specials = {i: t.encode("utf-8") for t, i in tok.special_tokens.items()}
    pieces = [None if i in unk else specials.get(i) or tok.token_bytes(i) for i in ids]
    words = [unicodedata.normalize("NFKC", w) for _, _, w in spans]
    for target in dict.fromkeys((text, unicodedata.normalize("NFKC", text))):
        for prefix in ("", " "):  # " ": a dummy prefix (SentencePiece's add_dummy_prefix)
            aligned = align_pieces((prefix + target).encode("utf-8"), pieces)
            if aligned is None:
                continue
            target_spans = word_spans(prefix + target)
            if [w for _, _, w in target_spans] != words:  # normalising moved a word boundary
                continue
            return tokens_per_word(target_spans, aligned)
    return None


def _isolated_tokens_per_word(tok: Tokenizer, text: str, spans: Sequence[tuple[int, int, str]]) -> list[int]:
    """Each word encoded alone (with a space before it if the text has one); whitespace tokens not counted."""
    data = text.encode("utf-8")
    counts = []
    for start, _, word in spans:
        spaced = (" " + word) if start and data[start - 1:start] == b" " else word
        counts.append(sum(1 for i in tok.encode(spaced) if tok.decode_bytes([i]).strip()))
    return counts


def ordinary_ids(tok: Tokenizer) -> list[int]:
    """Ids of the ordinary (non-special) tokens."""
    vocab = getattr(tok, "vocab", None)
    specials = set(tok.special_tokens.values())
    if isinstance(vocab, Mapping) and all(isinstance(i, int) for i in vocab.values()):
        ids: Iterable[int] = vocab.values()  # BPE: ids may have gaps (an extended vocabulary)
    else:  # Unigram's vocab maps pieces to (id, score): its ids are 0..size-1
        ids = range(tok.vocab_size)
    return sorted(i for i in ids if i not in specials)


def unk_ids(tok: Tokenizer) -> frozenset[int]:
    unk = getattr(tok, "unk_id", None)
    return frozenset() if unk is None else frozenset({unk})


def _is_partial(piece: bytes) -> bool:
    try:
        piece.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def text_stats(text: str, ids: Sequence[int], pieces: Sequence[bytes], *, vocabulary: Sequence[int],
               word_counts: Sequence[int] | None = None, alignment: str = "per-word", unk: Iterable[int] = (),
               top_n: int = 10, unused_examples: Sequence[str] = ()) -> TextStats:
    """The statistics of `ids` (token i has bytes `pieces[i]`) for `text`, from data alone.

    `vocabulary` lists the ordinary ids; `word_counts` gives each word's token count, found the
    way `alignment` names (default: by byte overlap of `pieces`, which must join back to the
    text: "in-context"); `unused_examples` is passed through (the caller knows the vocabulary's
    tokens).
    """
    spans = word_spans(text)
    if word_counts is None:
        alignment = "in-context"
        word_counts = tokens_per_word(spans, pieces)
    n_bytes, n_tokens, n_words = len(text.encode("utf-8")), len(ids), len(spans)
    counts = Counter(ids)
    vocab = set(vocabulary)
    used = vocab & counts.keys()
    unk_set = set(unk)
    n_unk = sum(counts[i] for i in unk_set)
    n_partial = sum(1 for p in pieces if _is_partial(p))
    show = {i: visible(p) for i, p in zip(ids, pieces, strict=True)}
    n_unused = len(vocab - counts.keys())
    scripts: dict[str, list[int]] = {}
    for (_, _, word), n in zip(spans, word_counts, strict=True):
        scripts.setdefault(script_of(word), []).append(n)
    return TextStats(
        n_bytes=n_bytes, n_chars=len(text), n_tokens=n_tokens, n_words=n_words,
        bytes_per_token=_ratio(n_bytes, n_tokens), chars_per_token=_ratio(len(text), n_tokens),
        fertility=_ratio(sum(word_counts), n_words),
        continued_words=_ratio(sum(1 for n in word_counts if n >= 2), n_words),
        unk_tokens=n_unk, unk_rate=_ratio(n_unk, n_tokens), partial_tokens=n_partial,
        partial_rate=_ratio(n_partial, n_tokens), vocab_used=len(used), vocab_size=len(vocab),
        vocab_utilisation=_ratio(len(used), len(vocab)),
        length_histogram=dict(sorted(Counter(len(p) for p in pieces).items())),
        top_tokens=tuple((show.get(i, str(i)), c) for i, c in counts.most_common(top_n)),
        unused_tokens=n_unused, unused_examples=tuple(unused_examples),
        by_script={s: ScriptStats(words=len(ns), tokens=sum(ns), fertility=_ratio(sum(ns), len(ns)),
                                  continued_words=_ratio(sum(1 for n in ns if n >= 2), len(ns)))
                   for s, ns in sorted(scripts.items())},
        alignment=alignment,
    )


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def analyze(tok: Tokenizer, text: str, *, top_n: int = 10, unused_examples: int = 10) -> TextStats:
    """`text_stats` of `tok` on `text`: encodes it (specials as text) and reads each token's bytes."""
    ids = tok.encode(text)
    pieces = [tok.decode_bytes([i]) for i in ids]
    spans = word_spans(text)
    word_counts = _in_context_tokens_per_word(tok, text, ids, spans)
    alignment = "in-context"
    if word_counts is None:
        word_counts, alignment = _isolated_tokens_per_word(tok, text, spans), "per-word"
    vocabulary = ordinary_ids(tok)
    used = set(ids)
    examples = []
    for i in vocabulary:
        if len(examples) >= unused_examples:
            break
        if i not in used and len(piece := tok.decode_bytes([i])) > 1:
            examples.append(visible(piece))
    return text_stats(text, ids, pieces, vocabulary=vocabulary, word_counts=word_counts, alignment=alignment,
                      unk=unk_ids(tok), top_n=top_n, unused_examples=examples)


def premiums(token_counts: Mapping[str, int], *, base: str = "en") -> dict[str, float]:
    """Each language's token count over the base language's, on parallel text.

    >>> premiums({"en": 10, "hi": 25, "ja": 12})
    {'en': 1.0, 'hi': 2.5, 'ja': 1.2}
    """
    if token_counts.get(base, 0) <= 0:
        raise UserError(f"the premium needs a non-empty {base!r} text as the base")
    return {lang: n / token_counts[base] for lang, n in token_counts.items()}


def parallel_premiums(tok: Tokenizer, rows: Sequence[Mapping[str, str]], *, base: str = "en") -> dict[str, float]:
    """`premiums` of `tok` on parallel rows ({lang: sentence}), one sentence per line."""
    langs = list(rows[0]) if rows else []
    return premiums({lang: len(tok.encode("\n".join(r[lang] for r in rows))) for lang in langs}, base=base)


class _PieceVocabulary(Protocol):
    """What `uncovered_characters` reads of a Unigram tokenizer (UnigramTokenizer is one)."""

    vocab: Mapping[str, object]

    def normalize(self, text: str) -> str: ...


def uncovered_characters(tok: _PieceVocabulary, texts: Iterable[str]) -> Counter[str]:
    """Characters of the normalised `texts` that are no piece of their own, with their counts.

    For a trained Unigram these are exactly the characters its encoding cannot spell (the trainer
    keeps every required character as a piece and builds no piece from the others): <unk>, or
    byte pieces with byte fallback.

    >>> class Tok: vocab = {"▁": 0, "a": 1}; normalize = staticmethod(lambda t: "▁" + t.replace(" ", "▁"))
    >>> uncovered_characters(Tok(), ["a!a ~!"])
    Counter({'!': 2, '~': 1})
    """
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(tok.normalize(text))
    return Counter({c: n for c, n in counts.items() if c not in tok.vocab})
