"""SentencePiece-style BPE (Llama 2, Mistral v1): pieces with "▁" for spaces, byte fallback, no byte-level alphabet.

Two readers, two merge orders, one encoder:

    SentencePiece `.model` (model_type BPE): no merge list. Each character starts as a symbol;
        repeatedly, of all adjacent pairs whose concatenation is a piece, the one whose piece has the
        highest score merges (ties: the leftmost). `SentencePieceProcessor` is the reference.
    HF tokenizer.json (model.type BPE, byte_fallback true): `model.merges` in rank order; of all
        adjacent pairs in the list, the lowest rank merges (ties: the leftmost). HF `tokenizers` is
        the reference.

    pieces ▁t: -1  ▁th: -2  ▁the: -3  he: -4      "the" -> "▁the" -> ▁ t h e -> ▁t h e -> ▁th e -> ▁the

Characters that are no piece: with byte fallback, their UTF-8 bytes as the pieces <0x00>..<0xFF>;
without, the unknown piece, one per run of unknown characters (SentencePiece always, HF with `fuse_unk`). SentencePiece applies the fallback after
merging, HF before; both give the same ids, since no piece holds a character that is no piece.

The text is the normalised, "▁"-escaped text (sp_text.SentencePieceNormalizer for .model files,
sp_hf.HFTextPipeline for tokenizer.json). It is encoded word by word, words cut before each run of
"▁", with a cache: exact whenever no piece has "▁" after another character (checked; otherwise the
text is encoded whole), since then no merge crosses a cut and merges on either side do not interact.
For `.model` files the merges run in C where `_fastunigram` is built (fastunigram.score_bpe); this
module's Python path stays its oracle.

Decoding: .model files as SentencePiece decodes (sp_text.sp_decode: " ⁇ " for the unknown piece,
control pieces dropped, the first piece's "▁"); tokenizer.json files as HF's decoder Sequence
[Replace("▁", " "), ByteFallback, Fuse, Strip(" ", 1, 0)] does, each byte of malformed UTF-8 one U+FFFD.
Left out: user-defined pieces, BPE dropout, added tokens that are not special (`normalized` ones).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import regex

from llmlab.errors import UserError
from llmlab.files import write_json_atomic
from llmlab.tokenizers import fastunigram
from llmlab.tokenizers.added_tokens import read_added_tokens
from llmlab.tokenizers.base import PrefixStreamDecoder, StreamDecoder, Tokenizer
from llmlab.tokenizers.sp_hf import read_pipeline
from llmlab.tokenizers.sp_model import BYTE, CONTROL, UNKNOWN, UNUSED, SentencePieceModel
from llmlab.tokenizers.sp_text import SPACE, cut_words, cuts_are_exact, sp_decode
from llmlab.tokenizers.unigram import byte_piece

_CACHE_LIMIT = 1 << 20
_BYTE_PIECE = regex.compile("<0x([0-9A-F]{2})>")


class SentencePieceBPE(Tokenizer):
    def __init__(self, pieces: Sequence[str], *, normalizer: Callable[[str], str], unk_id: int | None,
                 byte_fallback: bool, special_tokens: Mapping[str, int], scores: Sequence[float] | None = None,
                 merges: Sequence[tuple[str, str]] | None = None, unused: Iterable[int] = (),
                 byte_ids: Mapping[int, int] | None = None, sentencepiece_decode: bool = False,
                 strip_first_space: bool = True, strip_all_leading: bool = False, fuse_unk: bool = True,
                 source: dict[str, Any] | None = None) -> None:
        """`pieces[id]` for every id; exactly one of `scores` (SentencePiece's order) and `merges` (HF's).

        `byte_ids`: byte piece id -> byte (default: the pieces "<0xNN>"). `special_tokens` are never
        matched in the text. `source`: the tokenizer.json this was read from, which `save` writes back.
        """
        if (scores is None) == (merges is None):
            raise UserError("SentencePieceBPE needs exactly one of scores= and merges=")
        self.pieces = list(pieces)
        self.special_tokens = dict(special_tokens)
        self.unk_id = unk_id
        self.byte_fallback = byte_fallback
        self.sentencepiece_decode = sentencepiece_decode
        self.strip_first_space = strip_first_space
        self.strip_all_leading = strip_all_leading  # sentencepiece_decode with remove_extra_whitespaces
        self.fuse_unk = fuse_unk
        self.normalizer = normalizer
        self.source = source
        self._unused = frozenset(unused)
        if byte_ids is None:
            byte_ids = {i: int(m.group(1), 16) for i, p in enumerate(self.pieces) if (m := _BYTE_PIECE.fullmatch(p))}
        self._byte_of = dict(byte_ids)
        by_byte = {b: i for i, b in self._byte_of.items()}
        if byte_fallback and len(by_byte) < 256:
            missing = next(b for b in range(256) if b not in by_byte)
            raise UserError(f"byte_fallback needs the pieces <0x00>..<0xFF>; {byte_piece(missing)} is missing")
        self._byte_ids = [by_byte.get(b, -1) for b in range(256)]
        skip = set(self.special_tokens.values()) | set(self._byte_of)
        # piece -> id of what the text can produce (SentencePiece: normal and unused pieces)
        self.vocab = {p: i for i, p in enumerate(self.pieces) if i not in skip}
        if len(self.vocab) != len(self.pieces) - len(skip & set(range(len(self.pieces)))):
            raise UserError("two pieces are the same string")
        self._scores = None if scores is None else [float(s) for s in scores]
        self._ranks: dict[tuple[str, str], int] = {}
        if merges is not None:
            for rank, (a, b) in enumerate(merges):
                if a + b not in self.vocab:
                    raise UserError(f"model.merges[{rank}]: {a + b!r} is not in model.vocab")
                self._ranks.setdefault((a, b), rank)
        # HF: the symbols after the fallback, byte pieces and the unknown piece included
        self._symbol_ids = self.vocab | {self.pieces[i]: i for i in self._byte_of}
        if unk_id is not None:
            self._symbol_ids[self.pieces[unk_id]] = unk_id
        self._split = cuts_are_exact(self.vocab)
        self._cache: dict[str, tuple[int, ...]] = {}  # tuples: ints only, so the garbage collector drops them
        self._engine: Any = None  # .model files: the C merges (fastunigram.py), made on first use; False if none

    # ------------------------------------------------------------------ encoding

    def normalize(self, text: str) -> str:
        """The escaped text that the merges run on."""
        return self.normalizer(text)

    def _encode_ordinary(self, text: str) -> list[int]:
        return self._encode_normalized(self.normalizer(text))

    def _encode_after_special(self, text: str) -> list[int]:
        """HF's Metaspace with prepend_scheme "first" puts no "▁" in front of text after a special token."""
        if not getattr(self.normalizer, "first_only", False):
            return self._encode_ordinary(text)
        return self._encode_normalized(self.normalizer(text, at_start=False))  # type: ignore[call-arg]

    def _encode_normalized(self, normalized: str) -> list[int]:
        if (engine := self._engine_here()) is not None:
            try:
                return self._fuse(engine.encode_text(normalized) if self._split else engine.encode_word(normalized))
            except ValueError:  # a lone surrogate, an unknown character without an unknown piece (the Python
                pass  # path below names them), or the engine busy in another thread
        if not self._split:
            return self._fuse(self._encode_word(normalized))
        ids: list[int] = []
        cache = self._cache
        for word in cut_words(normalized):
            hit = cache.get(word)
            if hit is None:
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                hit = cache[word] = tuple(self._encode_word(word))
            ids += hit
        return self._fuse(ids)

    def _engine_here(self) -> Any:
        """The C merges by score sharing this tokenizer's cache, made on first use; None for HF's merge
        lists, or where it is not built or is switched off (LLMLAB_PURE_PYTHON=1 at the first encode)."""
        engine = self._engine
        if engine is None:
            engine = self._engine = self._scores is not None and fastunigram.available() and fastunigram.score_bpe(
                self.vocab, scores=self._scores, unused=self._unused, unk_id=self.unk_id,
                byte_ids=self._byte_ids if self.byte_fallback else [], n_ids=len(self.pieces),
                cache_limit=_CACHE_LIMIT, cache=self._cache)
        return engine or None

    def _fuse(self, ids: list[int]) -> list[int]:
        """One unknown per run of them, over the whole text (words are cut, runs are not): HF's
        fuse_unk, and what SentencePiece always does without byte fallback."""
        if self.byte_fallback or not self.fuse_unk or self.unk_id is None:
            return ids
        unk = self.unk_id
        return [i for n, i in enumerate(ids) if i != unk or n == 0 or ids[n - 1] != unk]

    def _encode_word(self, word: str) -> list[int]:
        if self._scores is not None:
            rev: dict[str, tuple[str, str]] = {}  # unused piece -> the pair it was last merged from
            return [i for piece in self._merge(list(word), rev) for i in self._piece_ids(piece, rev)]
        symbols: list[str] = []
        for c in word:  # HF: the fallback comes first, on characters
            if c in self.vocab:
                symbols.append(c)
            elif self.byte_fallback:
                symbols += [self.pieces[self._byte_ids[b]] for b in c.encode("utf-8")]
            elif self.unk_id is None:
                raise UserError(f"cannot encode {c!r}: it is no piece and the model has no unknown token")
            else:
                symbols.append(self.pieces[self.unk_id])
        ids = self._symbol_ids
        return [ids[s] for s in self._merge(symbols, {})]

    def _priority(self, left: str, right: str, rev: dict[str, tuple[str, str]]) -> float | None:
        """The merge key of a pair (smaller first), or None when it does not merge. SentencePiece
        records the pair of an unused piece (`rev`), to split it back after merging."""
        if self._scores is None:
            return self._ranks.get((left, right))
        i = self.vocab.get(left + right)
        if i is None:
            return None
        if i in self._unused:
            rev[left + right] = (left, right)
        return -self._scores[i]

    def _merge(self, symbols: list[str], rev: dict[str, tuple[str, str]]) -> list[str]:
        """Merge the best pair, then the next... (a heap of pairs; stale entries are skipped)."""
        n = len(symbols)
        if n < 2:
            return symbols
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        prev = list(range(-1, n - 1))
        heap: list[tuple[float, int, int, int]] = []

        def push(left: int, right: int) -> None:
            if left >= 0 and right >= 0:
                key = self._priority(symbols[left], symbols[right], rev)
                if key is not None:
                    heapq.heappush(heap, (key, left, right, len(symbols[left]) + len(symbols[right])))

        for i in range(n - 1):
            push(i, i + 1)
        while heap:
            _, left, right, size = heapq.heappop(heap)
            a, b = symbols[left], symbols[right]
            if not a or not b or len(a) + len(b) != size or nxt[left] != right:
                continue
            symbols[left] = a + b
            symbols[right] = ""
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prev[nxt[right]] = left
            push(prev[left], left)
            push(left, nxt[left])
        return [s for s in symbols if s]

    def _piece_ids(self, piece: str, rev: dict[str, tuple[str, str]]) -> list[int]:
        """SentencePiece: a merged symbol's id; an unused piece split back into its pair; an unknown
        character as its bytes (byte fallback) or the unknown piece."""
        i = self.vocab.get(piece)
        if i is not None and i not in self._unused:
            return [i]
        if i is not None:  # unused: split back, unless it was never merged (a single character)
            pair = rev.get(piece)
            return [i] if pair is None else self._piece_ids(pair[0], rev) + self._piece_ids(pair[1], rev)
        if self.byte_fallback:
            return [self._byte_ids[b] for b in piece.encode("utf-8")]
        if self.unk_id is None:
            raise UserError(f"cannot encode {piece!r}: it is no piece and the model has no unknown piece")
        return [self.unk_id]

    # ------------------------------------------------------------------ vocabulary and decoding

    def token_bytes(self, token_id: int) -> bytes:
        b = self._byte_of.get(token_id)
        if b is not None:
            return bytes([b])
        if not (0 <= token_id < len(self.pieces)) or token_id in self.special_tokens.values():
            raise UserError(f"token id {token_id} is not an ordinary piece (vocabulary size {self.vocab_size})")
        return self.pieces[token_id].replace(SPACE, " ").encode("utf-8")

    def token_to_id(self, token: bytes | str) -> int | None:
        if isinstance(token, bytes):
            token = token.decode("utf-8", errors="replace").replace(" ", SPACE)
        if token in self.special_tokens:
            return self.special_tokens[token]
        return self.vocab.get(token)

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        data = super().decode_bytes(ids)
        return data[1:] if self.strip_first_space and data.startswith(b" ") else data

    def stream_decoder(self) -> StreamDecoder:
        return PrefixStreamDecoder(self, strip_first_space=self.strip_first_space)

    def decode(self, ids: Iterable[int], *, errors: str = "replace") -> str:
        """As the reference library decodes (see the module docstring)."""
        if self.sentencepiece_decode:
            controls = frozenset(self.special_tokens.values()) - {self.unk_id}
            return sp_decode(ids, self.pieces, controls=controls, unknown=-1 if self.unk_id is None else self.unk_id,
                             byte_of=self._byte_of, strip_first_space=self.strip_first_space,
                             strip_all_leading=self.strip_all_leading)
        text = sp_decode(ids, self.pieces, controls=frozenset(), unknown=-2, byte_of=self._byte_of,
                         strip_first_space=False)
        return text.removeprefix(" ") if self.strip_first_space else text

    # ------------------------------------------------------------------ files

    def save(self, directory: str | Path) -> None:
        """The tokenizer.json this tokenizer was read from, written back atomically."""
        if self.source is None:
            raise UserError("a SentencePiece .model BPE is saved by sentencepiece itself; llmlab writes back "
                            "only the tokenizer.json files it read")
        write_json_atomic(Path(directory) / "tokenizer.json", self.source)

    def __getstate__(self) -> dict[str, Any]:  # for encode_batch's worker processes: no cache
        state = dict(self.__dict__)
        state["_cache"] = {}
        state["_engine"] = None  # C state: each copy makes its own, over its own cache
        return state


