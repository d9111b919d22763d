"""The Unigram lattice and the searches over it: pure functions of a text's lattice, no tokenizer.

A lattice holds every piece of the vocabulary at every position of a text (`build_lattice`);
`viterbi` finds the best path (with HF's float64 or SentencePiece's float32 arithmetic, which
decide exact ties differently), `sample_path` and `nbest_paths` draw or list other paths for
subword regularisation. unigram.py builds the tokenizer on them.

`stable_path` and `replay_float32` let a tokenizer cache SentencePiece's float32 paths by word
although they depend on the running total before the word (unigram.py's `WordPath`);
`text_stable_path` is `stable_path` without building the lattice, the search of every word that
is not cached yet (stable_path over `build_lattice` stays as its oracle).
"""

from __future__ import annotations

import math
import random
import struct
from array import array
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

UNK_PENALTY = 10.0  # an unknown character scores min(score) - UNK_PENALTY (SentencePiece's kUnkPenalty)
UNK = -1  # the token id of an unknown-character edge inside a lattice


class Edge(NamedTuple):
    """A lattice node: the piece `token` (UNK for an unknown character) covers text[start:end]."""

    start: int
    end: int
    token: int
    score: float


Lattice = list[list[Edge]]  # lattice[end]: the edges that end at `end`, by start ascending


def build_lattice(text: str, vocab: Mapping[str, tuple[int, float] | None], *, max_len: int, unk_score: float,
                  prefix_closed: bool = False) -> Lattice:
    """Every piece of `vocab` (piece -> (id, score)) at every position of `text`.

    A position that no one-character piece covers gets an UNK edge of one character, so a
    path through the lattice always exists. Starts are walked in ascending order, so each
    position's edges come out by start ascending, as `viterbi`'s tie rule needs.

    `prefix_closed`: `vocab` also maps every prefix of a piece that is no piece itself to None
    (`piece_prefixes`), so the search at a start stops at the first substring absent from it:
    in "▁parser.add" no piece starts with "▁parser.", so nothing longer is looked up.
    """
    n = len(text)
    lattice: Lattice = [[] for _ in range(n + 1)]
    get = vocab.get
    new = tuple.__new__  # Edge(...) without its Python-level __new__: this loop is encoding's cold path
    for start in range(n):
        if (hit := get(text[start], _ABSENT)) is not _ABSENT and hit is not None:
            lattice[start + 1].append(new(Edge, (start, start + 1, hit[0], hit[1])))
        else:
            lattice[start + 1].append(new(Edge, (start, start + 1, UNK, unk_score)))
            if hit is _ABSENT and prefix_closed:
                continue
        for end in range(start + 2, (start + max_len if start + max_len < n else n) + 1):
            hit = get(text[start:end], _ABSENT)
            if hit is _ABSENT:
                if prefix_closed:
                    break
            elif hit is not None:
                lattice[end].append(new(Edge, (start, end, hit[0], hit[1])))
    return lattice


_ABSENT = (UNK, 0.0)  # a sentinel: no vocabulary holds it (compared by identity)


def piece_prefixes(vocab: Mapping[str, tuple[int, float]]) -> dict[str, tuple[int, float] | None]:
    """`vocab` with every proper prefix of its pieces that is no piece mapped to None, for
    `build_lattice(..., prefix_closed=True)`: {"ab": (1, -2.0)} -> {"a": None, "ab": (1, -2.0)}."""
    table: dict[str, tuple[int, float] | None] = {p[:k]: None for p in vocab for k in range(1, len(p))}
    table.update(vocab)
    return table


def viterbi(lattice: Lattice, *, float32: bool = False) -> list[Edge]:
    """The highest-scoring path, with the tie rule and arithmetic of SentencePiece's and HF's encoders.

    Both walk starts in ascending order and replace the best path into `end` only when a
    candidate scores strictly more (`candidate > best`), so among equal scores the path whose
    last piece starts earliest wins.

    subtle: "equal" depends on rounding. Paths of the same pieces in another order ("-" + "----"
    vs "----" + "-") are equal in exact arithmetic, but their rounded sums can differ in the
    last bit, and that bit decides. HF (and llmlab by default) sums in float64 from the start of
    each word. SentencePiece (`float32=True`, for imported .model files) sums in float32 from
    the start of the whole text: best[end] = float32(best[start] + score), compared in float32.
    Tested against both on tie-heavy text ("  ---------", digit runs).
    """
    if float32:
        return viterbi_float32(lattice)[0]
    back, _, _ = _forward_best(lattice)
    return _backtrack(back, len(lattice) - 1)


