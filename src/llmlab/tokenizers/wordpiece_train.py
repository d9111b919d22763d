"""The fast WordPiece trainer: merge the pair with the best likelihood score, with incremental counts.

The criterion is WordPiece's (Schuster & Nakajima 2012, as taught in HF's NLP course,
chapter 6 "WordPiece tokenization"): merge the adjacent pair (a, b) with the largest

    score(a, b) = count(ab) / (count(a) * count(b))

over the current segmentation of the corpus, i.e. the merge that raises the unigram
likelihood most per use. Frequent pairs of rare parts win; BPE's frequency criterion would
take "t h" before "q ##u". Words start as characters, every one but the first with "##":

    "hugs" x 5 -> h ##u ##g ##s;  merging (h, ##u) makes "hu", merging (##g, ##s) makes "##gs"

1. Count the unique pre-tokenized words once (BertNormalizer + bert_pre_tokenize).
2. Keep every pair's count (weighted by word frequency), the words it occurs in, every
   token's count, the live pairs of each token, and a heap of scores.
3. Merge the best pair: only the words holding it are rewritten, pair counts change by each
   word's old-minus-new pairs. A merge changes count(a) and count(b), so the score of every
   pair that holds a or b changes, even in words the merge did not touch: those pairs get a
   fresh heap entry, and an entry that no longer matches its pair's current score is dropped
   when popped. The corpus is never recounted. wordpiece_reference.py is the textbook loop
   that recounts everything at every merge; it is the oracle for this one (tested equal).

Ties: among equal scores, the pair with the larger count wins (more evidence), then the
pair whose (left, right) strings sort first; scores are Python floats of exact integer
ratios, so equal ratios compare equal. Pairs seen fewer than `min_frequency` times are
never merged (a pair's count only falls until it is merged, so they never qualify).

Differences to HF: `tokenizers.trainers.WordPieceTrainer` does not use this score. It runs
the BPE trainer (merge the most *frequent* pair) with the "##" prefix and keeps the
vocabulary. The two vocabularies differ, so the tests and the benchmark compare quality
(tokens per word, bytes per token, UNK rate on held-out text), not merges. HF's
default `min_frequency` is 0; llmlab's is 2, because with the likelihood score a pair seen
once, of parts seen once, scores 1.0 and would be merged first (that is the criterion
spending vocabulary on hapaxes, which min_frequency 2 stops).

Vocabulary layout (ids): special tokens, the alphabet (every kept character, by code point),
the "##" alphabet (kept characters seen inside words, by code point), then the merged pieces
in merge order. As in HF, the alphabet is always kept, even past `vocab_size`; limit it with
`limit_alphabet` (the most frequent characters; the rest become [UNK] when encoding).
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import pairwise

from llmlab.errors import UserError
from llmlab.tokenizers.bert_text import BertNormalizer, split_punctuation, whitespace_chunks
from llmlab.tokenizers.bpe import merge_pair
from llmlab.tokenizers.wordpiece import DEFAULT_SPECIAL_TOKENS, WordPieceTokenizer

Merge = tuple[str, str]  # (left piece, right piece) as strings: ("h", "##u"), ("##g", "##s")


def count_words(texts: Iterable[str], normalizer: BertNormalizer,
                progress: Callable[[int], None] | None = None) -> Counter[str]:
    """Unique word counts after BERT normalization and pre-tokenization.

    Whitespace chunks are counted first (in C), then each unique chunk is cut at punctuation once.
    """
    chunks: Counter[str] = Counter()
    for text in texts:
        chunks.update(whitespace_chunks(normalizer(text)))
        if progress:
            progress(len(text))
    counts: Counter[str] = Counter()
    for chunk, n in chunks.items():
        for word in split_punctuation(chunk):
            counts[word] += n
    return counts


def choose_alphabet(word_counts: Mapping[str, int], limit: int | None = None) -> list[str]:
    """The characters to keep, by code point: all, or the `limit` most frequent (ties: lower code point)."""
    chars: Counter[str] = Counter()
    for word, count in word_counts.items():
        for c in word:
            chars[c] += count
    kept = sorted(chars, key=lambda c: (-chars[c], c))[:limit] if limit is not None else list(chars)
    return sorted(kept)


def split_word(word: str, alphabet: set[str], prefix: str) -> list[str]:
    """Characters as pieces, "##" on all but the first; characters outside the alphabet dropped (as HF).

    >>> split_word("hugs", set("hugs"), "##")
    ['h', '##u', '##g', '##s']
    """
    return [c if i == 0 else prefix + c for i, c in enumerate(word) if c in alphabet]


def merged_piece(left: str, right: str, prefix: str) -> str:
    """("h", "##u") -> "hu"; ("##g", "##s") -> "##gs": the right piece always continues."""
    return left + right[len(prefix):]


ScoreKey = tuple[float, int, str, str]


def likelihood_key(pair_count: int, left_count: int, right_count: int, left: str, right: str) -> ScoreKey:
    """WordPiece's score count(ab) / (count(a) count(b)), descending; then count, descending; then strings."""
    return (-(pair_count / (left_count * right_count)), -pair_count, left, right)