# ---------------------------------------------------------------------- readers


def from_sentencepiece(model: SentencePieceModel) -> SentencePieceBPE:
    """The BPE of a read `.model` file (sp_model.read_model), encoding and decoding as sentencepiece."""
    model.check("BPE")
    specials = {p: i for i, ((p, _), t) in enumerate(zip(model.pieces, model.types, strict=True))
                if t in (UNKNOWN, CONTROL)}
    byte_ids = {}
    for i, ((p, _), t) in enumerate(zip(model.pieces, model.types, strict=True)):
        if t == BYTE:
            m = _BYTE_PIECE.fullmatch(p)
            if m is None:
                raise UserError(f"SentencePiece byte piece {i} is {p!r}, not <0xNN>")
            byte_ids[i] = int(m.group(1), 16)
    norm = model.normalizer
    return SentencePieceBPE([p for p, _ in model.pieces], scores=[s for _, s in model.pieces],
                            normalizer=norm, unk_id=model.unk_id, byte_fallback=model.byte_fallback,
                            special_tokens=specials, unused=[i for i, t in enumerate(model.types) if t == UNUSED],
                            byte_ids=byte_ids, sentencepiece_decode=True,
                            strip_first_space=norm.add_dummy_prefix or norm.remove_extra_whitespaces,
                            strip_all_leading=norm.remove_extra_whitespaces)