def _forward_best(lattice: Lattice) -> tuple[list[Edge | None], list[float], list[float]]:
    """The float64 Viterbi pass: (back, best, gap), per position the edge of the best path into it,
    that path's total, and by how much it beats the best path through any other edge into it
    (0 on a tie, inf when one edge ends there)."""
    n = len(lattice) - 1
    best = [0.0] * (n + 1)
    gap = [math.inf] * (n + 1)
    back: list[Edge | None] = [None] * (n + 1)
    for end in range(1, n + 1):
        top = second = -math.inf
        for edge in lattice[end]:
            score = best[edge.start] + edge.score
            if score > top:  # strictly: among equal scores the earliest start stays
                second, top, back[end] = top, score, edge
            elif score > second:
                second = score
        best[end], gap[end] = top, top - second
    return back, best, gap


def viterbi_float32(lattice: Lattice, *, start: float = 0.0) -> tuple[list[Edge], float]:
    """SentencePiece's Viterbi (see `viterbi`) from a running total `start`: (path, its total).

    Words can be walked one at a time, each from the total of the text before it (no piece
    crosses a word). The rounding depends on that total, so a word's path is cached only with
    the range of totals it holds for (`stable_path`).
    """
    n = len(lattice) - 1
    best = array("f", [start] * (n + 1))  # storing into a float32 array rounds
    back: list[Edge | None] = [None] * (n + 1)
    cand = array("f", [0.0])
    for end in range(1, n + 1):
        for edge in lattice[end]:
            cand[0] = best[edge.start] + edge.score
            if back[end] is None or cand[0] > best[end]:
                best[end], back[end] = cand[0], edge
    return _backtrack(back, n), best[n]


def to_float32(x: float) -> float:
    """x rounded to the nearest float32: 0.1 -> 0.10000000149011612."""
    return _F32.unpack(_F32.pack(x))[0]


_F32 = struct.Struct("f")


def stable_path(lattice: Lattice) -> tuple[list[Edge], float]:
    """The best path of a word's lattice (exact arithmetic) and a `limit`: from any running total T
    with |T| < limit, SentencePiece's float32 Viterbi (`viterbi_float32(lattice, start=T)`) finds
    this path too. A limit <= 0 (an exact tie on the path) promises nothing.

    Why: float32 keeps 24 bits, so each sum best[start] + score is off by at most 2^-24 of its
    size. From T, float32's total into every position q is then within q 2^-24 (|T| + R) of
    T + r[q], its exact value (r: exact totals from the word's start, R = max |r|), whichever
    path float32 took there. Backtracking reads the choice at the path's positions only; at each,
    the path's edge beats every other edge into it by gap(q) in exact arithmetic, and float32
    makes the same choice when gap(q) > 2q 2^-24 (|T| + R) (1 + 2^-24). Taking twice that
    (2^-23) and q <= n covers float64's own rounding of r and the gaps:

        limit = min over the path of gap(q) * 2^23 / (2n + 2) - R      (words under 2^22 characters)
    """
    n = len(lattice) - 1
    back, best, gap = _forward_best(lattice)
    path = _backtrack(back, n)
    return path, _limit(path, best, gap)


def _limit(path: list[Edge], best: list[float], gap: list[float]) -> float:
    n = len(best) - 1
    if n >= 1 << 22:
        return -math.inf
    margin = min((gap[e.end] for e in path), default=math.inf)
    return margin * 2.0**23 / (2 * n + 2) - max(map(abs, best))