def frequency_key(pair_count: int, left_count: int, right_count: int, left: str, right: str) -> ScoreKey:
    """BPE's criterion (what HF's WordPieceTrainer runs): count(ab), descending; then strings."""
    return (-float(pair_count), 0, left, right)


# Heap order of a pair (smallest first = merged first), by name.
SCORES = {"likelihood": likelihood_key, "frequency": frequency_key}


def score_function(name: str) -> Callable[[int, int, int, str, str], ScoreKey]:
    if name not in SCORES:
        raise UserError(f"unknown WordPiece score {name!r}; choose one of {', '.join(SCORES)}")
    return SCORES[name]


def learn_wordpiece(word_counts: Mapping[str, int], alphabet: Sequence[str], num_pieces: int, *,
                    prefix: str = "##", min_frequency: int = 2, score: str = "likelihood",
                    on_merge: Callable[[int, int], None] | None = None) -> list[Merge]:
    """The merges in order, until `num_pieces` new pieces exist or no pair qualifies.

    A merge whose piece already exists (("a", "##bc") after ("ab", "##c") both make "abc")
    is kept in the list but makes no new piece, as in HF's BPE trainer.
    `on_merge(step, pair count)` is called after each merge.
    """
    order = score_function(score)
    keep = set(alphabet)
    pieces: list[str] = []  # token id -> piece
    ids: dict[str, int] = {}

    def token(piece: str) -> int:
        if piece not in ids:
            ids[piece] = len(pieces)
            pieces.append(piece)
        return ids[piece]

    words: list[list[int]] = []
    freqs: list[int] = []
    for w, f in word_counts.items():
        split = [token(p) for p in split_word(w, keep, prefix)]
        if split:
            words.append(split)
            freqs.append(f)
    tok_count: defaultdict[int, int] = defaultdict(int)
    pair_count: defaultdict[tuple[int, int], int] = defaultdict(int)
    where: defaultdict[tuple[int, int], set[int]] = defaultdict(set)
    for wi, (word, f) in enumerate(zip(words, freqs, strict=True)):
        for t in word:
            tok_count[t] += f
        for pair in pairwise(word):
            pair_count[pair] += f
            where[pair].add(wi)
    pairs_of: defaultdict[int, set[tuple[int, int]]] = defaultdict(set)  # token -> its live pairs
    for a, b in pair_count:
        pairs_of[a].add((a, b))
        pairs_of[b].add((a, b))
    floor = max(min_frequency, 1)

    def key(pair: tuple[int, int]) -> ScoreKey:
        a, b = pair
        return order(pair_count[pair], tok_count[a], tok_count[b], pieces[a], pieces[b])

    heap = [(key(p), p) for p, c in pair_count.items() if c >= floor]
    heapq.heapify(heap)
    merges: list[Merge] = []
    made = 0
    while made < num_pieces and heap:
        k, best = heapq.heappop(heap)
        if pair_count.get(best, 0) < floor or key(best) != k:
            continue  # stale: the pair's current entry is elsewhere in the heap (or it is gone)
        a, b = best
        piece = merged_piece(pieces[a], pieces[b], prefix)
        made += piece not in ids
        new = token(piece)
        merges.append((pieces[a], pieces[b]))
        count = pair_count[best]
        delta: defaultdict[tuple[int, int], int] = defaultdict(int)
        for wi in where.pop(best):
            old = words[wi]
            merged = merge_pair(old, best, new)
            if len(merged) == len(old):
                continue  # the index is stale: this word no longer holds the pair
            f = freqs[wi]
            times = (len(old) - len(merged)) * f
            tok_count[a] -= times
            tok_count[b] -= times
            tok_count[new] += times
            for pair in pairwise(old):
                delta[pair] -= f
            for pair in pairwise(merged):
                delta[pair] += f
                if new in pair:  # other pairs of the new word were pairs of the old one: indexed
                    where[pair].add(wi)
            words[wi] = merged
        for pair, d in delta.items():
            if not d:
                continue
            pair_count[pair] += d
            if pair_count[pair] <= 0:
                del pair_count[pair]
                where.pop(pair, None)
                pairs_of[pair[0]].discard(pair)
                pairs_of[pair[1]].discard(pair)
            else:
                pairs_of[pair[0]].add(pair)
                pairs_of[pair[1]].add(pair)
        # every pair whose score moved: changed counts, or a part whose count changed
        for pair in set(delta) | pairs_of[a] | pairs_of[b] | pairs_of[new]:
            if pair_count.get(pair, 0) >= floor:
                heapq.heappush(heap, (key(pair), pair))
        if len(heap) > 4 * len(pair_count) + 100_000:  # drop the stale entries
            heap = [(key(p), p) for p, c in pair_count.items() if c >= floor]
            heapq.heapify(heap)
        if on_merge:
            on_merge(len(merges) - 1, count)
    return merges


