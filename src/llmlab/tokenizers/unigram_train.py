"""Training a Unigram LM tokenizer: EM over every word's lattice, then pruning by loss.

Reference: Kudo 2018, "Subword Regularization" (arXiv:1804.10959) sec. 3.2, and SentencePiece's
`trainer_unigram.cc`, which this follows step by step:

1. Count the unique words: normalise each text, spaces -> "▁", "▁" in front, cut before
   every "▁" (SentencePiece's split_by_whitespace). Everything after works on unique words
   weighted by their counts, so memory and time grow with the vocabulary of the corpus.
2. Required characters: the most frequent characters that together make up
   `character_coverage` of all characters. The rest are unknown (<unk>, or bytes).
3. Seed pieces: the characters, and the right-maximal repeats of 2..max_piece_length known
   characters inside words, the `seed_size` best by frequency x length. SentencePiece takes the
   nodes of a suffix tree of the running text: substrings that occur at least twice and are not
   always followed by the same character. Here every window of the unique words is hashed per
   length, and so is the window with the character that follows it, read in the running text:
   each word is counted with its follower (the next word's first character, or the end of the
   text), so "▁в" always before "▁" is no seed, as there. A repeat may always follow the same
   character ("elf" in "self"): SentencePiece does not ask for left-maximality either. As in its
   split_by_unicode_script and split_by_number, no seed mixes scripts or digits with letters
   ("self(" and "a1" are no pieces), but a repeat always followed by such a character ("self" in
   "self(") is not right-maximal either.
   Initial score: log(freq x length / total).
4. EM, `num_sub_iterations` times. E-step: forward-backward over each word's lattice gives
   every piece's expected count. M-step: drop pieces expected fewer than 0.5 times, and set
   score = digamma(count) - digamma(total): SentencePiece's Bayesian ("DPified") EM, a
   sparse prior that pushes rare pieces down; plain EM would use log(count / total).
5. Prune to shrinking_factor x size. Each piece's loss is how much the
   corpus likelihood drops if it is removed, approximated as SentencePiece does: its Viterbi
   count moves to its second-best segmentation (the best one without the piece itself).
   Pieces never on a Viterbi path go first; pieces without an alternative (characters) stay.
6. Repeat 4-5 until the next pruning would leave fewer than 1.1 x vocab_size pieces (meta
   pieces counted in, as SentencePiece counts them: with byte fallback, 257 of 4,000); keep the
   required characters and then the best-scoring pieces. SentencePiece 0.2 stops so (its older
   releases pruned once more, down to 1.1 x vocab_size): the last EM runs on up to 1.47 x the
   final size, and the final cut by score picks from more pieces.

The fast part: all lattices of all unique words are flat NumPy arrays of edges (start node,
end node, piece), built once for the seed vocabulary and sorted once per pass by (layer, node);
each M-step and pruning drops the edges of the dead pieces (the arrays shrink with the vocabulary).
Forward and backward passes run layer by layer (the edges that end, or start, at the k-th
character of their word), vectorised over all words at once. Substrings are found by a
64-bit polynomial hash of random per-character values; two different substrings of the same
length collide with probability ~n^2 / 2^65 (about 1e-7 for a million of them).
`unigram.py`'s pure-Python lattice is the oracle these are tested against.

Threads (`workers`): the work splits in two independent halves at every step, side by side in a
thread pool, never by summing partial results: the forward and the backward pass, the two
orders of the edges when they are sorted or compacted, the words' Viterbi paths and the pieces'
second-best ones; and the seed counts per window length. Every sum runs over the same numbers in
the same order, so the model is the same bit for bit with any number of threads (more than two
add little). NumPy lets go of the GIL in its loops over large arrays; the Python between them
holds it: two threads on an idle 2-core machine train 1.4-1.5x faster than one, and on a machine
whose cores are busy with other work they may gain nothing.

Left out: split_digits, sentence sampling (input_sentence_size), user-defined symbols.
"""

from __future__ import annotations

import os
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import regex

from llmlab.errors import UserError
from llmlab.tokenizers.normalizers import NORMALIZERS
from llmlab.tokenizers.unigram import (
    SPACE,
    UNK_PENALTY,
    UnigramTokenizer,
    byte_piece,
    chunk_pattern,
    text_words,
)

UNK_PIECE = "<unk>"
END = "\x00"  # the follower of a text's last word (a placeholder: its code is set apart, see seed_pieces)
EXPECTED_MIN = 0.5  # SentencePiece's kExpectedFrequencyThreshold: the M-step drops rarer pieces
DESIRED_SLACK = 1.1  # EM and pruning stop above 1.1 x vocab_size pieces; the final cut takes the best
_MISSING_CHAR_GAP = 1e-4  # required characters EM dropped get scores just below the lowest
_B = np.uint64(0x9E3779B97F4A7C15)  # hash multiplier (odd)
_TABLE = np.random.default_rng(0x5EED).integers(1, 2**63, size=1 << 21, dtype=np.uint64)  # per char id
_CHUNK = 1 << 20  # edges per chunk of the E-step's posteriors (8 MB of float64)
_F = TypeVar("_F")
_G = TypeVar("_G")