def from_hf_json(data: dict[str, Any]) -> SentencePieceBPE:
    """A SentencePiece-style BPE from a parsed tokenizer.json (model.type BPE, byte_fallback true, "▁" pieces)."""
    model = data.get("model")
    if not (isinstance(model, dict) and model.get("type", "BPE") == "BPE"):
        raise UserError("model.type: not 'BPE'")
    vocab = model.get("vocab")
    if not (isinstance(vocab, dict) and all(isinstance(i, int) for i in vocab.values())):
        raise UserError("model.vocab: must map tokens to integer ids")
    if model.get("byte_fallback") and not all(byte_piece(b) in vocab for b in range(256)):
        raise UserError("model.byte_fallback: true, but model.vocab lacks some of the byte pieces <0x00>..<0xFF> "
                        "that SentencePiece-style BPE falls back to")
    for field in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(field):
            raise UserError(f"model.{field}: {model[field]!r} is not supported")
    if model.get("dropout") not in (None, 0, 0.0):
        raise UserError(f"model.dropout: {model['dropout']!r}; llmlab encodes deterministically (null or 0 only)")
    if model.get("ignore_merges"):
        raise UserError("model.ignore_merges: true is not supported for SentencePiece-style BPE")
    merges = model.get("merges")
    if not isinstance(merges, list):
        raise UserError("model.merges: missing or not a list")
    pairs = []
    for n, merge in enumerate(merges):
        parts = merge.split(" ") if isinstance(merge, str) else merge
        if not (isinstance(parts, list) and len(parts) == 2 and all(isinstance(p, str) and p for p in parts)):
            raise UserError(f"model.merges[{n}]: {merge!r} is neither 'left right' nor [left, right]")
        pairs.append((parts[0], parts[1]))
    specials = read_added_tokens(data.get("added_tokens") or [])
    size = max([*vocab.values(), *specials.values()], default=-1) + 1
    pieces = [""] * size
    for token, i in [*vocab.items(), *specials.items()]:
        if pieces[i] and pieces[i] != token:
            raise UserError(f"model.vocab: {pieces[i]!r} and {token!r} share id {i}")
        pieces[i] = token
    holes = [i for i, p in enumerate(pieces) if not p]
    if holes:
        raise UserError(f"model.vocab: no token has id {holes[0]}")
    unk = model.get("unk_token")
    unk_id = vocab.get(unk) if isinstance(unk, str) else None
    if isinstance(unk, str) and unk_id is None:
        raise UserError(f"model.unk_token: {unk!r} is not in model.vocab")
    pipeline = read_pipeline(data.get("normalizer"), data.get("pre_tokenizer"))
    if pipeline.split:
        raise UserError("pre_tokenizer: Metaspace split true is not supported for BPE (llmlab reads split false)")
    return SentencePieceBPE(pieces, merges=pairs, normalizer=pipeline, unk_id=unk_id,
                            byte_fallback=bool(model.get("byte_fallback")), special_tokens=specials,
                            strip_first_space=_strips_first_space(data.get("decoder")),
                            fuse_unk=bool(model.get("fuse_unk", False)), source=data)


def _strips_first_space(decoder: Any) -> bool:
    """Whether the decoder ends with Strip(" ", 1, 0), as converted SentencePiece files do."""
    steps = decoder.get("decoders", []) if isinstance(decoder, dict) and decoder.get("type") == "Sequence" else [decoder]
    return any(isinstance(s, dict) and s.get("type") == "Strip" and s.get("content") == " " and s.get("start") == 1
               for s in steps)

