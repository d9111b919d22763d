"""The Unigram trainer's output is pinned: speed-ups must not change the model.

golden/unigram_1000.json holds the learned pieces and scores (ids 257.. of a vocab of 1,000 with
byte fallback) that the single-threaded trainer of commit e3819cb gave on `training_texts(400_000)`:
4 EM rounds, 3 prunings, scripts, digits and unknown characters.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np

from llmlab.tokenizers import unigram_arrays as ua
from llmlab.tokenizers.sp_reference import training_texts
from llmlab.tokenizers.unigram_train import train_unigram

GOLDEN = Path(__file__).parent / "golden" / "unigram_1000.json"


@cache
def texts() -> tuple[str, ...]:
    return tuple(training_texts(chars=400_000))


def test_trainer_output_is_unchanged():
    """Pieces, their order and their scores, exactly (the scores as `finalize` rounds them, 15 digits)."""
    tok = train_unigram(texts(), 1000, byte_fallback=True, normalizer="none")
    golden = [(p, s) for p, s in json.loads(GOLDEN.read_text(encoding="utf-8"))]
    assert tok.pieces[257:] == golden


def test_threads_give_the_same_model():
    """workers=2 splits every step in two halves side by side; the model must not change, bit for bit
    (also with pre-tokenizer chunks, no byte fallback and characters left unknown)."""
    for kw in ({"byte_fallback": True}, {"pre_tokenizer": "script", "character_coverage": 0.995}):
        one = train_unigram(texts(), 800, normalizer="none", workers=1, **kw)
        two = train_unigram(texts(), 800, normalizer="none", workers=2, **kw)
        assert two.pieces == one.pieces


def test_find_is_a_binary_search():
    """find_hashes's bucket index against np.searchsorted: hits, misses, duplicates, the extreme hashes."""
    rng = np.random.default_rng(0)
    for n in (0, 1, 2, 5, 1000, 20_000):
        table = np.sort(np.concatenate([rng.integers(0, 2**64, n, dtype=np.uint64),
                                        np.array([7, 7, 2**64 - 1, 2**63], dtype=np.uint64)[:n]]))
        queries = np.concatenate([rng.integers(0, 2**64, 3000, dtype=np.uint64), table,
                                  np.array([0, 7, 2**64 - 1], dtype=np.uint64)])
        at, hit = ua.find_hashes(table, queries)
        want = np.minimum(np.searchsorted(table, queries), max(len(table) - 1, 0))
        want_hit = table[want] == queries if len(table) else np.zeros(len(queries), dtype=bool)
        assert hit.tolist() == want_hit.tolist()
        assert at[hit].tolist() == want[want_hit].tolist()


def test_prefixes_only_save_time():
    """The lattice built with `prefix_hashes` (windows that begin no longer piece stop growing) is the
    one built without: the same edges in the same order, for both passes.

    Edges by hand, characters + longer pieces: "▁abcab" 6 + (ab x2, abc, cab, ▁ab) = 11; "▁cabd"
    5 + (ab, cab) = 7; "▁abababc" 8 + (ab x3, abc, ▁ab, bab x2, ababab) = 16; "▁d" 2: 36 in all.
    """
    words = {"▁abcab": 3, "▁cabd": 2, "▁abababc": 1, "▁d": 4}
    pieces = ["▁", "a", "b", "c", "d", "ab", "abc", "cab", "▁ab", "bab", "ababab"]
    chars = {p: 1 for p in pieces if len(p) == 1}
    hashes = np.array([int(list(ua.Strings.of([p], chars).windows(len(p)))[-1][2][0]) for p in pieces],
                      dtype=np.uint64)
    strings = ua.Strings.of(list(words), chars, weights=np.array(list(words.values()), dtype=float))
    lengths = np.array([len(p) for p in pieces])
    table = ua.hash_table(hashes, lengths, np.arange(len(pieces)))
    plain = ua.Edges.build(strings, table, len(pieces), max_len=6)
    fast = ua.Edges.build(strings, table, len(pieces), max_len=6, prefixes=ua.prefix_hashes(pieces, chars))
    assert ua.prefix_hashes(["abc", "ab", "b"], chars).keys() == {1, 2}
    for e, f in ((plain.fwd, fast.fwd), (plain.bwd, fast.bwd)):
        assert e.keys() == f.keys() and all(np.array_equal(e[k], f[k]) for k in e)
    assert len(fast.fwd["piece"]) == 36
