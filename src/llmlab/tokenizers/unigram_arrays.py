"""Every unique word's Unigram lattice at once, as flat NumPy arrays: the E-step and Viterbi of unigram_train.py.

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
holds it: two threads on an idle 2-core machine train 1.3-1.4x faster than one (1.43x on 10 MB,
1.33x on the held-out set: benchmarks/results/unigram*.md), and on a machine whose cores are busy
with other work they may gain nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

_B = np.uint64(0x9E3779B97F4A7C15)  # hash multiplier (odd)
TABLE = np.random.default_rng(0x5EED).integers(1, 2**63, size=1 << 21, dtype=np.uint64)  # per char id
_CHUNK = 1 << 20  # edges per chunk of the E-step's posteriors (8 MB of float64)
_F = TypeVar("_F")
_G = TypeVar("_G")


@dataclass(frozen=True)
class Strings:
    """Many strings as flat arrays: the unique words, or the pieces themselves."""

    text: str  # all strings, concatenated
    codes: np.ndarray  # (N,) char id of each position: 1 + rank among required chars, 0 = unknown
    owner: np.ndarray  # (N,) which string each position belongs to
    offsets: np.ndarray  # (S + 1,) string k is text[offsets[k]:offsets[k + 1]]
    weights: np.ndarray  # (S,) how often each string occurs

    @classmethod
    def of(cls, strings: Sequence[str], chars: dict[str, int], *, weights: np.ndarray | None = None) -> Strings:
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
        h = TABLE[self.codes[pos]]
        for length in range(1, max_len + 1):
            if not pos.size:
                return
            yield length, pos, h
            if prefixes is not None:
                ok = member(h, prefixes.get(length, _NO_HASHES))
                pos, h = pos[ok], h[ok]
            nxt = pos + length
            ok = nxt < ends[pos]
            pos, h, nxt = pos[ok], h[ok], nxt[ok]
            c = self.codes[nxt]
            ok = c > 0 if breaks is None else (c > 0) & ~breaks[nxt]
            pos, h = pos[ok], h[ok] * _B + TABLE[c[ok]]


_NO_HASHES = np.zeros(0, np.uint64)


def member(h: np.ndarray, sorted_hashes: np.ndarray) -> np.ndarray:
    """h[i] in sorted_hashes, for each i."""
    return find_hashes(sorted_hashes, h)[1]


def find_hashes(sorted_hashes: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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

    A window of a word that is none of these begins no piece longer than L: `Strings.windows`
    stops growing it. Most windows stop after a few characters, so the lookups of longer ones
    shrink to the few that may still match.
    """
    strings = Strings.of(pieces, chars)
    start, size = strings.offsets[:-1], np.diff(strings.offsets)
    h = TABLE[strings.codes[start]]
    out = {}
    for length in range(1, int(size.max(initial=0))):
        longer = size > length
        start, size, h = start[longer], size[longer], h[longer]
        out[length] = np.unique(h)
        h = h * _B + TABLE[strings.codes[start + length]]
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
class Edges:
    """Every lattice edge of many strings for the seed vocabulary, sorted for both passes.

    Nodes: string k has nodes offsets[k] + k .. offsets[k + 1] + k (one per character boundary).
    An edge with piece == P (the number of pieces) is an unknown character; it is used only
    where the character's own piece (`cover`) is not alive, as SentencePiece adds unk nodes.
    `fwd` and `bwd` hold only the live edges of the last `compact`; the unknown-character edges
    are also kept aside (`unk`), to come back if their character's piece dies.
    """

    strings: Strings
    n_pieces: int
    fwd: dict[str, np.ndarray]  # live edges sorted by ("layer": end position within the string, end node "b")
    bwd: dict[str, np.ndarray]  # live edges sorted by ("layer": longest - start position, start node "a")
    unk: tuple[dict[str, np.ndarray], dict[str, np.ndarray]]  # every unknown-character edge, fwd and bwd layers
    covered: np.ndarray  # (P + 1,) pieces alive at the last `compact`: their unknown-character edges are left out

    @classmethod
    def build(cls, strings: Strings, table: dict[int, tuple[np.ndarray, np.ndarray]], n_pieces: int, *,
              max_len: int, skip_whole: bool = False, prefixes: dict[int, np.ndarray] | None = None,
              pool: Executor | None = None) -> Edges:
        """`skip_whole` leaves out the edge that is a whole string (for second-best segmentations).
        `prefixes`, the `prefix_hashes` of the pieces in `table`, and `pool` (the two passes' edges
        arranged side by side) only save time."""
        starts, lengths, pieces = [], [], []
        char_piece = np.full(len(strings.codes), -1, np.int64)
        for length, pos, h in strings.windows(max_len, prefixes=prefixes):
            if length not in table:
                continue
            sorted_h, ids = table[length]
            at, hit = find_hashes(sorted_h, h)
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

            return side_by_side(pool, lambda: one(local + length, b), lambda: one(longest - local, a))

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

    def compact(self, alive: np.ndarray, pool: Executor | None = None) -> Edges:
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

        fwd, bwd = side_by_side(pool, lambda: keep(self.fwd, self.unk[0], "b"),
                                 lambda: keep(self.bwd, self.unk[1], "a"))
        return Edges(self.strings, self.n_pieces, fwd, bwd, self.unk, alive_ext)

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
    """The layers of compacted edges `e` (`Edges.fwd` with `forward`, else `Edges.bwd`).

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


def side_by_side(pool: Executor | None, f: Callable[[], _F], g: Callable[[], _G]) -> tuple[_F, _G]:
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


def expected_counts(edges: Edges, alive: np.ndarray, scores: np.ndarray,
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
    (fwd, alpha), (_, beta) = side_by_side(pool, lambda: sweep(edges.fwd, True), lambda: sweep(edges.bwd, False))
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

    side_by_side(pool, lambda: posterior(0, len(post) // 2), lambda: posterior(len(post) // 2, len(post)))
    # subtle: one bincount over all edges in their order, so the sums (and the scores) are the same with threads
    # subtle: (w * z).sum(), not np.dot: BLAS's threads would spin on the cores the pool needs
    return np.bincount(fwd.piece, weights=post, minlength=len(scores)), float((w * z).sum())


def viterbi_paths(edges: Edges, alive: np.ndarray, scores: np.ndarray,
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