def train_unigram(texts: Iterable[str], vocab_size: int, *, byte_fallback: bool = False,
                  character_coverage: float = 0.9995, max_piece_length: int = 16, seed_size: int = 1_000_000,
                  shrinking_factor: float = 0.75, num_sub_iterations: int = 2, special_tokens: Sequence[str] = (),
                  normalizer: str = "nfkc", add_dummy_prefix: bool = True, split_by_unicode_script: bool = True,
                  split_by_number: bool = True, pre_tokenizer: str | None = None, workers: int | None = None,
                  progress: Callable[[str], None] | None = None) -> UnigramTokenizer:
    """Train a Unigram tokenizer on `texts` (each one a "sentence" with its own "▁" prefix).

    `vocab_size` counts every id: <unk> (id 0), the special tokens, the 256 byte pieces with
    `byte_fallback`, and the learned pieces. A corpus too small to hold that many pieces gives
    a smaller vocabulary (SentencePiece raises instead). `split_by_unicode_script` and
    `split_by_number` are SentencePiece's options of the same names (both on by default, as there):
    no piece mixes scripts ("self(" or "x." are no pieces), nor digits with letters ("a1").
    `pre_tokenizer` (an llmlab pre-tokenizer name) cuts texts into chunks first; the tokenizer
    keeps it, so pieces never cross chunks in training or encoding.
    `workers` threads (default: one per core; 1: none) share the NumPy work; the model is the same
    for any number, bit for bit.
    """
    if isinstance(texts, str):  # one text, not an iterable of its characters
        texts = [texts]
    n_meta = 1 + len(special_tokens) + (256 if byte_fallback else 0)
    target = vocab_size - n_meta
    if target < 1:
        raise UserError(f"vocab_size {vocab_size} leaves no room for pieces after {n_meta} fixed ids "
                        "(<unk>, special tokens, 256 bytes with byte_fallback)")
    if not 0 < character_coverage <= 1:
        raise UserError(f"character_coverage must be in (0, 1], got {character_coverage}")
    if not 0 < shrinking_factor < 1:
        raise UserError(f"shrinking_factor must be in (0, 1), got {shrinking_factor}")
    if max_piece_length < 1 or num_sub_iterations < 1:
        raise UserError("max_piece_length and num_sub_iterations must be at least 1")
    if len(set(special_tokens)) != len(special_tokens) or UNK_PIECE in special_tokens:
        raise UserError(f"special tokens must be distinct and not {UNK_PIECE!r}: {list(special_tokens)}")
    if normalizer not in NORMALIZERS:
        raise UserError(f"unknown normalizer {normalizer!r}; choose one of {', '.join(NORMALIZERS)}")
    if workers is not None and workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}")
    say = progress or (lambda _: None)

    with _thread_pool(workers) as pool:
        chunks = None if pre_tokenizer is None else regex.compile(chunk_pattern(pre_tokenizer))
        followed = count_words(texts, normalizer=normalizer, add_dummy_prefix=add_dummy_prefix, chunks=chunks)
        counts = merge_followers(followed)
        if not counts:
            raise UserError("the training corpus is empty")
        chars = required_chars(counts, character_coverage)
        if len(chars) > target:
            raise UserError(f"vocab_size {vocab_size} is too small: {len(chars)} characters are required at "
                            f"character_coverage {character_coverage} (plus {n_meta} fixed ids)")
        words = _Strings.of(list(counts), chars, weights=np.fromiter(counts.values(), np.float64, len(counts)))
        pieces, seed_scores, hashes = seed_pieces(followed, chars, max_piece_length=max_piece_length,
                                                  seed_size=seed_size, split_by_unicode_script=split_by_unicode_script,
                                                  split_by_number=split_by_number, pool=pool)
        say(f"{len(counts):,} unique words, {len(chars):,} required characters, {len(pieces):,} seed pieces")
        scores = em_and_prune(words, pieces, seed_scores, hashes, chars, desired=int(vocab_size * DESIRED_SLACK),
                              shrinking_factor=shrinking_factor, num_sub_iterations=num_sub_iterations, say=say,
                              pool=pool)
    final = finalize(pieces, scores, chars, target)
    meta = [(UNK_PIECE, 0.0), *((s, 0.0) for s in special_tokens),
            *((byte_piece(b), 0.0) for b in range(256) if byte_fallback)]
    return UnigramTokenizer(meta + final, unk_id=0, byte_fallback=byte_fallback,
                            special_tokens={s: 1 + i for i, s in enumerate(special_tokens)},
                            normalizer=normalizer, add_dummy_prefix=add_dummy_prefix, pre_tokenizer=pre_tokenizer)


@contextmanager
def _thread_pool(workers: int | None) -> Iterator[Executor | None]:
    """Threads for the trainer's NumPy work: `workers` of them (None: one per core); None for one."""
    n = workers if workers is not None else len(os.sched_getaffinity(0))
    if n <= 1:
        yield None
        return
    with ThreadPoolExecutor(n, thread_name_prefix="llmlab-unigram") as pool:
        yield pool


# ---------------------------------------------------------------------- words, characters, seeds


def count_words(texts: Iterable[str], *, normalizer: str, add_dummy_prefix: bool,
                chunks: regex.Pattern[str] | None = None) -> Counter[tuple[str, str]]:
    """Unique escaped words, each with the character that follows it (the next word's first, or
    END after a text's last word), and their counts: ["a b", "b"] -> {("▁a", "▁"): 1, ("▁b", END): 2}.

    The follower matters only to the seeds: SentencePiece finds them in the running text, where a
    word's end is followed by the next word's "▁" or by the end of the sentence.
    """
    normalize = NORMALIZERS[normalizer]
    counts: Counter[tuple[str, str]] = Counter()
    for text in texts:
        words = text_words(normalize(text), add_dummy_prefix=add_dummy_prefix, chunks=chunks)
        counts.update(zip(words, [w[0] for w in words[1:]] + [END], strict=True))
    return counts


