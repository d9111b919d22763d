"""The textbook BPE trainer: recount every pair after every merge. Small, slow, obviously right.

It is the oracle for the fast trainer (bpe_train.py): on the same words both must
produce the same merges, ties included (the same documented tie rule, `tie_key`).

    words {"hug": 10, "pug": 5, "hugs": 5}
    pair counts: (h,u) 15, (u,g) 20, (p,u) 5, (g,s) 5  -> merge (u,g) -> ug
    then: (h,ug) 15, (p,ug) 5, (ug,s) 5                  -> merge (h,ug) -> hug
"""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

from llmlab.tokenizers.bpe_train import tie_key


def learn_merges_reference(word_counts: dict[str, int], num_merges: int, *,
                           min_frequency: int = 2) -> list[tuple[bytes, bytes]]:
    words = {w: [bytes([b]) for b in w.encode("utf-8")] for w in word_counts}
    ids = {bytes([b]): b for b in range(256)}  # token -> id, for the tie rule
    merges: list[tuple[bytes, bytes]] = []
    for _ in range(num_merges):
        counts: Counter[tuple[bytes, bytes]] = Counter()
        for w, parts in words.items():
            for pair in pairwise(parts):
                counts[pair] += word_counts[w]
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], tie_key(ids[p[0]]), tie_key(ids[p[1]])))
        if counts[best] < max(min_frequency, 1):
            break
        merges.append(best)
        ids[best[0] + best[1]] = len(ids)
        for w, parts in words.items():
            out: list[bytes] = []
            i = 0
            while i < len(parts):
                if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                    out.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            words[w] = out
    return merges
