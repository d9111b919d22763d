"""The fast byte-level BPE trainer: count words once, then merge with incremental pair counts.

1. Count the unique pre-tokenized chunks ("words") of the corpus. Files are read in
   blocks cut only at a "<non-space>\n" followed by a non-space character (no chunk
   differs at such a point, see pre_tokenizers.py), so a file larger than memory
   streams through, and big inputs are counted in parallel processes. Memory grows
   with the number of unique words, not with the corpus.
2. Keep, for every adjacent pair of tokens, its count over all words (weighted by word
   frequency) and the set of words it occurs in; a max-heap orders pairs by count.
3. Merge the top pair: only the words that contain it are rewritten, and the pair
   counts change by the difference between each word's old and new pairs. The corpus
   is never recounted. Heap entries whose count went stale are re-pushed when popped.

Ties: among pairs with the same count, the pair whose (left, right) tokens come first in
HF's byte-level vocabulary order wins (printable bytes first, in HF's character order;
merged tokens after all bytes, by creation). It is the order of HF tokenizers'
BpeTrainer, so llmlab and HF agree even where counts tie; the textbook trainer in
bpe_reference.py breaks ties the same way and is the oracle for this one.
"""

from __future__ import annotations

import heapq
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from itertools import pairwise
from pathlib import Path

from llmlab.errors import UserError
from llmlab.tokenizers.bpe import BPETokenizer, merge_pair
from llmlab.tokenizers.bytelevel import HF_BYTE_ORDER
from llmlab.tokenizers.normalizers import NORMALIZERS
from llmlab.tokenizers.pre_tokenizers import PreTokenizer

BLOCK_CHARS = 1 << 20  # about 1 MB of text per counting task


def tie_key(token_id: int) -> int:
    """Position of a token in HF's byte-level vocabulary order (ids >= 256 are merges, in order)."""
    return HF_BYTE_ORDER[token_id] if token_id < 256 else token_id


def count_block(block: str, pattern: str, normalizer: str) -> Counter[str]:
    """Chunk counts of one block of text (runs in worker processes)."""
    return Counter(PreTokenizer(pattern).split(NORMALIZERS[normalizer](block)))