def text_stable_path(text: str, prefixes: Mapping[str, tuple[int, float] | None], *, max_len: int,
                     unk_score: float) -> tuple[list[Edge], float]:
    """`stable_path(build_lattice(text, prefixes, ..., prefix_closed=True))` in one pass over the text,
    building no lattice: each piece found is pushed at once into the best and second-best totals of
    the position where it ends. Starts are walked in ascending order, so every position sees its
    edges in the lattice's order and ties go the same way; the sums are the same float64 operations,
    so the path and the limit are bit for bit the same (tested). Encoding's cold path: every word
    not cached yet comes here.
    """
    n = len(text)
    best = [0.0] + [-math.inf] * n
    second = [-math.inf] * (n + 1)
    back: list[tuple[int, int, float] | None] = [None] * (n + 1)  # (start, token, score) of the best edge in
    get = prefixes.get
    for start in range(n):
        base = best[start]
        single = False
        for end in range(start + 1, (start + max_len if start + max_len < n else n) + 1):
            hit = get(text[start:end], _ABSENT)
            if hit is _ABSENT:
                break
            if hit is None:
                continue
            single = single or end == start + 1
            score = base + hit[1]
            if score > best[end]:  # strictly: among equal totals the earliest start stays, as in viterbi
                second[end], best[end], back[end] = best[end], score, (start, hit[0], hit[1])
            elif score > second[end]:
                second[end] = score
        if not single:  # no other edge from `start` ends at start + 1, so pushing it last keeps the order
            score = base + unk_score
            end = start + 1
            if score > best[end]:
                second[end], best[end], back[end] = best[end], score, (start, UNK, unk_score)
            elif score > second[end]:
                second[end] = score
    path: list[Edge] = []
    end = n
    while end > 0:
        entry = back[end]
        assert entry is not None
        path.append(Edge(entry[0], end, entry[1], entry[2]))
        end = entry[0]
    path.reverse()
    return path, _limit(path, best, [b - s for b, s in zip(best, second, strict=True)])


def replay_float32(total: float, scores: Iterable[float]) -> float:
    """The running total after the path of `scores` from `total`, as SentencePiece's float32 Viterbi
    sums it: total = float32(total + score), one score at a time."""
    acc = array("f", [total])
    for score in scores:
        acc[0] += score  # the float64 sum, rounded to float32 on the store, as viterbi_float32 does
    return acc[0]


def _backtrack(back: Sequence[Edge | None], end: int) -> list[Edge]:
    path: list[Edge] = []
    while end > 0:
        edge = back[end]
        assert edge is not None
        path.append(edge)
        end = edge.start
    return path[::-1]


def forward(lattice: Lattice, *, theta: float = 1.0) -> list[float]:
    """alpha[i] = log of the summed exp(theta * score) of all paths from 0 to i."""
    n = len(lattice) - 1
    alpha = [-math.inf] * (n + 1)
    alpha[0] = 0.0
    for end in range(1, n + 1):
        alpha[end] = _logsumexp([alpha[e.start] + theta * e.score for e in lattice[end]])
    return alpha


def _logsumexp(xs: Sequence[float]) -> float:
    m = max(xs, default=-math.inf)
    if m == -math.inf:
        return m
    return m + math.log(sum(math.exp(x - m) for x in xs))


def sample_path(lattice: Lattice, *, theta: float, rng: random.Random) -> list[Edge]:
    """Forward-filtering backward-sampling: a path drawn with probability exp(theta * score(path)) / Z.

    After the forward pass, alpha[end] sums every path into `end`; walking back from the end,
    the edge into `end` is drawn with probability exp(alpha[start] + theta * score - alpha[end]).
    """
    alpha = forward(lattice, theta=theta)
    path: list[Edge] = []
    end = len(lattice) - 1
    while end > 0:
        edges = lattice[end]
        weights = [math.exp(alpha[e.start] + theta * e.score - alpha[end]) for e in edges]
        edge = rng.choices(edges, weights=weights)[0]
        path.append(edge)
        end = edge.start
    return path[::-1]


def nbest_paths(lattice: Lattice, n: int) -> list[tuple[float, list[Edge]]]:
    """The `n` highest-scoring paths, best first: a Viterbi that keeps n partial paths per position.

    Exact (every path's prefix to a position is among that position's n best if the path is
    among the n best); SentencePiece gets the same list with an A* search.
    """
    size = len(lattice) - 1
    # kept[i]: up to n (score, edge, rank of the partial path at edge.start) for paths 0 -> i
    kept: list[list[tuple[float, Edge | None, int]]] = [[] for _ in range(size + 1)]
    kept[0] = [(0.0, None, 0)]
    for end in range(1, size + 1):
        cands = [(s + e.score, e, rank) for e in lattice[end] for rank, (s, _, _) in enumerate(kept[e.start])]
        cands.sort(key=lambda c: -c[0])  # stable: ties keep the earlier start, as viterbi does
        kept[end] = cands[:n]
    out = []
    for score, edge, rank in kept[size]:
        path: list[Edge] = []
        while edge is not None:
            path.append(edge)
            _, edge, rank = kept[edge.start][rank]
        out.append((score, path[::-1]))
    return out
