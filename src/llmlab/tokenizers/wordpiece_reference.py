"""The textbook WordPiece trainer (HF NLP course, chapter 6): recount everything, merge the best pair.

Slow on purpose (every merge walks every unique word twice) and short enough to check by
eye; it is the oracle for wordpiece_train.learn_wordpiece, which must return the same
merges. Same inputs, same score, same tie-breaking (wordpiece_train.SCORES).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import pairwise

from llmlab.tokenizers.bpe import merge_pair
from llmlab.tokenizers.wordpiece_train import Merge, merged_piece, score_function, split_word


def learn_wordpiece_reference(word_counts: Mapping[str, int], alphabet: Sequence[str], num_pieces: int, *,
                              prefix: str = "##", min_frequency: int = 2, score: str = "likelihood") -> list[Merge]:
    order = score_function(score)
    keep = set(alphabet)
    splits = {w: split_word(w, keep, prefix) for w in word_counts}
    known = {p for split in splits.values() for p in split}
    merges: list[Merge] = []
    made = 0
    while made < num_pieces:
        tokens: Counter[str] = Counter()
        pairs: Counter[tuple[str, str]] = Counter()
        for w, split in splits.items():
            for t in split:
                tokens[t] += word_counts[w]
            for pair in pairwise(split):
                pairs[pair] += word_counts[w]
        candidates = [p for p, c in pairs.items() if c >= max(min_frequency, 1)]
        if not candidates:
            break
        a, b = min(candidates, key=lambda p: order(pairs[p], tokens[p[0]], tokens[p[1]], *p))
        piece = merged_piece(a, b, prefix)
        made += piece not in known
        known.add(piece)
        merges.append((a, b))
        splits = {w: merge_pair(split, (a, b), piece) for w, split in splits.items()}
    return merges