def iter_file_blocks(path: str | Path, *, errors: str = "strict", block_chars: int = BLOCK_CHARS) -> Iterator[str]:
    """Blocks of about `block_chars`, cut only between a line ending in "<non-space>\n" and a
    line starting with a non-space character.

    subtle: at such a point the lone "\n" is a chunk of its own whether or not the text goes
    on, so blocks count exactly like the whole file. A cut after "  \n" or "\r\n" would not
    be safe: at the end of a block `\\s+(?!\\S)` takes the whole whitespace run, while in the
    whole text it leaves the newline apart.

    A non-UTF-8 byte raises a UserError with its byte offset (or is replaced, errors="replace").
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    buf: list[str] = []
    size = 0
    offset = 0
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8", errors=errors)
            except UnicodeDecodeError as e:
                raise UserError(f"{path}: not valid UTF-8 at byte offset {offset + e.start} (line {lineno}); "
                                "pass --errors replace to replace bad bytes") from None
            offset += len(raw)
            if size >= block_chars and line[:1] and not line[:1].isspace() and _ends_cleanly(buf[-1]):
                yield "".join(buf)
                buf, size = [], 0
            buf.append(line)
            size += len(line)
    if buf:
        yield "".join(buf)


def _ends_cleanly(line: str) -> bool:
    """True for a line ending in a non-space character and a bare "\n"."""
    return len(line) >= 2 and line[-1] == "\n" and not line[-2].isspace()


def count_words(blocks: Iterable[str], *, pre_tokenizer: PreTokenizer, normalizer: str = "none",
                workers: int = 1, progress: Callable[[int], None] | None = None) -> Counter[str]:
    """Unique chunk counts over `blocks`, in up to `workers` processes with a bounded queue."""
    total: Counter[str] = Counter()
    if workers <= 1:
        for block in blocks:
            total.update(count_block(block, pre_tokenizer.pattern, normalizer))
            if progress:
                progress(len(block))
        return total
    with ProcessPoolExecutor(workers) as pool:
        pending: dict[Future[Counter[str]], int] = {}
        for block in blocks:
            pending[pool.submit(count_block, block, pre_tokenizer.pattern, normalizer)] = len(block)
            if len(pending) >= 2 * workers:  # bound memory: at most 2 blocks per worker in flight
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    total.update(fut.result())
                    size = pending.pop(fut)
                    if progress:
                        progress(size)
        for fut in list(pending):
            total.update(fut.result())
            size = pending.pop(fut)
            if progress:
                progress(size)
    return total


def learn_merges(word_counts: dict[str, int], num_merges: int, *, min_frequency: int = 2,
                 on_merge: Callable[[int, int], None] | None = None) -> list[tuple[bytes, bytes]]:
    """The merges, in order, as byte pairs; stops early when no pair occurs `min_frequency` times.

    `on_merge(step, count)` is called after each merge (progress bars, logging).
    """
    words: list[tuple[int, ...]] = []
    freqs: list[int] = []
    for w, c in word_counts.items():
        data = w.encode("utf-8")
        if len(data) > 1:  # a one-byte word has no pairs and never changes
            words.append(tuple(data))
            freqs.append(c)
    pair_counts: defaultdict[tuple[int, int], int] = defaultdict(int)
    where: defaultdict[tuple[int, int], set[int]] = defaultdict(set)
    for wi, (word, f) in enumerate(zip(words, freqs, strict=True)):
        for pair in pairwise(word):
            pair_counts[pair] += f
            where[pair].add(wi)
    heap = [(-c, tie_key(a), tie_key(b), a, b) for (a, b), c in pair_counts.items()]
    heapq.heapify(heap)
    token_bytes = {i: bytes([i]) for i in range(256)}
    merges: list[tuple[bytes, bytes]] = []
    for step in range(num_merges):
        while heap:
            neg, ka, kb, a, b = heapq.heappop(heap)
            count = pair_counts.get((a, b), 0)
            if count == -neg:
                break
            if count > 0:  # stale: push back with its current count
                heapq.heappush(heap, (-count, ka, kb, a, b))
        else:
            break
        if count < max(min_frequency, 1):
            break
        new = 256 + step
        token_bytes[new] = token_bytes[a] + token_bytes[b]
        merges.append((token_bytes[a], token_bytes[b]))
        delta: defaultdict[tuple[int, int], int] = defaultdict(int)
        for wi in where.pop((a, b)):
            old = words[wi]
            merged = tuple(merge_pair(old, (a, b), new))
            if len(merged) == len(old):
                continue  # the index is stale: this word no longer holds the pair
            f = freqs[wi]
            for pair in pairwise(old):
                delta[pair] -= f
            for pair in pairwise(merged):
                delta[pair] += f
                if new in pair:  # other pairs of the new word were pairs of the old one: indexed
                    where[pair].add(wi)
            words[wi] = merged
        for pair, d in delta.items():
            if d:
                pair_counts[pair] += d
                if d > 0:
                    heapq.heappush(heap, (-pair_counts[pair], tie_key(pair[0]), tie_key(pair[1]), *pair))
        pair_counts.pop((a, b), None)
        if on_merge:
            on_merge(step, count)
    return merges


def check_training_args(vocab_size: int, special_tokens: Sequence[str]) -> int:
    """The number of merges, after checking the settings; one-line UserErrors."""
    seen: set[str] = set()
    for s in special_tokens:
        if not s:
            raise UserError("a special token is the empty string")
        if s in seen:
            raise UserError(f"special token {s!r} is given twice")
        seen.add(s)
    floor = 256 + len(special_tokens)
    if vocab_size < floor:
        raise UserError(f"vocab size {vocab_size} is smaller than 256 bytes + {len(special_tokens)} special tokens "
                        f"= {floor}")
    return vocab_size - floor


def train_bpe(texts: Iterable[str] | None = None, *, files: Sequence[str | Path] = (), vocab_size: int,
              min_frequency: int = 2, special_tokens: Sequence[str] = (), pre_tokenizer: str = "gpt2",
              normalizer: str = "none", workers: int | None = None, errors: str = "strict",
              on_merge: Callable[[int, int], None] | None = None,
              on_count: Callable[[int], None] | None = None) -> BPETokenizer:
    """Train a byte-level BPE tokenizer on strings and/or files.

    `vocab_size` counts the 256 bytes, the merges and the special tokens, as HF does.
    """
    num_merges = check_training_args(vocab_size, special_tokens)
    if isinstance(texts, str):  # one text, not an iterable of its characters
        texts = [texts]
    if errors not in ("strict", "replace"):
        raise UserError(f"errors must be 'strict' or 'replace', got {errors!r}")
    pre = PreTokenizer.named(pre_tokenizer)
    if normalizer not in NORMALIZERS:
        raise UserError(f"unknown normalizer {normalizer!r}; choose one of {', '.join(NORMALIZERS)}")

    def blocks() -> Iterator[str]:
        if texts is not None:
            yield from texts
        for path in files:
            yield from iter_file_blocks(path, errors=errors)

    n_workers = workers if workers is not None else (min(os.cpu_count() or 1, 8) if files else 1)
    counts = count_words(blocks(), pre_tokenizer=pre, normalizer=normalizer, workers=n_workers, progress=on_count)
    if not counts:
        raise UserError("the training corpus is empty")
    merges = learn_merges(counts, num_merges, min_frequency=min_frequency, on_merge=on_merge)
    return BPETokenizer.from_merges(merges, special_tokens=special_tokens, pre_tokenizer=pre, normalizer=normalizer)
