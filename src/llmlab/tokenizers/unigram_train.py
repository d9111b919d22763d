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

The arrays (every word's lattice at once, forward-backward, Viterbi, threads) are in
unigram_arrays.py.

Left out: split_digits, sentence sampling (input_sentence_size), user-defined symbols.
"""

from __future__ import annotations

import os
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager

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
from llmlab.tokenizers.unigram_arrays import (
    TABLE,
    Edges,
    Strings,
    expected_counts,
    hash_table,
    prefix_hashes,
    side_by_side,
    viterbi_paths,
)

UNK_PIECE = "<unk>"
END = "\x00"  # the follower of a text's last word (a placeholder: its code is set apart, see seed_pieces)
EXPECTED_MIN = 0.5  # SentencePiece's kExpectedFrequencyThreshold: the M-step drops rarer pieces
DESIRED_SLACK = 1.1  # EM and pruning stop above 1.1 x vocab_size pieces; the final cut takes the best
_MISSING_CHAR_GAP = 1e-4  # required characters EM dropped get scores just below the lowest


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
        words = Strings.of(list(counts), chars, weights=np.fromiter(counts.values(), np.float64, len(counts)))
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
    """Threads for the trainer's NumPy work: `workers` of them (None: one per core, as bpe_train counts);
    None for one. EM and pruning run two halves side by side, so only the seed counts use more than two."""
    n = workers if workers is not None else (os.cpu_count() or 1)
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


def script_breaks(words: Strings, chars: dict[str, int], *, split_by_number: bool) -> np.ndarray:
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
    strings = Strings.of([w + nx for w, nx in followed], chars,
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
    hashes = [int(TABLE[1 + k]) for k in range(len(chars))]  # a required character's hash: its table entry
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


def pruning_losses(words: Edges, pieces: list[str], hashes: np.ndarray, chars: dict[str, int], alive: np.ndarray,
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
        strings = Strings.of([pieces[i] for i in multi.tolist()], chars)
        live = np.flatnonzero(alive)
        lattice = Edges.build(strings, hash_table(hashes, lengths, live), n, max_len=int(lengths.max()),
                               skip_whole=True, prefixes=prefix_hashes([pieces[i] for i in live.tolist()], chars))
        return viterbi_paths(lattice, alive, sc)

    # subtle: the jobs side by side get no pool themselves (a job waiting on the pool that runs it could wait forever)
    (_, owner, piece), (alt_score, alt_string, alt_piece) = side_by_side(
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


def prune(words: Edges, pieces: list[str], hashes: np.ndarray, chars: dict[str, int], alive: np.ndarray,
          scores: np.ndarray, *, keep: int, pool: Executor | None = None) -> np.ndarray:
    """SentencePiece's pruning: keep `keep` pieces, the characters on some Viterbi path, then the
    candidates whose loss (`pruning_losses`) is largest; the others die."""
    loss, candidate, kept = pruning_losses(words, pieces, hashes, chars, alive, scores, pool)
    order = np.flatnonzero(candidate)[np.argsort(-loss[candidate], kind="stable")]
    new = kept.copy()
    new[order[:max(keep - int(kept.sum()), 0)]] = True
    return new


def em_and_prune(words: Strings, pieces: list[str], scores: np.ndarray, hashes: np.ndarray,
                 chars: dict[str, int], *, desired: int, shrinking_factor: float, num_sub_iterations: int,
                 say: Callable[[str], None], pool: Executor | None = None) -> np.ndarray:
    """Scores of the pieces after EM and pruning (-inf for dead pieces); `pool` only saves time."""
    n = len(pieces)
    lengths = np.fromiter(map(len, pieces), np.int64, n)
    alive = np.ones(n, dtype=bool)
    word_edges = Edges.build(words, hash_table(hashes, lengths, np.arange(n)), n, max_len=int(lengths.max()),
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
