"""The interface every llmlab tokenizer shares, and special-token safety.

    tok.encode("hello <|endoftext|>")                    # the special's text is encoded as ordinary text
    tok.encode(text, allowed_special={"<|endoftext|>"})  # ... or as the special token, when allowed
    tok.encode(text, allowed_special="all")
    tok.encode(text, disallowed_special="raise")          # tiktoken's behaviour: a special's text raises

Default: user text never turns into special tokens. Unlike tiktoken we do not raise by
default, because a model should read a pasted "<|endoftext|>" as text, not choke on it;
pass `disallowed_special="raise"` to be told instead. (HF tokenizers always matches
added tokens in the text; llmlab's tokenizer.json files keep that HF behaviour there.)
"""

from __future__ import annotations

import codecs
import pickle
import re
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import regex

from llmlab.errors import UserError

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

AllowedSpecial = Literal["all"] | Iterable[str]


class SpecialTokenError(UserError):
    """The text contains a special token's string that the caller did not allow."""


class Tokenizer(ABC):
    """Shared interface: subclasses implement `_encode_ordinary`, `token_bytes` and the vocabulary."""

    special_tokens: dict[str, int]

    # ------------------------------------------------------------------ to implement

    @abstractmethod
    def _encode_ordinary(self, text: str) -> list[int]:
        """Encode text in which nothing is special (and no lone surrogate: `encode_ordinary` checked)."""

    @abstractmethod
    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of an ordinary token (a UserError for specials and unknown ids)."""

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def token_to_id(self, token: bytes | str) -> int | None: ...

    @abstractmethod
    def save(self, directory: str | Path) -> None: ...

    # ------------------------------------------------------------------ shared

    @property
    def id_count(self) -> int:
        """1 + the highest id the tokenizer can give: the embedding rows a model needs for it
        (the vocabulary size, unless the ids of a loaded file have gaps)."""
        return max([self.vocab_size, *(i + 1 for i in self.special_tokens.values())])

    def id_to_token(self, token_id: int) -> bytes | str:
        """A special token's string, or an ordinary token's bytes."""
        for text, i in self.special_tokens.items():
            if i == token_id:
                return text
        return self.token_bytes(token_id)

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text in which nothing is special."""
        refuse_lone_surrogates(text)
        return self._encode_ordinary(text)

    def encode(self, text: str, *, allowed_special: AllowedSpecial = (),
               disallowed_special: Literal["text", "raise"] = "text") -> list[int]:
        refuse_lone_surrogates(text)
        if allowed_special == () and disallowed_special == "text":  # the default call: nothing to check
            return self._encode_ordinary(text)
        if disallowed_special not in ("text", "raise"):
            raise UserError(f"disallowed_special must be 'text' or 'raise', got {disallowed_special!r}")
        if allowed_special == "all":
            allowed = set(self.special_tokens)
        elif isinstance(allowed_special, str):  # one token, not its characters
            allowed = {allowed_special}
        else:
            allowed = set(allowed_special)
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise SpecialTokenError(f"not special tokens of this tokenizer: {', '.join(sorted(unknown))}")
        if disallowed_special == "raise":
            disallowed = set(self.special_tokens) - allowed
            if disallowed and (m := _specials_regex(tuple(sorted(disallowed))).search(text)):
                raise SpecialTokenError(
                    f"text contains the special token {m.group()!r} at character {m.start()}; pass it in "
                    "allowed_special to encode it as special, or disallowed_special='text' to encode it as text")
        if not allowed:
            return self._encode_ordinary(text)
        ids: list[int] = []
        start = 0
        for m in _specials_regex(tuple(sorted(allowed))).finditer(text):
            ids += self._encode_ordinary(text[start:m.start()]) if start == 0 else self._encode_after_special(
                text[start:m.start()])
            ids.append(self.special_tokens[m.group()])
            start = m.end()
        ids += self._encode_ordinary(text[start:]) if start == 0 else self._encode_after_special(text[start:])
        return ids

    def _encode_after_special(self, text: str) -> list[int]:
        """Encode text that follows a special token; the same as at the start, unless a tokenizer
        treats the start of the text apart (Metaspace prepend_scheme "first": sp_bpe.py)."""
        return self._encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str], *, num_workers: int | None = None, **kwargs) -> list[list[int]]:
        """Encode many texts; with more than one worker, in processes.

        The worker processes are started on the first parallel call and kept for the tokenizer's
        lifetime (shut down when it is garbage-collected or the interpreter exits): each got the
        tokenizer once (pool initializer) and keeps its chunk cache warm from call to call, so a
        second call costs only shipping the texts and the ids. Each call cuts the texts into a few
        contiguous slices per worker, taken by whichever worker is free, so a worker that drew cheap
        texts does not wait for the other. A tokenizer is not meant to change once it encodes: the
        workers keep the copy they were given.
        """
        import os

        workers = num_workers if num_workers is not None else (os.cpu_count() or 1)
        if workers <= 1 or len(texts) < 2 * workers:
            return [self.encode(t, **kwargs) for t in texts]
        size = -(-len(texts) // (workers * _SLICES_PER_WORKER))
        slices = [(list(texts[i:i + size]), kwargs) for i in range(0, len(texts), size)]
        return [ids for part in _worker_pool(self, workers).map(_encode_slice, slices) for ids in part]

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        out = bytearray()
        specials = {i: t.encode("utf-8") for t, i in self.special_tokens.items()}
        for i in ids:
            special = specials.get(i)
            out += special if special is not None else self.token_bytes(i)
        return bytes(out)

    def decode(self, ids: Iterable[int], *, errors: str = "replace") -> str:
        """Text of `ids`; bytes that do not form complete UTF-8 characters become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # in a str, any surrogate code point is a lone one


def refuse_lone_surrogates(text: str) -> None:
    """A UserError for text that holds a lone surrogate ("a\\ud800b"): it has no UTF-8 bytes, so no
    tokenizer can encode it (HF `tokenizers` refuses it too), and BERT's normalizer would drop it silently.
    Such text comes from bytes decoded with errors="surrogateescape" or from broken JSON escapes."""
    if not text.isascii() and (m := _LONE_SURROGATE.search(text)):
        raise UserError(f"text holds the lone surrogate {m.group()!r} at character {m.start()}: "
                        "lone surrogates have no UTF-8 form, so they cannot be encoded")


_WORKER_TOKENIZER: Tokenizer | None = None  # set once per encode_batch worker process
_SLICES_PER_WORKER = 4  # several slices each, so a worker that gets the cheap texts takes the next slice
_POOLS: dict[int, tuple[int, ProcessPoolExecutor]] = {}  # id(tokenizer) -> (workers, its pool)


def _worker_pool(tok: Tokenizer, workers: int) -> ProcessPoolExecutor:
    """`tok`'s persistent pool of `workers` processes (a new one when the count changes)."""
    from concurrent.futures import ProcessPoolExecutor  # here: light commands never start processes

    key = id(tok)
    entry = _POOLS.get(key)
    if entry is not None and entry[0] == workers:
        return entry[1]
    if entry is None:  # first pool of this tokenizer: close it with the tokenizer, or at exit
        weakref.finalize(tok, _close_pool, key)
    else:
        entry[1].shutdown(wait=False, cancel_futures=True)
    # subtle: the tokenizer goes to the workers pickled, because a pool keeps its initargs: holding `tok`
    # itself would keep it (and so the pool) alive forever
    pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(pickle.dumps(tok),))
    _POOLS[key] = (workers, pool)
    return pool


