"""Byte-level BPE: the tokenizer (encoder and decoder) for a list of merges.

Text goes through the HF pipeline order, each stage testable alone:

    normalizer (normalizers.py) -> pre-tokenizer (pre_tokenizers.py) -> BPE per chunk -> ids
    ids -> bytes of each token -> UTF-8 (decoder; incomplete characters -> U+FFFD)

Encoding a chunk: start from its UTF-8 bytes, then repeatedly merge the adjacent pair
with the lowest merge rank, every occurrence left to right, until no pair has a rank:

    merges: (h,e)->he rank 0, (l,l)->ll rank 1, (he,ll)->hell rank 2
    "hello": h e l l o -> he l l o -> he ll o -> hell o

Chunks repeat a lot in natural text, so their ids are cached.

Token ids of a trained llmlab tokenizer follow tiktoken's layout: 0..255 are the bytes,
256.. the merges in order, then the special tokens. Tokenizers loaded from an HF file
keep that file's ids; nothing here assumes the layout.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

from llmlab.errors import UserError
from llmlab.files import write_json_atomic, write_text_atomic
from llmlab.tokenizers import fastbpe
from llmlab.tokenizers.added_tokens import added_token
from llmlab.tokenizers.base import Tokenizer
from llmlab.tokenizers.bytelevel import to_chars, visible
from llmlab.tokenizers.normalizers import HF_NORMALIZER_TYPES, NORMALIZERS
from llmlab.tokenizers.pre_tokenizers import PreTokenizer
from llmlab.tokenizers.regex_engines import warn_engine_differences
from llmlab.tokenizers.tiktoken_io import to_tiktoken

_CACHE_LIMIT = 1 << 20  # chunks; the cache is cleared when it grows past this
_PLAIN_CALL = {"allowed_special": (), "disallowed_special": "text"}  # encode's defaults: no special tokens

# tokenizer.json steps that `save` writes and hf_io.py reads back (hf_io.py describes the format):
# "a space before the text unless it starts with one", as an HF pre-tokenizer step
HF_PREFIX_SPACE = {"type": "Metaspace", "replacement": " ", "prepend_scheme": "always", "split": False}
HF_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}


T = TypeVar("T")


def merge_pair(items: Sequence[T], pair: tuple[T, T], new: T) -> list[T]:
    """Every occurrence of the adjacent `pair`, left to right, replaced by `new`.

    >>> merge_pair([1, 2, 3, 1, 2], (1, 2), 4)
    [4, 3, 4]
    >>> merge_pair("aaa", ("a", "a"), "A")   # overlapping: the left one wins
    ['A', 'a']
    """
    a, b = pair
    out: list[T] = []
    i, n = 0, len(items)
    while i < n:
        if i < n - 1 and items[i] == a and items[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(items[i])
            i += 1
    return out


class BPETokenizer(Tokenizer):
    def __init__(self, vocab: Mapping[bytes, int], merges: Sequence[tuple[bytes, bytes]], *,
                 special_tokens: Mapping[str, int] | None = None, pre_tokenizer: PreTokenizer | None = None,
                 normalizer: str = "none", add_prefix_space: bool = False, ignore_merges: bool = False) -> None:
        """`vocab` maps every ordinary token's bytes to its id; it must hold all 256 single bytes.

        `add_prefix_space` and `ignore_merges` reproduce HF options of files we load: a space
        put before the text (GPT-2/RoBERTa style), and a chunk that is itself a token taking
        that token without merging (Llama 3 style).
        """
        self.vocab = dict(vocab)
        self.merges = list(merges)
        self.special_tokens = dict(special_tokens or {})
        self.pre_tokenizer = pre_tokenizer or PreTokenizer.named("gpt2")
        if normalizer not in NORMALIZERS:
            raise UserError(f"unknown normalizer {normalizer!r}; choose one of {', '.join(NORMALIZERS)}")
        self.normalizer = normalizer
        self.add_prefix_space = add_prefix_space
        self.ignore_merges = ignore_merges
        self._check()
        self._id_to_bytes = {i: b for b, i in self.vocab.items()}
        self._byte_ids = [self.vocab[bytes([b])] for b in range(256)]
        self._ranks = self._rank_table()
        self._normalize = NORMALIZERS[normalizer]
        self._cache: dict[str, list[int]] = {}
        self._use_c = fastbpe.available()  # decided once: LLMLAB_PURE_PYTHON=1 when the tokenizer is made
        self._spec = fastbpe.SPECS.get(self.pre_tokenizer.pattern)  # the C scanner's, or None: split by regex
        self._engine: Any = None  # the first C encoder (_engine_here)
        self._local = threading.local()  # this thread's C encoder
        self._pool: tuple[int, Any] | None = None  # encode_batch's threads: (count, executor)
        self._engine_here()  # made now, as tiktoken makes its encoder with the Encoding: not in the first encode

    @classmethod
    def from_merges(cls, merges: Sequence[tuple[bytes, bytes]], *, special_tokens: Sequence[str] = (),
                    **kwargs: Any) -> BPETokenizer:
        """The tiktoken layout: bytes are ids 0..255, merge i makes id 256 + i, specials follow."""
        vocab = {bytes([b]): b for b in range(256)}
        for a, b in merges:
            vocab[a + b] = len(vocab)
        specials = {s: len(vocab) + i for i, s in enumerate(special_tokens)}
        return cls(vocab, merges, special_tokens=specials, **kwargs)

    def _check(self) -> None:
        missing = [b for b in range(256) if bytes([b]) not in self.vocab]
        if missing:
            raise UserError(f"byte-level BPE needs all 256 bytes in the vocabulary; missing {len(missing)}, "
                            f"e.g. byte 0x{missing[0]:02X}")
        ids = list(self.vocab.values()) + list(self.special_tokens.values())
        if len(set(ids)) != len(ids):
            raise UserError("two tokens share one id")
        for s in self.special_tokens:
            if not s:
                raise UserError("a special token is the empty string")

    def _rank_table(self) -> dict[tuple[int, int], tuple[int, int]]:
        """(left id, right id) -> (rank, merged id); a merge whose tokens are not all in the vocabulary is
        a UserError naming it."""
        vocab = self.vocab
        try:
            return {(vocab[a], vocab[b]): (rank, vocab[a + b]) for rank, (a, b) in enumerate(self.merges)}
        except KeyError:
            rank, a, b, part = next((rank, a, b, part) for rank, (a, b) in enumerate(self.merges)
                                    for part in (a, b, a + b) if part not in vocab)
            raise UserError(f"merge {rank} ({a!r}, {b!r}): token {part!r} is not in the vocabulary") from None

    # ------------------------------------------------------------------ encoding

    def _prepare(self, text: str) -> str:
        text = self._normalize(text)
        if self.add_prefix_space and text and not text.startswith(" "):
            text = " " + text
        return text

    def _encode_ordinary(self, text: str) -> list[int]:
        text = self._prepare(text)
        if (engine := self._engine_here()) is not None:
            try:
                if self._spec is not None:
                    return engine.encode(text, self._spec)
                return engine.encode_chunks(self.pre_tokenizer.split(text))
            except ValueError:  # a lone surrogate: the Python path below names it
                pass
        return self._encode_python(text)

    def _engine_here(self) -> Any:
        """This thread's C encoder (fastbpe.py); None where it is not built or is switched off. Threads
        share its tables but not its cache: each makes a fork of the first on its first encode."""
        engine = getattr(self._local, "engine", None)
        if engine is None and self._use_c:
            if self._engine is None:
                engine = self._engine = fastbpe.engine(self._byte_ids, self._ranks,
                                                       self.vocab if self.ignore_merges else None, _CACHE_LIMIT)
            else:
                engine = self._engine.fork()
            self._local.engine = engine
        return engine

    @property
    def cached_chunks(self) -> int:
        """How many chunks this thread's encode cache holds (the C encoder's, or the Python path's)."""
        engine = getattr(self._local, "engine", None)
        return engine.cache_len if engine is not None else len(self._cache)

    def clear_cache(self) -> None:
        self._cache.clear()
        if (engine := getattr(self._local, "engine", None)) is not None:
            engine.clear_cache()

    def encode_batch(self, texts: Sequence[str], *, num_workers: int | None = None, **kwargs: Any) -> list[list[int]]:
        """Encode many texts; with the C encoder and a pattern it scans itself, in threads.

        The C encoder releases the GIL while it scans and merges, so threads run in parallel without
        shipping texts and ids between processes. The threads are kept for the tokenizer's lifetime,
        each with its own warm chunk cache. Otherwise: processes (Tokenizer.encode_batch).
        """
        import os

        if self._spec is None or self._engine_here() is None:
            return super().encode_batch(texts, num_workers=num_workers, **kwargs)
        workers = num_workers if num_workers is not None else (os.cpu_count() or 1)
        if workers <= 1 or len(texts) < 2 * workers:
            return self._encode_slice(texts, kwargs)
        size = -(-len(texts) // (workers * 4))  # a few slices per thread: one that drew cheap texts takes more
        slices = [texts[i:i + size] for i in range(0, len(texts), size)]
        return [ids for part in self._thread_pool(workers).map(lambda s: self._encode_slice(s, kwargs), slices)
                for ids in part]

    def _encode_slice(self, texts: Sequence[str], kwargs: dict[str, Any]) -> list[list[int]]:
        """encode() of each text; in one C call (one GIL release for all) when nothing is special."""
        if {**_PLAIN_CALL, **kwargs} == _PLAIN_CALL:
            try:
                return self._engine_here().encode_many([self._prepare(t) for t in texts], self._spec)
            except ValueError:  # a lone surrogate: encode() below names it
                pass
        return [self.encode(t, **kwargs) for t in texts]

    def _thread_pool(self, workers: int) -> Any:
        from concurrent.futures import ThreadPoolExecutor

        if self._pool is None or self._pool[0] != workers:
            if self._pool is not None:
                self._pool[1].shutdown(wait=False)
            pool = ThreadPoolExecutor(workers, thread_name_prefix="llmlab-bpe")
            weakref.finalize(self, pool.shutdown, wait=False)  # the threads go with the tokenizer
            self._pool = (workers, pool)
        return self._pool[1]

    def _encode_python(self, text: str) -> list[int]:
        """The oracle of the C encoder: split with `regex`, BPE per chunk, a dict as the cache."""
        ids: list[int] = []
        cache = self._cache
        for chunk in self.pre_tokenizer.split(text):
            cached = cache.get(chunk)
            if cached is None:
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cached = cache[chunk] = self._encode_chunk(chunk)
            ids += cached
        return ids

    def _encode_chunk(self, chunk: str) -> list[int]:
        try:
            data = chunk.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate: no UTF-8 bytes exist for it
            raise UserError(f"cannot encode {chunk[e.start:e.end]!r} at character {e.start} of a chunk: "
                            "lone surrogates have no UTF-8 form") from None
        if self.ignore_merges and (whole := self.vocab.get(data)) is not None:
            return [whole]
        return self.encode_bytes(data)

    def encode_bytes(self, data: bytes) -> list[int]:
        """Plain BPE on bytes: merge the lowest-ranked adjacent pair, everywhere, until none has a rank."""
        ids = [self._byte_ids[b] for b in data]
        ranks = self._ranks
        while len(ids) > 1:
            best = None
            best_rank = len(self.merges)  # above every rank, also when a pair is listed twice
            for pair in pairwise(ids):
                found = ranks.get(pair)
                if found is not None and found[0] < best_rank:
                    best_rank, best = found[0], pair
            if best is None:
                break
            ids = merge_pair(ids, best, ranks[best][1])
        return ids

    # ------------------------------------------------------------------ vocabulary

    def token_bytes(self, token_id: int) -> bytes:
        try:
            return self._id_to_bytes[token_id]
        except KeyError:
            raise UserError(f"token id {token_id} is not in the vocabulary (size {self.vocab_size})") from None

    def token_to_id(self, token: bytes | str) -> int | None:
        if isinstance(token, str):
            if token in self.special_tokens:
                return self.special_tokens[token]
            token = token.encode("utf-8")
        return self.vocab.get(token)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab) + len(self.special_tokens)

    @property
    def id_count(self) -> int:
        return 1 + max([*self.vocab.values(), *self.special_tokens.values()])

    def merge_rank(self, token_id: int) -> int | None:
        """Which merge made this token (None for single bytes and specials)."""
        return self._merge_rank_of.get(token_id)

    @property
    def _merge_rank_of(self) -> dict[int, int]:
        if not hasattr(self, "_merge_rank_cache"):
            self._merge_rank_cache = {new: rank for rank, new in self._ranks.values()}
        return self._merge_rank_cache

    # ------------------------------------------------------------------ files

    def save(self, directory: str | Path) -> None:
        """`tokenizer.json` (HF format, loadable by `tokenizers` and `transformers`) and `vocab.txt`,
        each written atomically into `directory`; with a warning if HF's regex engine reads the split
        pattern differently (regex_engines.py)."""
        directory = Path(directory)
        warn_engine_differences(self.pre_tokenizer.pattern, f"written to {directory / 'tokenizer.json'}")
        write_json_atomic(directory / "tokenizer.json", self.to_hf_json())
        write_text_atomic(directory / "vocab.txt", self.vocab_listing())

    def to_hf_json(self) -> dict[str, Any]:
        """The tokenizer.json object, with HF's field set and field order (read back by hf_io.py)."""
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [added_token(text, i) for text, i in sorted(self.special_tokens.items(), key=lambda t: t[1])],
            "normalizer": None if self.normalizer == "none" else {"type": HF_NORMALIZER_TYPES[self.normalizer]},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                *([dict(HF_PREFIX_SPACE)] if self.add_prefix_space else []),
                {"type": "Split", "pattern": {"Regex": self.pre_tokenizer.pattern}, "behavior": "Isolated",
                 "invert": False},
                {**HF_BYTE_LEVEL, "add_prefix_space": False, "use_regex": False},
            ]},
            "post_processor": None,
            "decoder": dict(HF_BYTE_LEVEL),
            "model": {
                "type": "BPE",
                "dropout": None,
                "unk_token": None,
                "continuing_subword_prefix": None,
                "end_of_word_suffix": None,
                "fuse_unk": False,
                "byte_fallback": False,
                "ignore_merges": self.ignore_merges,
                "vocab": {to_chars(b): i for b, i in sorted(self.vocab.items(), key=lambda t: t[1])},
                "merges": [[to_chars(a), to_chars(b)] for a, b in self.merges],
            },
        }

    def vocab_listing(self) -> str:
        """vocab.txt: one line per token, by id: `id<TAB>visible token<TAB>merge rank | - | special`.

            0   <0x00>          -        a byte: no merge made it
            32  ␣               -
            256 ␣t              0        made by merge 0
            999 <|endoftext|>   special
        """
        rows: list[tuple[int, str, str]] = []
        for token, i in self.vocab.items():
            rank = self.merge_rank(i)
            rows.append((i, visible(token), "-" if rank is None else str(rank)))
        for text, i in self.special_tokens.items():
            rows.append((i, visible(text.encode("utf-8")), "special"))
        rows.sort()
        return "".join(f"{i}\t{token}\t{rank}\n" for i, token, rank in rows)

    def to_tiktoken(self, name: str = "llmlab") -> Any:
        """A `tiktoken.Encoding` with the same pattern, merges and specials (needs ids in merge order)."""
        return to_tiktoken(self, name)

    def __getstate__(self) -> dict[str, Any]:  # for encode_batch's worker processes: no cache
        state = dict(self.__dict__)
        state["_cache"] = {}
        state.update(_engine=None, _local=None, _pool=None)  # C state and threads: each process makes its own
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()