def build_vocab(special_tokens: Sequence[str], alphabet: Sequence[str], continuing: Sequence[str],
                merges: Sequence[Merge], prefix: str) -> dict[str, int]:
    """Specials, alphabet, "##" alphabet, then each merge's piece the first time it is made."""
    vocab: dict[str, int] = {}
    for piece in (*special_tokens, *alphabet, *(prefix + c for c in continuing),
                  *(merged_piece(a, b, prefix) for a, b in merges)):
        vocab.setdefault(piece, len(vocab))
    return vocab


def train_wordpiece(texts: Iterable[str], vocab_size: int, *, lowercase: bool = True,
                    strip_accents: bool | None = None, clean_text: bool = True, handle_chinese_chars: bool = True,
                    min_frequency: int = 2, score: str = "likelihood",
                    special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS,
                    unk_token: str = "[UNK]", limit_alphabet: int | None = None,
                    continuing_subword_prefix: str = "##", max_input_chars_per_word: int = 100,
                    progress: Callable[[int, int], None] | None = None) -> WordPieceTokenizer:
    """Train a WordPiece tokenizer on strings; `vocab_size` counts specials, alphabet and merged pieces.

    `score`: "likelihood" (WordPiece's criterion, the default) or "frequency" (BPE's, as HF's
    trainer; better compression at a given vocab size, see the module docstring).
    `progress(step, pair count)` is called after each merge.
    """
    score_function(score)  # a bad name fails before the corpus is read
    if isinstance(texts, str):  # one text, not an iterable of its characters
        texts = [texts]
    if len(set(special_tokens)) != len(special_tokens) or not all(special_tokens):
        raise UserError(f"special tokens must be distinct and non-empty, got {list(special_tokens)}")
    if unk_token not in special_tokens:
        raise UserError(f"the unk token {unk_token!r} must be one of the special tokens {list(special_tokens)}")
    if limit_alphabet is not None and limit_alphabet < 1:
        raise UserError(f"limit_alphabet must be >= 1 or None, got {limit_alphabet}")
    if not continuing_subword_prefix:
        raise UserError("continuing_subword_prefix is empty; WordPiece needs one (BERT's is '##')")
    normalizer = BertNormalizer(clean_text=clean_text, handle_chinese_chars=handle_chinese_chars,
                                strip_accents=strip_accents, lowercase=lowercase)
    counts = count_words(texts, normalizer)
    if not counts:
        raise UserError("the training corpus is empty")
    alphabet = choose_alphabet(counts, limit_alphabet)
    keep = set(alphabet)
    continuing = sorted({c for w in counts for c in w[1:] if c in keep})
    base = len(build_vocab(special_tokens, alphabet, continuing, [], continuing_subword_prefix))
    merges = learn_wordpiece(counts, alphabet, max(vocab_size - base, 0), prefix=continuing_subword_prefix,
                             min_frequency=min_frequency, score=score, on_merge=progress)
    vocab = build_vocab(special_tokens, alphabet, continuing, merges, continuing_subword_prefix)
    return WordPieceTokenizer(vocab, unk_token=unk_token, continuing_subword_prefix=continuing_subword_prefix,
                              max_input_chars_per_word=max_input_chars_per_word,
                              special_tokens={t: vocab[t] for t in special_tokens}, normalizer=normalizer)
