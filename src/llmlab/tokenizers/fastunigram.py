"""The C word search of Unigram encoding (`_fastunigram.c`): whether it is there, and how it is made;
and, sharing its piece trie, the C merges of SentencePiece's BPE `.model` files (`score_bpe`).

Encoding a word that is not cached yet is a Viterbi search over its lattice; in Python
(`unigram_lattice.text_stable_path`) that is most of a first pass over new text. `_fastunigram.c`
does the same search over a trie of the pieces, with the same float64 operations in the same order,
and runs the loops of `UnigramTokenizer` around it: float64 (`encode`, HF's arithmetic) and
SentencePiece's float32 totals (`walk_float32`). It reads and writes the tokenizer's own caches,
with the values the Python path stores, so the two paths are interchangeable word by word.

`ScoreBPE` does sp_bpe.SentencePieceBPE's merges by score (the `.model` files; HF's merge lists stay
in Python) and its word cache, with sp_bpe.py as the oracle.

unigram.py's Python path stays the oracle: tests/tokenizers/test_fastunigram.py checks the ids,
the cache entries (the `stable_path` limits bit for bit) and the float32 walks of both. Without the
compiled module (no C compiler at install time) or with LLMLAB_PURE_PYTHON=1, Python encodes alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmlab.tokenizers import compiled

_fastunigram: Any = compiled.load("_fastunigram")  # None where it was not built: unigram.py encodes alone


def available() -> bool:
    """Whether the C search can be used (built, and not switched off by LLMLAB_PURE_PYTHON=1)."""
    return compiled.enabled(_fastunigram)


def engine(vocab: Mapping[str, tuple[int, float]], *, unk_score: float, unk_id: int, byte_ids: list[int],
           n_ids: int, word_path: type, safe_total: float, cache_limit: int,
           caches: tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]) -> Any:
    """A `_fastunigram.Engine` over the pieces text can match (`vocab`: piece -> (id, score)).

    `caches` are the tokenizer's (word -> ids, word -> WordPath, safe word -> ids, safe spaced word
    -> ids) dicts, which the engine fills as the Python path does; `word_path` is the WordPath type.
    """
    assert _fastunigram is not None
    pieces = [(piece, i, score) for piece, (i, score) in vocab.items()]
    return _fastunigram.Engine(pieces, unk_score, unk_id, byte_ids, n_ids, word_path, safe_total, cache_limit,
                               *caches)


def score_bpe(vocab: Mapping[str, int], *, scores: list[float], unused: frozenset[int], unk_id: int | None,
              byte_ids: list[int], n_ids: int, cache_limit: int, cache: dict[str, Any]) -> Any:
    """A `_fastunigram.ScoreBPE` for sp_bpe.SentencePieceBPE's `vocab` (piece -> id, the pieces text
    can produce) and `scores` (by id); `byte_ids` by byte (empty without byte fallback); `cache` the
    tokenizer's word -> ids dict, which it fills as the Python path does."""
    assert _fastunigram is not None
    pieces = [(piece, i, scores[i]) for piece, i in vocab.items()]
    return _fastunigram.ScoreBPE(pieces, sorted(unused), -1 if unk_id is None else unk_id, byte_ids, n_ids,
                                 cache_limit, cache)