def _close_pool(key: int) -> None:
    entry = _POOLS.pop(key, None)
    if entry is not None:
        entry[1].shutdown(wait=True, cancel_futures=True)


def _init_worker(data: bytes) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = pickle.loads(data)  # our own bytes, pickled by `_worker_pool` in the parent


def _encode_slice(job: tuple[list[str], dict]) -> list[list[int]]:
    texts, kwargs = job
    assert _WORKER_TOKENIZER is not None
    return [_WORKER_TOKENIZER.encode(t, **kwargs) for t in texts]


_SPECIAL_REGEX_CACHE: dict[tuple[str, ...], regex.Pattern[str]] = {}


def _specials_regex(specials: tuple[str, ...]) -> regex.Pattern[str]:
    """Alternation of the specials, longest first so "<|im_start|>" wins over a prefix of it."""
    pattern = _SPECIAL_REGEX_CACHE.get(specials)
    if pattern is None:
        ordered = sorted(specials, key=len, reverse=True)
        pattern = _SPECIAL_REGEX_CACHE[specials] = regex.compile("|".join(regex.escape(s) for s in ordered))
    return pattern


class StreamDecoder:
    """Feed ids one at a time; get text only once its UTF-8 characters are complete.

    >>> dec = tok.stream_decoder(); [dec.push(i) for i in tok.encode("é")]   # e.g. ['', 'é']
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._utf8.decode(self._tokenizer.decode_bytes([token_id]))

    def flush(self) -> str:
        """What is left at the end (an incomplete character becomes U+FFFD)."""
        return self._utf8.decode(b"", final=True)

    def __call__(self, ids: Iterable[int]) -> Iterator[str]:
        for i in ids:
            if text := self.push(i):
                yield text
        if text := self.flush():
            yield text


class PrefixStreamDecoder(StreamDecoder):
    """Streams like the base decoder, dropping the space of a dummy prefix ("▁" in front of the text,
    SentencePiece-style) before the first token only: `decode_bytes` of each token alone would drop it
    from every token."""

    def __init__(self, tokenizer: Tokenizer, *, strip_first_space: bool) -> None:
        super().__init__(tokenizer)
        self._first = strip_first_space

    def push(self, token_id: int) -> str:
        data = Tokenizer.decode_bytes(self._tokenizer, [token_id])
        if self._first and data:
            self._first = False
            data = data[1:] if data.startswith(b" ") else data
        return self._utf8.decode(data)