def merge_followers(counts: Counter[tuple[str, str]]) -> Counter[str]:
    """The counts of the words alone: {("▁a", "▁"): 1, ("▁a", END): 2} -> {"▁a": 3}."""
    words: Counter[str] = Counter()
    for (word, _), n in counts.items():
        words[word] += n
    return words


def required_chars(counts: Counter[str], coverage: float) -> dict[str, int]:
    """The most frequent characters, in order, until they make up `coverage` of all (as SentencePiece);
    ties by code point."""
    points = np.frombuffer("".join(counts).encode("utf-32-le"), dtype=np.uint32)
    weights = np.repeat(np.fromiter(counts.values(), np.float64, len(counts)),
                        np.fromiter(map(len, counts), np.int64, len(counts)))
    freq = np.bincount(points, weights=weights)  # one bin per code point; exact: sums of counts below 2^53
    uniq = np.flatnonzero(freq)
    freq = freq[uniq].astype(np.int64)
    order = np.lexsort((uniq, -freq))
    total = int(freq.sum())
    out: dict[str, int] = {}
    covered = 0
    for c, n in zip(uniq[order].tolist(), freq[order].tolist(), strict=True):
        if covered / total >= coverage:
            break
        out[chr(c)] = n
        covered += n
    return out


@dataclass(frozen=True)
class _Strings:
    """Many strings as flat arrays: the unique words, or the pieces themselves."""

    text: str  # all strings, concatenated
    codes: np.ndarray  # (N,) char id of each position: 1 + rank among required chars, 0 = unknown
    owner: np.ndarray  # (N,) which string each position belongs to
    offsets: np.ndarray  # (S + 1,) string k is text[offsets[k]:offsets[k + 1]]
    weights: np.ndarray  # (S,) how often each string occurs

    @classmethod
    def of(cls, strings: Sequence[str], chars: dict[str, int], *, weights: np.ndarray | None = None) -> _Strings:
        text = "".join(strings)
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        code_of = np.zeros(max(int(points.max(initial=0)), *map(ord, chars), 0) + 1, np.int64)  # per code point
        code_of[np.fromiter(map(ord, chars), np.int64, len(chars))] = np.arange(1, len(chars) + 1)  # by frequency
        codes = code_of[points]
        lengths = np.fromiter((len(s) for s in strings), np.int64, len(strings))
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        owner = np.repeat(np.arange(len(strings)), lengths)
        return cls(text, codes, owner, offsets, np.ones(len(strings)) if weights is None else weights)

    def windows(self, max_len: int, *, breaks: np.ndarray | None = None,
                prefixes: dict[int, np.ndarray] | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(L, start positions, hashes) of every run of L known characters inside one string,
        in ascending position order; with `breaks`, no run crosses a position where it is True.
        With `prefixes` (`prefix_hashes`), a run grows past L characters only if it begins some
        piece longer than L: the lattice builder looks up only the runs that may still be pieces."""
        ends = self.offsets[1:][self.owner]
        pos = np.flatnonzero(self.codes > 0)
        h = _TABLE[self.codes[pos]]
        for length in range(1, max_len + 1):
            if not pos.size:
                return
            yield length, pos, h
            if prefixes is not None:
                ok = _member(h, prefixes.get(length, _NO_HASHES))
                pos, h = pos[ok], h[ok]
            nxt = pos + length
            ok = nxt < ends[pos]
            pos, h, nxt = pos[ok], h[ok], nxt[ok]
            c = self.codes[nxt]
            ok = c > 0 if breaks is None else (c > 0) & ~breaks[nxt]
            pos, h = pos[ok], h[ok] * _B + _TABLE[c[ok]]


# Scripts told apart by split_by_unicode_script; a character of none of them is "Other" (one class).
_SCRIPTS = ("Latin", "Common", "Greek", "Cyrillic", "Armenian", "Hebrew", "Arabic", "Syriac", "Thaana", "Devanagari",
            "Bengali", "Gurmukhi", "Gujarati", "Oriya", "Tamil", "Telugu", "Kannada", "Malayalam", "Sinhala", "Thai",
            "Lao", "Tibetan", "Myanmar", "Georgian", "Hangul", "Ethiopic", "Cherokee", "Khmer", "Mongolian", "Han",
            "Bopomofo", "Yi", "Coptic", "Runic", "Ogham", "Braille", "Canadian_Aboriginal", "Tifinagh", "Nko",
            "Javanese", "Balinese")
_SCRIPT_OF = regex.compile(r"(?P<han>[\p{Hiragana}\p{Katakana}\u30fc])|(?P<inherited>\p{Script=Inherited})|"
                           + "|".join(f"(?P<s{i}>\\p{{Script={name}}})" for i, name in enumerate(_SCRIPTS)))
_ANY, _INHERITED, _OTHER, _HAN = -1, -2, len(_SCRIPTS), _SCRIPTS.index("Han")


def script_class(c: str, *, split_by_number: bool) -> int:
    """SentencePiece's script of a character for split_by_unicode_script: its Unicode script, with
    Hiragana, Katakana and "ー" counted as Han; "▁" (and digits, without split_by_number) go with any.

        "a" -> Latin, "." -> Common, "1" -> Common (or any), "́" -> Inherited (takes the one before)
    """
    if c == SPACE or (not split_by_number and unicodedata.category(c) == "Nd"):
        return _ANY
    m = _SCRIPT_OF.match(c)
    if m is None:
        return _OTHER
    if m.lastgroup == "inherited":
        return _INHERITED
    return _HAN if m.lastgroup == "han" else int(m.lastgroup[1:])


def script_breaks(words: _Strings, chars: dict[str, int], *, split_by_number: bool) -> np.ndarray:
    """breaks[i]: a piece may not hold both characters i - 1 and i, as SentencePiece's
    IsValidSentencePiece rules with split_by_unicode_script: "▁self(" -> "▁self" | "(".

    Only neighbours are compared (a digit without split_by_number joins anything on either side);
    a combining mark (Inherited) has the script of the character before it.
    """
    cls = np.array([_OTHER, *(script_class(c, split_by_number=split_by_number) for c in chars)], np.int64)
    s = cls[words.codes]
    idx = np.where(s != _INHERITED, np.arange(len(s)), 0)
    s = s[np.maximum.accumulate(idx)] if len(s) else s
    s[s == _INHERITED] = _ANY
    breaks = np.zeros(len(s), dtype=bool)
    breaks[1:] = (s[1:] != _ANY) & (s[:-1] != _ANY) & (s[1:] != s[:-1])
    return breaks


def seed_pieces(followed: Counter[tuple[str, str]], chars: dict[str, int], *, max_piece_length: int,
                seed_size: int, split_by_unicode_script: bool = True, split_by_number: bool = True,
                pool: Executor | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Seed pieces, their initial log-probabilities, and their hashes, from `count_words`' counts.

    The characters, then SentencePiece's suffix-array seeds, the best `seed_size` by freq x length:
    the runs of 2..max_piece_length known characters inside a word (no run crosses a script
    break) that occur at least twice and are right-maximal repeats of the running text, i.e. not
    always followed by the same character. As there, the follower is read in the text itself,
    whatever the run may hold: "▁sel" always before "f" is no seed, nor is "self" always before
    "(" (even if "self(" is no piece), nor a word always followed by the next word's "▁"
    ("▁в" in "▁в▁Москве"); "elf" is, when it ends "▁self" and begins "elfish".
    With `pool`, the window lengths are counted side by side.
    """
    strings = _Strings.of([w + nx for w, nx in followed], chars,
                          weights=np.fromiter(followed.values(), np.float64, len(followed)))
    last = strings.offsets[1:] - 1  # each string's follower
    breaks = (script_breaks(strings, chars, split_by_number=split_by_number) if split_by_unicode_script
              else np.zeros(len(strings.codes), dtype=bool))
    breaks[last] = True  # no seed holds the follower
    follow = strings.codes.copy()  # the character after each position, for right-maximality
    # subtle: the end of a text is a character of its own (SentencePiece's sentence boundary),
    # not an unknown one (code 0): "x" before both is a right-maximal repeat
    follow[last[np.fromiter((nx == END for _, nx in followed), bool, len(followed))]] = len(chars) + 1
    pieces = list(chars)
    value = [float(n) for n in chars.values()]  # characters: their count; substrings: count x length

    def repeats(length: int, pos: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(score, first position, hash, L) of the right-maximal repeats of `length` characters."""
        order = np.argsort(h)
        h_sorted = h[order]
        group = np.flatnonzero(np.concatenate([[True], h_sorted[1:] != h_sorted[:-1]]))  # one per distinct run
        first = np.minimum.reduceat(order, group)  # its first occurrence
        freq = np.add.reduceat(strings.weights[strings.owner[pos[order]]], group)  # exact: sums of counts
        follower = follow[pos[order] + length]
        branching = np.minimum.reduceat(follower, group) != np.maximum.reduceat(follower, group)
        keep = (freq >= 2) & branching  # not every occurrence followed by the same character
        return freq[keep] * length, pos[first[keep]], h_sorted[group[keep]], length

    cands: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]] = []
    waiting: list[Future[tuple[np.ndarray, np.ndarray, np.ndarray, int]]] = []
    for length, pos, h in strings.windows(max_piece_length, breaks=breaks):
        if length == 1:
            continue
        if pool is None:
            cands.append(repeats(length, pos, h))
            continue
        waiting.append(pool.submit(repeats, length, pos, h))
        if len(waiting) > 2:  # bound memory: the windows of a few lengths at most wait for a thread
            cands.append(waiting.pop(0).result())
    cands += [job.result() for job in waiting]
    hashes = [int(_TABLE[1 + k]) for k in range(len(chars))]  # a required character's hash: its table entry
    if cands:
        score = np.concatenate([c[0] for c in cands])
        start = np.concatenate([c[1] for c in cands])
        h = np.concatenate([c[2] for c in cands])
        length = np.concatenate([np.full(len(c[0]), c[3]) for c in cands])
        best = np.lexsort((h, -score))[:max(seed_size - len(pieces), 0)]  # by score, ties in a fixed order
        pieces += [strings.text[p:p + n] for p, n in zip(start[best].tolist(), length[best].tolist(), strict=True)]
        value += score[best].tolist()
        hashes += h[best].tolist()
    v = np.array(value)
    return pieces, np.log(v) - np.log(v.sum()), np.array(hashes, dtype=np.uint64)


_NO_HASHES = np.zeros(0, np.uint64)


def _member(h: np.ndarray, sorted_hashes: np.ndarray) -> np.ndarray:
    """h[i] in sorted_hashes, for each i."""
    return _find(sorted_hashes, h)[1]


def _find(sorted_hashes: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(at, hit): sorted_hashes[at] == h where hit, `at` the first such index, as a binary search
    (np.searchsorted) finds it, but in a few reads per query instead of ~17.

    The hashes are uniform, so their top bits make a bucket index, mostly empty buckets and ones
    of one hash: a query reads its bucket's first hash; only queries that miss it in a bucket of several
    (a few percent) fall back to the binary search.
    """
    n = len(sorted_hashes)
    if not n:
        return np.zeros(len(h), np.int64), np.zeros(len(h), dtype=bool)
    bits = n.bit_length() + 2  # 2 to 8 buckets per hash: few buckets hold several
    shift = np.uint64(64 - bits)
    bounds = np.searchsorted(sorted_hashes, np.arange(1 << bits, dtype=np.uint64) << shift)
    bucket = (h >> shift).astype(np.int64)
    at = bounds[bucket]
    size = np.append(bounds[1:], n)[bucket] - at
    at = np.minimum(at, n - 1)
    hit = sorted_hashes[at] == h
    again = np.flatnonzero(~hit & (size > 1))
    if again.size:
        at[again] = np.minimum(np.searchsorted(sorted_hashes, h[again]), n - 1)
        hit[again] = sorted_hashes[at[again]] == h[again]
    return at, hit


def prefix_hashes(pieces: Sequence[str], chars: dict[str, int]) -> dict[int, np.ndarray]:
    """{L: sorted hashes of the first L characters of every piece longer than L}.

    A window of a word that is none of these begins no piece longer than L: `_Strings.windows`
    stops growing it. Most windows stop after a few characters, so the lookups of longer ones
    shrink to the few that may still match.
    """
    strings = _Strings.of(pieces, chars)
    start, size = strings.offsets[:-1], np.diff(strings.offsets)
    h = _TABLE[strings.codes[start]]
    out = {}
    for length in range(1, int(size.max(initial=0))):
        longer = size > length
        start, size, h = start[longer], size[longer], h[longer]
        out[length] = np.unique(h)
        h = h * _B + _TABLE[strings.codes[start + length]]
    return out


def hash_table(hashes: np.ndarray, lengths: np.ndarray, ids: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{length: (sorted hashes, piece ids)} of the pieces `ids`, for looking windows up."""
    table = {}
    for n in np.unique(lengths[ids]).tolist():
        sel = ids[lengths[ids] == n]
        order = np.argsort(hashes[sel], kind="stable")
        table[n] = (hashes[sel][order], sel[order])
    return table


# ---------------------------------------------------------------------- lattices as arrays


@dataclass(frozen=True)
class _Edges:
    """Every lattice edge of many strings for the seed vocabulary, sorted for both passes.

    Nodes: string k has nodes offsets[k] + k .. offsets[k + 1] + k (one per character boundary).
    An edge with piece == P (the number of pieces) is an unknown character; it is used only
    where the character's own piece (`cover`) is not alive, as SentencePiece adds unk nodes.
    `fwd` and `bwd` hold only the live edges of the last `compact`; the unknown-character edges
    are also kept aside (`unk`), to come back if their character's piece dies.
    """

    strings: _Strings
    n_pieces: int
    fwd: dict[str, np.ndarray]  # live edges sorted by ("layer": end position within the string, end node "b")
    bwd: dict[str, np.ndarray]  # live edges sorted by ("layer": longest - start position, start node "a")
    unk: tuple[dict[str, np.ndarray], dict[str, np.ndarray]]  # every unknown-character edge, fwd and bwd layers
    covered: np.ndarray  # (P + 1,) pieces alive at the last `compact`: their unknown-character edges are left out

    @classmethod
    def build(cls, strings: _Strings, table: dict[int, tuple[np.ndarray, np.ndarray]], n_pieces: int, *,
              max_len: int, skip_whole: bool = False, prefixes: dict[int, np.ndarray] | None = None,
              pool: Executor | None = None) -> _Edges:
        """`skip_whole` leaves out the edge that is a whole string (for second-best segmentations).
        `prefixes`, the `prefix_hashes` of the pieces in `table`, and `pool` (the two passes' edges
        arranged side by side) only save time."""
        starts, lengths, pieces = [], [], []
        char_piece = np.full(len(strings.codes), -1, np.int64)
        for length, pos, h in strings.windows(max_len, prefixes=prefixes):
            if length not in table:
                continue
            sorted_h, ids = table[length]
            at, hit = _find(sorted_h, h)
            if length == 1:
                char_piece[pos[hit]] = ids[at[hit]]
            if skip_whole:
                hit &= ~((pos == strings.offsets[strings.owner[pos]])
                         & (pos + length == strings.offsets[strings.owner[pos] + 1]))
            starts.append(pos[hit])
            lengths.append(np.full(int(hit.sum()), length))
            pieces.append(ids[at[hit]])
        n_nodes = len(strings.codes) + len(strings.weights)
        longest = int(np.diff(strings.offsets).max(initial=0))
        # int32 where it fits: half the bytes to copy in every `compact` and to read in every pass
        index = np.int32 if max(n_nodes, n_pieces + 1, longest + 1) < 2**31 else np.int64

        def arrange(start: np.ndarray, length: np.ndarray, piece: np.ndarray, *, sort: bool = True,
                    **extra: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
            owner = strings.owner[start]
            local = start - strings.offsets[owner]
            a = start + owner
            b = a + length
            # subtle: each pass sorted by (layer, node) and stable, so equal keys keep their input
            # order (pieces before unknown characters) and edges put back by `compact` land where they were
            columns = {name: v.astype(index, copy=False) for name, v in
                       {"a": a, "b": b, "piece": piece, "owner": owner, **extra}.items()}

            def one(layer: np.ndarray, node: np.ndarray) -> dict[str, np.ndarray]:
                o = _stable_order(layer, node) if sort else slice(None)
                return {"layer": layer.astype(index)[o], **{name: v[o] for name, v in columns.items()}}

            return _side_by_side(pool, lambda: one(local + length, b), lambda: one(longest - local, a))

        every = np.arange(len(strings.codes))  # one unknown-character edge per position
        unk = arrange(every, np.ones(len(every), np.int64), np.full(len(every), n_pieces), sort=False,
                      cover=char_piece)  # unsorted: `compact` sorts what it puts back
        uncovered = every[char_piece < 0]  # unknown characters: their edges are always live
        start = np.concatenate([*starts, uncovered])
        fwd, bwd = arrange(start, np.concatenate([*lengths, np.ones(len(uncovered), np.int64)]),
                           np.concatenate([*pieces, np.full(len(uncovered), n_pieces)]))
        covered = np.ones(n_pieces + 1, dtype=bool)
        covered[-1] = False
        return cls(strings, n_pieces, fwd, bwd, unk, covered)

    def compact(self, alive: np.ndarray, pool: Executor | None = None) -> _Edges:
        """Only the live edges: those of live pieces, and the unknown-character edges where the
        character's piece is dead (put back in their place, by layer and node, when it has just died).

        Pieces only die, so an unknown-character edge, once live, stays live."""
        if np.array_equal(alive, self.covered[:-1]):
            return self
        alive_ext = np.append(alive, False)
        back = self.covered & ~alive_ext  # pieces whose unknown-character edges must come back
        live_piece = np.append(alive, True)  # unknown-character edges (piece P) in fwd / bwd stay

        def keep(e: dict[str, np.ndarray], unk: dict[str, np.ndarray], node: str) -> dict[str, np.ndarray]:
            live = live_piece[e["piece"]]
            if not live.all():
                e = {k: v[live] for k, v in e.items()}
            add = back[unk["cover"]]  # cover -1 (no piece) reads back[-1]: False
            if add.any():
                e = {k: np.concatenate([v, unk[k][add]]) for k, v in e.items()}
                order = _stable_order(e["layer"], e[node])
                e = {k: v[order] for k, v in e.items()}
            return e

        fwd, bwd = _side_by_side(pool, lambda: keep(self.fwd, self.unk[0], "b"),
                                 lambda: keep(self.bwd, self.unk[1], "a"))
        return _Edges(self.strings, self.n_pieces, fwd, bwd, self.unk, alive_ext)

    @property
    def n_nodes(self) -> int:
        return len(self.strings.codes) + len(self.strings.weights)

    @property
    def first(self) -> np.ndarray:
        return self.strings.offsets[:-1] + np.arange(len(self.strings.weights))

    @property
    def last(self) -> np.ndarray:
        return self.strings.offsets[1:] + np.arange(len(self.strings.weights))


def _stable_order(layer: np.ndarray, node: np.ndarray) -> np.ndarray:
    """np.argsort(layer * n_nodes + node, kind="stable"), in two cheaper stable passes.

    `build`'s edges come in a few runs of ascending nodes (one per piece length), which timsort
    merges; then a radix sort by layer (16-bit) keeps each layer's edges in node order, ties in
    input order.
    """
    by_node = np.argsort(node, kind="stable")
    layer = layer[by_node]
    if layer.max(initial=0) < 1 << 15:
        layer = layer.astype(np.int16)
    return by_node[np.argsort(layer, kind="stable")]


@dataclass(frozen=True)
class _Pass:
    """The live edges of one pass, with their layers and groups (reduceat boundaries)."""

    src: np.ndarray  # node read (start for forward, end for backward)
    dst: np.ndarray  # node written
    piece: np.ndarray
    owner: np.ndarray
    layers: list[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]]  # (lo, hi, group starts from lo, sizes, nodes)


def _live_pass(e: dict[str, np.ndarray], *, forward: bool) -> _Pass:
    """The layers of compacted edges `e` (`_Edges.fwd` with `forward`, else `_Edges.bwd`).

    A group is a run of edges into one node; a layer's nodes are its own, so layers begin groups.
    """
    src, dst = (e["a"], e["b"]) if forward else (e["b"], e["a"])
    layer = e["layer"]
    if not len(layer):
        return _Pass(src, dst, e["piece"], e["owner"], [])
    bounds = np.unique(np.searchsorted(layer, np.arange(layer[0], layer[-1] + 2)))  # layer is sorted
    group = np.flatnonzero(np.concatenate([[True], dst[1:] != dst[:-1]]))
    at = np.searchsorted(group, bounds).tolist()
    nodes = dst[group]
    sizes = np.diff(np.append(group, len(dst)))
    layers = [(lo, hi, group[i:j] - lo, sizes[i:j], nodes[i:j])
              for lo, hi, i, j in zip(bounds[:-1].tolist(), bounds[1:].tolist(), at[:-1], at[1:], strict=True)]
    return _Pass(src, dst, e["piece"], e["owner"], layers)


def _side_by_side(pool: Executor | None, f: Callable[[], _F], g: Callable[[], _G]) -> tuple[_F, _G]:
    """(f(), g()): g in `pool` while f runs in this thread, or one after the other without a pool.

    NumPy lets go of the GIL inside its loops over large arrays, so two such jobs use two cores.
    """
    if pool is None:
        return f(), g()
    later = pool.submit(g)
    return f(), later.result()


def _grouped_logsumexp(v: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """log(sum(exp(group))) of each group of `v` (overwritten): `starts` and `sizes` of the groups."""
    m = np.maximum.reduceat(v, starts)
    v -= np.repeat(m, sizes)
    return m + np.log(np.add.reduceat(np.exp(v, out=v), starts))


def expected_counts(edges: _Edges, alive: np.ndarray, scores: np.ndarray,
                    pool: Executor | None = None) -> tuple[np.ndarray, float]:
    """E-step: each piece's expected count over all strings (weighted), and the log-likelihood.

    `scores` has one entry per piece plus the unknown-character score at the end.
    alpha[node]: log-sum over paths from the string's start; beta[node]: to its end; an edge's
    posterior is exp(alpha[a] + score + beta[b] - Z).
    """
    edges = edges.compact(alive, pool)

    def sweep(e: dict[str, np.ndarray], forward: bool) -> tuple[_Pass, np.ndarray]:
        one = _live_pass(e, forward=forward)
        v = np.full(edges.n_nodes, -np.inf)
        v[edges.first if forward else edges.last] = 0.0
        s = scores[one.piece]
        for lo, hi, starts, sizes, nodes in one.layers:
            v[nodes] = _grouped_logsumexp(v[one.src[lo:hi]] + s[lo:hi], starts, sizes)
        return one, v

    # forward (alpha) and backward (beta) are independent: side by side in `pool`
    (fwd, alpha), (_, beta) = _side_by_side(pool, lambda: sweep(edges.fwd, True), lambda: sweep(edges.bwd, False))
    z = alpha[edges.last]
    w = edges.strings.weights

    post = np.empty(len(fwd.src))

    def posterior(lo: int, hi: int) -> None:
        """post[lo:hi] = exp(alpha[a] + score + beta[b] - z) x weight, in chunks: small temporaries
        are reused by the allocator, large ones cost fresh pages every time."""
        for start in range(lo, hi, _CHUNK):
            part = slice(start, min(start + _CHUNK, hi))
            x, owner = post[part], fwd.owner[part]
            np.take(alpha, fwd.src[part], out=x)
            x += scores[fwd.piece[part]]
            x += beta[fwd.dst[part]]
            x -= z[owner]
            np.exp(x, out=x)
            x *= w[owner]

    _side_by_side(pool, lambda: posterior(0, len(post) // 2), lambda: posterior(len(post) // 2, len(post)))
    # subtle: one bincount over all edges in their order, so the sums (and the scores) are the same with threads
    # subtle: (w * z).sum(), not np.dot: BLAS's threads would spin on the cores the pool needs
    return np.bincount(fwd.piece, weights=post, minlength=len(scores)), float((w * z).sum())


def viterbi_paths(edges: _Edges, alive: np.ndarray, scores: np.ndarray,
                  pool: Executor | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The best path of every string: (best score per string, owner of each path edge, its piece)."""
    edges = edges.compact(alive, pool)
    fwd = _live_pass(edges.fwd, forward=True)
    best = np.full(edges.n_nodes, -np.inf)
    best[edges.first] = 0.0
    back = np.full(edges.n_nodes, -1)
    s = scores[fwd.piece]
    for lo, hi, starts, sizes, nodes in fwd.layers:
        v = best[fwd.src[lo:hi]] + s[lo:hi]
        m = np.maximum.reduceat(v, starts)
        group = np.repeat(np.arange(len(starts)), sizes)
        at = np.flatnonzero(v == m[group])
        first = at[np.concatenate([[True], group[at][1:] != group[at][:-1]])]  # first best edge per group
        best[nodes] = m
        back[nodes] = lo + first
    owners, pieces = [], []
    cur = edges.last.copy()
    todo = np.flatnonzero(back[cur] >= 0)
    while todo.size:
        e = back[cur[todo]]
        owners.append(todo)
        pieces.append(fwd.piece[e])
        cur[todo] = fwd.src[e]
        todo = todo[back[cur[todo]] >= 0]
    empty = np.zeros(0, np.int64)
    return (best[edges.last], np.concatenate(owners) if owners else empty,
            np.concatenate(pieces) if pieces else empty)


# ---------------------------------------------------------------------- EM and pruning


def digamma(x: np.ndarray) -> np.ndarray:
    """psi(x) for x > 0, as SentencePiece computes it: recurrence up to 7, then the asymptotic series."""
    x = np.array(x, dtype=np.float64)
    result = np.zeros_like(x)
    while (small := x < 7).any():
        result[small] -= 1 / x[small]
        x[small] += 1
    x -= 0.5
    xx2 = 1 / (x * x)
    xx4 = xx2 * xx2
    return result + np.log(x) + xx2 / 24 - 7 / 960 * xx4 + 31 / 8064 * xx4 * xx2 - 127 / 30720 * xx4 * xx4


def m_step(expected: np.ndarray, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(alive, scores): pieces expected under 0.5 times die; the rest score digamma(n) - digamma(total)."""
    alive = alive & (expected[:-1] >= EXPECTED_MIN)
    n = np.where(alive, expected[:-1], 1.0)
    scores = np.where(alive, digamma(n) - digamma(np.array(expected[:-1][alive].sum())), 0.0)
    return alive, scores


def _with_unk(scores: np.ndarray, alive: np.ndarray) -> np.ndarray:
    return np.append(scores, scores[alive].min() - UNK_PENALTY)


def pruning_losses(words: _Edges, pieces: list[str], hashes: np.ndarray, chars: dict[str, int], alive: np.ndarray,
                   scores: np.ndarray, pool: Executor | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(loss, candidate, kept) per piece: SentencePiece's estimate of the likelihood lost without it.

    loss(i) = freq_i / total_freq_of_words x [log p_i - sum_{j in alt(i)} log p'_j], where freq are
    Viterbi counts, p_i = freq_i / sum(freq), alt(i) is the second-best segmentation of piece i,
    and p'_j = (freq_j + freq_i) / (sum(freq) + freq_i x (|alt(i)| - 1)): the probabilities after
    i's count has moved to its alternative pieces. Candidates: the pieces of 2+ characters on some
    Viterbi path whose own best segmentation is themselves; kept: the characters on some path.
    """
    sc = _with_unk(scores, alive)
    n = len(alive)
    lengths = np.fromiter(map(len, pieces), np.int64, n)
    multi = np.flatnonzero(alive & (lengths >= 2))

    def second_best() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The second-best segmentation of each live piece: its best one without the edge of itself."""
        strings = _Strings.of([pieces[i] for i in multi.tolist()], chars)
        live = np.flatnonzero(alive)
        lattice = _Edges.build(strings, hash_table(hashes, lengths, live), n, max_len=int(lengths.max()),
                               skip_whole=True, prefixes=prefix_hashes([pieces[i] for i in live.tolist()], chars))
        return viterbi_paths(lattice, alive, sc)

    # subtle: the jobs side by side get no pool themselves (a job waiting on the pool that runs it could wait forever)
    (_, owner, piece), (alt_score, alt_string, alt_piece) = _side_by_side(
        pool, lambda: viterbi_paths(words, alive, sc), second_best)
    freq = np.bincount(piece, weights=words.strings.weights[owner], minlength=n + 1)
    freq[n] = 0.0  # unknown characters: no piece to move counts to
    alt_owner = multi[alt_string]
    split = np.zeros(n, dtype=bool)
    split[multi] = alt_score > scores[multi]  # the piece's own best segmentation is not itself
    candidate = np.zeros(n, dtype=bool)
    candidate[multi] = True
    candidate &= ~split & (freq[:n] > 0)
    total = freq[:n].sum()
    n_alt = np.bincount(alt_owner, minlength=n)
    with np.errstate(divide="ignore", invalid="ignore"):  # log(0) only for pieces that are no candidates
        logsum_alt = np.log(total + freq[:n] * (n_alt - 1))
        logprob_alt = np.bincount(alt_owner, weights=np.log(freq[alt_piece] + freq[alt_owner]), minlength=n)
        logprob_alt -= n_alt * logsum_alt
        loss = (freq[:n] / words.strings.weights.sum()) * (np.log(freq[:n]) - np.log(total) - logprob_alt)
    kept = alive & (lengths == 1) & (freq[:n] > 0)  # characters on some path: no alternative, always kept
    return loss, candidate, kept


def prune(words: _Edges, pieces: list[str], hashes: np.ndarray, chars: dict[str, int], alive: np.ndarray,
          scores: np.ndarray, *, keep: int, pool: Executor | None = None) -> np.ndarray:
    """SentencePiece's pruning: keep `keep` pieces, the characters on some Viterbi path, then the
    candidates whose loss (`pruning_losses`) is largest; the others die."""
    loss, candidate, kept = pruning_losses(words, pieces, hashes, chars, alive, scores, pool)
    order = np.flatnonzero(candidate)[np.argsort(-loss[candidate], kind="stable")]
    new = kept.copy()
    new[order[:max(keep - int(kept.sum()), 0)]] = True
    return new


def em_and_prune(words: _Strings, pieces: list[str], scores: np.ndarray, hashes: np.ndarray,
                 chars: dict[str, int], *, desired: int, shrinking_factor: float, num_sub_iterations: int,
                 say: Callable[[str], None], pool: Executor | None = None) -> np.ndarray:
    """Scores of the pieces after EM and pruning (-inf for dead pieces); `pool` only saves time."""
    n = len(pieces)
    lengths = np.fromiter(map(len, pieces), np.int64, n)
    alive = np.ones(n, dtype=bool)
    word_edges = _Edges.build(words, hash_table(hashes, lengths, np.arange(n)), n, max_len=int(lengths.max()),
                              prefixes=prefix_hashes(pieces, chars), pool=pool)
    for rnd in range(1, 1000):
        for _ in range(num_sub_iterations):
            expected, loglik = expected_counts(word_edges, alive, _with_unk(scores, alive), pool)
            alive, scores = m_step(expected, alive)
            word_edges = word_edges.compact(alive, pool)
            say(f"round {rnd}: {int(alive.sum()):,} pieces, log-likelihood per word "
                f"{loglik / words.weights.sum():.4f}")
        size = int(alive.sum())
        if int(shrinking_factor * size) <= desired:  # one more pruning would go below `desired`
            break
        alive = prune(word_edges, pieces, hashes, chars, alive, scores, keep=int(shrinking_factor * size), pool=pool)
        word_edges = word_edges.compact(alive, pool)
    return np.where(alive, scores, -np.inf)


def finalize(pieces: list[str], scores: np.ndarray, chars: dict[str, int], target: int) -> list[tuple[str, float]]:
    """The required characters first (EM may have dropped some: they get scores just below the
    lowest), then the best pieces by score, up to `target`; sorted by score, best first."""
    alive = np.isfinite(scores)
    low = scores[alive].min() if alive.any() else 0.0
    index = {p: i for i, p in enumerate(pieces)}
    final: dict[str, float] = {}
    for k, c in enumerate(chars):
        i = index[c]
        final[c] = float(scores[i]) if alive[i] else float(low - _MISSING_CHAR_GAP * (k + 1))
    for i in np.argsort(-np.where(alive, scores, -np.inf), kind="stable"):
        if len(final) >= target or not alive[i]:
            break
        final.setdefault(pieces[i], float(scores[i]))
    # subtle: 15 significant digits, so that HF's JSON reader (exact only up to 15 digits, see
    # unigram_io.hf_score) reads from tokenizer.json the very scores llmlab encodes with
    return sorted(((p, float(f"{s:.15g}")) for p, s in final.items()), key=lambda t: (-t[1], t[0]))
