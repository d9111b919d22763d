"""The Unigram language-model tokenizer (SentencePiece's default model): encoder and decoder.

Reference: Kudo 2018, "Subword Regularization" (arXiv:1804.10959), and SentencePiece's
`unigram_model.cc`. A vocabulary of pieces, each with a log-probability; a text's
segmentation is the one whose pieces' log-probabilities sum highest (Viterbi):

    pieces  ▁a: -1.0  b: -2.0  ▁ab: -2.5  a: -3.0  ▁: -3.0
    "ab" -> "▁ab" -> ▁ab (-2.5) beats ▁a b (-3.0) and ▁ a b (-8.0)

Whitespace is a character like any other, written "▁" (U+2581), as SentencePiece does:

    normalizer (NFKC by default) -> " " -> "▁", and "▁" before the text (add_dummy_prefix)
    -> split before every "▁" into words -> Viterbi per word (cached) -> ids
    ids -> pieces, "▁" -> " ", bytes of <0xNN> pieces joined -> UTF-8 -> one leading " " dropped

Every space stays in the pieces, so decode(encode(s)) == normalize(s). Splitting into words
changes nothing when no piece has a "▁" after its first character, which holds for every
model SentencePiece trains (split_by_whitespace) and llmlab trains.

Caching a word's path is exact for HF's arithmetic (float64 totals from each word's start). With
SentencePiece's (float32 totals over the whole text, for .model files) a path can depend on the
total before the word, so each cached path carries the range of totals it holds for
(unigram_lattice.stable_path); a word met past that range, or whose best path is an exact tie, is
walked again from the exact total.

A word not cached yet is searched in C where `_fastunigram` is built (fastunigram.py): the same
search and the same loops over the same caches, with this module's Python path as the oracle.

A character no piece covers gets a lattice node of its own with score min(score) - 10
(SentencePiece's kUnkPenalty). With `byte_fallback` it becomes its UTF-8 bytes as <0xNN>
pieces, so nothing is unknown; otherwise it is `<unk>`, and a run of unknown characters is
one `<unk>`, as SentencePiece and HF do.

`encode_sample` draws segmentations for subword regularisation: forward-filtering
backward-sampling over the whole lattice, each path with probability proportional to
P(path)^alpha (nbest_size < 0), or one of the n best paths (nbest_size > 1).

Left out: SentencePiece's user-defined pieces (always matched), `treat_whitespace_as_suffix`.
Trained tokenizers normalise with Python's unicodedata (`nfkc`); imported SentencePiece models and
HF files with a `Precompiled` normalizer instead run their precompiled charsmap exactly, through
`text_normalizer` (charsmap.py, sp_text.py, sp_hf.py). `remove_extra_whitespaces` (SentencePiece's
default, off by default here because it loses spaces) is supported for imported models.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cached_property
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple

import regex

from llmlab.errors import UserError
from llmlab.files import write_json_atomic, write_text_atomic
from llmlab.tokenizers import fastunigram
from llmlab.tokenizers.added_tokens import added_token
from llmlab.tokenizers.base import PrefixStreamDecoder, StreamDecoder, Tokenizer, refuse_lone_surrogates
from llmlab.tokenizers.normalizers import HF_NORMALIZER_TYPES, NORMALIZERS
from llmlab.tokenizers.pre_tokenizers import PreTokenizer
from llmlab.tokenizers.sp_text import SPACE, cut_words, cuts_are_exact, sp_decode
from llmlab.tokenizers.unigram_lattice import (
    UNK,
    UNK_PENALTY,
    Edge,
    Lattice,
    build_lattice,
    nbest_paths,
    piece_prefixes,
    replay_float32,
    sample_path,
    text_stable_path,
    to_float32,
    viterbi,
    viterbi_float32,
)

_CACHE_LIMIT = 1 << 20  # words; the cache is cleared when it grows past this
_SAFE_CHARS = 1024  # float32 mode: texts up to this long take cached paths without tracking the total
_RUN = SPACE + SPACE


class WordPath(NamedTuple):
    """A word's cached float32 path (`UnigramTokenizer._encode_float32`): its ids, its pieces' scores in
    order, sum |score|, the growth factor of a bound of |total| over its sums (1 + len(scores) 2^-23),
    the |total| below which the path holds (`stable_path`), and the lattice when it never holds."""

    ids: tuple[int, ...]
    scores: tuple[float, ...]
    spent: float
    growth: float
    limit: float
    lattice: Lattice | None


_WORDS = regex.compile(f"{SPACE}[^{SPACE}]*|[^{SPACE}]+")
_EXTRA_SPACES = regex.compile(" {2,}")
# tokenizer.json steps that `save` writes (unigram_io.py describes the format and reads it back)
_REPLACE_SPACE = {"type": "Replace", "pattern": {"String": SPACE}, "content": " "}
_METASPACE = {"type": "Metaspace", "replacement": SPACE, "prepend_scheme": "never", "split": True}


def byte_piece(b: int) -> str:
    """The piece of one byte under byte fallback: 0xE6 -> "<0xE6>"."""
    return f"<0x{b:02X}>"


def escape(text: str, *, add_dummy_prefix: bool, remove_extra_whitespaces: bool = False) -> str:
    """SentencePiece's whitespace handling of normalised text: " a  b" -> "▁▁a▁▁b".

    remove_extra_whitespaces first strips spaces at both ends and squeezes runs: " a  b" -> "▁a▁b".
    Empty text stays empty (no dummy prefix), as in SentencePiece.
    """
    if remove_extra_whitespaces:
        text = _EXTRA_SPACES.sub(" ", text.strip(" "))
    if not text:
        return ""
    text = text.replace(" ", SPACE)
    return SPACE + text if add_dummy_prefix else text


def split_words(escaped: str) -> list[str]:
    """Escaped text cut before every "▁": "▁a▁▁b" -> ["▁a", "▁", "▁b"] ("ab▁c" -> ["ab", "▁c"])."""
    return _WORDS.findall(escaped)


def chunk_pattern(name: str) -> str:
    """The Split regex of the llmlab pre-tokenizer `name`, run after the dummy prefix is added:
    the pattern, with an optional "▁" in front so that the prefix stays on the first chunk.

        script: "▁Hello wörld(1)" -> ["▁Hello", " wörld", "(", "1", ")"]   (not ["▁", "Hello", ...])
    """
    return f"{SPACE}?(?:{PreTokenizer.named(name).pattern})"


def text_words(normalized: str, *, add_dummy_prefix: bool, remove_extra_whitespaces: bool = False,
               chunks: regex.Pattern[str] | None = None) -> list[str]:
    """The words of normalised text that the lattices see, pieces never crossing two of them.

    Without a pre-tokenizer: escape, then cut before every "▁". With one (`chunks`, compiled
    from `chunk_pattern`), as HF's Sequence[Split(regex, Isolated), Metaspace] does: the
    dummy prefix, then the regex's chunks, then in each chunk " " -> "▁" and a cut before "▁":

        script: "a(b c)" -> "▁a(b c)" -> ["▁a", "(", "b", " c", ")"] -> ["▁a", "(", "b", "▁c", ")"]
    """
    if chunks is None:
        return split_words(escape(normalized, add_dummy_prefix=add_dummy_prefix,
                                  remove_extra_whitespaces=remove_extra_whitespaces))
    if remove_extra_whitespaces:
        normalized = _EXTRA_SPACES.sub(" ", normalized.strip(" "))
    if not normalized:
        return []
    text = SPACE + normalized if add_dummy_prefix else normalized
    return [w for chunk in chunks.findall(text) for w in split_words(chunk.replace(" ", SPACE))]


# ---------------------------------------------------------------------- the tokenizer


class UnigramTokenizer(Tokenizer):
    def __init__(self, pieces: Sequence[tuple[str, float]], *, unk_id: int = 0, byte_fallback: bool = False,
                 special_tokens: Mapping[str, int] | None = None, normalizer: str = "nfkc",
                 add_dummy_prefix: bool = True, remove_extra_whitespaces: bool = False,
                 unused: Iterable[int] = (), float32: bool = False, pre_tokenizer: str | None = None,
                 text_normalizer: Callable[[str], str] | None = None, sentencepiece_decode: bool = False,
                 byte_pieces_match_text: bool = False) -> None:
        """`pieces[id] = (piece, log-probability)` for every id.

        Ids named by `special_tokens` and `unk_id` are never matched in text (the unk piece is a
        special token too, so HF's files agree); with `byte_fallback` the pieces "<0x00>".."<0xFF>"
        are the bytes. `unused` ids (SentencePiece's UNUSED pieces) are never produced.
        `float32` sums path scores as SentencePiece does (see `viterbi`), which decides exact ties
        as SentencePiece; off, they are decided as HF `tokenizers` decides them. `pre_tokenizer`
        (an llmlab pre-tokenizer name, e.g. "script") splits the text into chunks before the
        lattice, so no piece crosses two chunks (see `text_words`).

        `text_normalizer` replaces the normaliser and the whitespace handling with a callable that
        returns the escaped text (sp_text.SentencePieceNormalizer for .model files, exact with their
        precompiled charsmap; sp_hf.HFTextPipeline for HF's Precompiled files).
        `sentencepiece_decode`: `decode` as SentencePiece decodes (sp_text.sp_decode: " ⁇ " for the
        unknown piece, control pieces dropped). `byte_pieces_match_text`: the text "<0x41>" may match
        the piece <0x41>, as in HF (SentencePiece's byte pieces never match text).
        """
        self.pieces = [(str(p), float(s)) for p, s in pieces]
        self.unk_id = unk_id
        self.byte_fallback = byte_fallback
        if not 0 <= unk_id < len(self.pieces):
            raise UserError(f"unk_id {unk_id} is not an id of the {len(self.pieces)} pieces")
        self.special_tokens = dict(special_tokens or {})
        self.special_tokens.setdefault(self.pieces[unk_id][0], unk_id)
        if normalizer not in NORMALIZERS:
            raise UserError(f"unknown normalizer {normalizer!r}; choose one of {', '.join(NORMALIZERS)}")
        self.normalizer = normalizer
        self.add_dummy_prefix = add_dummy_prefix
        self.remove_extra_whitespaces = remove_extra_whitespaces
        self.unused = frozenset(unused)
        self._check()
        specials = set(self.special_tokens.values())
        self._byte_ids: list[int] = []
        if byte_fallback:
            ids = {p: i for i, (p, _) in enumerate(self.pieces)}
            missing = [b for b in range(256) if byte_piece(b) not in ids]
            if missing:
                raise UserError(f"byte_fallback needs the pieces <0x00>..<0xFF>; {byte_piece(missing[0])} is missing")
            self._byte_ids = [ids[byte_piece(b)] for b in range(256)]
        skip = specials | self.unused | (set() if byte_pieces_match_text else set(self._byte_ids))
        # piece -> (id, score) for the pieces that text can match
        self.vocab = {p: (i, s) for i, (p, s) in enumerate(self.pieces) if i not in skip}
        self._byte_of = {i: b for b, i in enumerate(self._byte_ids)}
        self.max_len = max((len(p) for p in self.vocab), default=1)
        self.unk_score = min((s for _, s in self.vocab.values()), default=0.0) - UNK_PENALTY
        self.float32 = float32
        self.pre_tokenizer = pre_tokenizer
        if text_normalizer is not None and pre_tokenizer is not None:
            raise UserError("a text_normalizer and a pre_tokenizer cannot be combined")
        self.text_normalizer = text_normalizer
        self._cuts_exact = cuts_are_exact(self.vocab)
        self.sentencepiece_decode = sentencepiece_decode
        self._chunks = None if pre_tokenizer is None else regex.compile(chunk_pattern(pre_tokenizer))
        if float32:  # SentencePiece: const float unk_score = min_score() - kUnkPenalty
            self.unk_score = to_float32(self.unk_score)
        self._normalize = NORMALIZERS[normalizer]
        # the caches hold tuples: ints only, so the garbage collector stops tracking them (a cold pass makes many)
        self._cache: dict[str, tuple[int, ...]] = {}
        self._paths: dict[str, WordPath] = {}  # float32 mode: paths depend on the total before them
        self._safe: dict[str, tuple[int, ...]] = {}  # float32 mode: the ids of paths no short text changes
        self._safe_spaced: dict[str, tuple[int, ...]] = {}  # the same, of words "▁" + key
        # the largest |total| of a text of _SAFE_CHARS characters: one piece per character at most
        largest = max([abs(self.unk_score), *(abs(score) for _, score in self.vocab.values())])
        self._safe_total = _SAFE_CHARS * largest * (1 + _SAFE_CHARS * 2.0**-22)
        self._engine: Any = None  # the C word search (fastunigram.py): made on the first encode, False if none

    def _check(self) -> None:
        seen: dict[str, int] = {}
        for i, (p, s) in enumerate(self.pieces):
            if not p:
                raise UserError(f"piece {i} is the empty string")
            if p in seen:
                raise UserError(f"pieces {seen[p]} and {i} are both {p!r}")
            if not math.isfinite(s):
                raise UserError(f"piece {i} ({p!r}) has score {s}")
            seen[p] = i
        for text, i in self.special_tokens.items():
            if not (0 <= i < len(self.pieces)) or self.pieces[i][0] != text:
                raise UserError(f"special token {text!r} must be the piece of its id {i}")

    # ------------------------------------------------------------------ encoding

    def normalize(self, text: str) -> str:
        """The text the lattices see: normalised, spaces as "▁", "▁" in front (add_dummy_prefix)."""
        if self.text_normalizer is not None:
            return self.text_normalizer(text)
        return escape(self._normalize(text), add_dummy_prefix=self.add_dummy_prefix,
                      remove_extra_whitespaces=self.remove_extra_whitespaces)

    def words(self, text: str) -> list[str]:
        """The words of `text`, each its own lattice; they join to `normalize(text)`."""
        if self.text_normalizer is not None:  # imported models: whitespace-only pieces may exist
            normalized = self.text_normalizer(text)
            return cut_words(normalized) if self._cuts_exact else [normalized] if normalized else []
        return text_words(self._normalize(text), add_dummy_prefix=self.add_dummy_prefix,
                          remove_extra_whitespaces=self.remove_extra_whitespaces, chunks=self._chunks)

    def _encode_ordinary(self, text: str) -> list[int]:
        if self.float32:
            return self._encode_float32(text)
        words = self.words(text)
        if (engine := self._engine_here()) is not None:
            try:
                return engine.encode(words)
            except ValueError:  # a lone surrogate (the Python path names it), or the engine busy in another thread
                pass
        ids: list[int] = []
        cache = self._cache
        for word in words:
            cached = cache.get(word)
            if cached is None:
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cached = cache[word] = tuple(self._ids(self._best_path(word)[0], word))
            ids += cached
        return ids

    def _encode_float32(self, text: str) -> list[int]:
        """SentencePiece's arithmetic: each word's float32 Viterbi starts from the running total of
        the text before it (`viterbi_float32`), so a word's cached path is used only while that
        total is inside the range the path is sure for (`stable_path`); outside it, or on an exact
        tie, the word is walked again from the exact total (`_walk_float32`).

        Fast paths: a text of at most _SAFE_CHARS characters has at most that many pieces, so its
        total never exceeds _SAFE_CHARS * max |score| (`_safe_total`, with float32's rounding);
        words whose range covers that (`_safe`: nearly all) need no total at all, and such a text
        is their cached ids joined. Most normalised text of a .model file is "▁w▁w▁w", one "▁"
        before each word: it is cut with str.split, and the words looked up without their "▁"
        (`_safe_spaced`), which saves the regex of `cut_words`. With the C engine, cutting and walking
        are one call (`walk_text`), warm or cold.
        """
        normalizer = self.text_normalizer
        if normalizer is not None and self._cuts_exact:  # .model files: `words` is cut_words(normalized)
            normalized = normalizer(text)
            if (engine := self._engine_here()) is not None:
                try:
                    return engine.walk_text(normalized)  # cut_words and _walk_float32 in one C call
                except ValueError:  # a lone surrogate (the Python path names it), or the engine busy in another thread
                    pass
            if len(normalized) <= _SAFE_CHARS and normalized[:1] == SPACE and _RUN not in normalized:
                ids: list[int] = []
                spaced = self._safe_spaced
                try:
                    for rest in normalized[1:].split(SPACE):
                        ids += spaced[rest]
                    return ids
                except KeyError:  # a word not seen yet, or one that a total of this size might change
                    pass
            words = cut_words(normalized)
        else:
            words = self.words(text)
        if sum(map(len, words)) <= _SAFE_CHARS:
            ids = []
            safe = self._safe
            try:
                for word in words:
                    ids += safe[word]
                return ids
            except KeyError:
                pass
        return self._walk_float32(words)

    def _walk_float32(self, words: list[str]) -> list[int]:
        """Word by word: `bound`, an upper bound of |total|, is the sum of |score| of the cached paths
        taken since the total was last computed, grown by their float32 rounding (at most 2^-24 per
        sum, 2^-23 here). The exact total is replayed from the cached paths' scores only when a word
        needs it. The C engine (fastunigram.py) walks the same way; this stays its oracle."""
        if (engine := self._engine_here()) is not None:
            try:
                return engine.walk_float32(words)
            except ValueError:  # a lone surrogate (the Python path names it), or the engine busy in another thread
                pass
        ids: list[int] = []
        total = bound = 0.0
        pending: list[tuple[float, ...]] = []  # scores of the cached paths since `total`
        cache = self._paths
        for word in words:
            word_ids, scores, spent, growth, limit, lattice = cache.get(word) or self._word_path(word)
            if bound < limit:
                ids += word_ids
                pending.append(scores)
                bound = (bound + spent) * growth
                continue
            total = replay_float32(total, chain.from_iterable(pending))
            pending.clear()
            edges, total = viterbi_float32(lattice or self.lattice(word), start=total)
            ids += self._ids(edges, word)
            bound = abs(total)
        return ids

    def _engine_here(self) -> Any:
        """The C word search sharing this tokenizer's caches, made on first use; None where it is not
        built or is switched off (LLMLAB_PURE_PYTHON=1 when the first text is encoded)."""
        engine = self._engine
        if engine is None:
            engine = self._engine = fastunigram.available() and fastunigram.engine(
                self.vocab, unk_score=self.unk_score, unk_id=self.unk_id, byte_ids=self._byte_ids,
                n_ids=len(self.pieces), word_path=WordPath, safe_total=self._safe_total, cache_limit=_CACHE_LIMIT,
                caches=(self._cache, self._paths, self._safe, self._safe_spaced))
        return engine or None

    def _word_path(self, word: str) -> WordPath:
        """The cache entry of a word for `_encode_float32`."""
        cache = self._paths
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
            self._safe.clear()
            self._safe_spaced.clear()
        edges, limit = self._best_path(word)
        scores = tuple(e.score for e in edges)
        path = cache[word] = WordPath(tuple(self._ids(edges, word)), scores, sum(map(abs, scores)),
                                      1.0 + len(scores) * 2.0**-23, limit, self.lattice(word) if limit <= 0 else None)
        if limit > self._safe_total:
            self._safe[word] = path.ids
            if word[:1] == SPACE and word[1:2] != SPACE:
                self._safe_spaced[word[1:]] = path.ids
        return path

    def _best_path(self, word: str) -> tuple[list[Edge], float]:
        """The best path of a word's lattice and its float32 limit (`stable_path`), found without
        building the lattice (`text_stable_path`)."""
        return text_stable_path(word, self._prefixes, max_len=self.max_len, unk_score=self.unk_score)

    def lattice(self, text: str) -> Lattice:
        """The lattice of already normalised text."""
        return build_lattice(text, self._prefixes, max_len=self.max_len, unk_score=self.unk_score,
                             prefix_closed=True)

    def encode_sample(self, text: str, *, alpha: float = 0.1, nbest_size: int = -1,
                      generator: random.Random | None = None, seed: int | None = None) -> list[int]:
        """One random segmentation, for subword regularisation (Kudo 2018), as SentencePiece samples:

        nbest_size < 0: any path, with probability proportional to P(path)^alpha (forward-filtering
        backward-sampling); nbest_size > 1: one of the n best paths, P proportional to P(path)^alpha;
        nbest_size 0 or 1: the Viterbi path. Smaller alpha gives more uniform samples.
        Pass a `generator` (random.Random) or a `seed`.
        """
        if (generator is None) == (seed is None):
            raise UserError("encode_sample needs exactly one of generator= and seed=")
        refuse_lone_surrogates(text)  # as encode does: they have no UTF-8 form
        rng = generator if generator is not None else random.Random(seed)
        words = self.words(text)
        normalized = "".join(words)
        lattice = self._text_lattice(words)
        if nbest_size < 0:
            return self._ids(sample_path(lattice, theta=alpha, rng=rng), normalized)
        if nbest_size <= 1:
            return self._ids(viterbi(lattice, float32=self.float32), normalized)
        paths = nbest_paths(lattice, nbest_size)
        top = paths[0][0]
        weights = [math.exp(alpha * (score - top)) for score, _ in paths]
        return self._ids(rng.choices([p for _, p in paths], weights=weights)[0], normalized)

    def _text_lattice(self, words: list[str]) -> Lattice:
        """The lattices of the words, one after the other: the lattice `encode_ordinary` walks."""
        lattice: Lattice = [[]]
        offset = 0
        for word in words:
            for edges in self.lattice(word)[1:]:
                lattice.append([e._replace(start=e.start + offset, end=e.end + offset) for e in edges])
            offset += len(word)
        return lattice

    def _ids(self, path: Sequence[Edge], text: str) -> list[int]:
        """Token ids of a path over `text`; unknown characters become their UTF-8 bytes (byte
        fallback) or one <unk> per run of them."""
        ids: list[int] = []
        in_unknown = False
        for edge in path:
            if edge.token != UNK:
                ids.append(edge.token)
                in_unknown = False
            elif self.byte_fallback:
                ids += [self._byte_ids[b] for b in _utf8(text[edge.start:edge.end])]
            elif not in_unknown:
                ids.append(self.unk_id)
                in_unknown = True
        return ids

    # ------------------------------------------------------------------ vocabulary and decoding

    def token_bytes(self, token_id: int) -> bytes:
        if token_id in self._byte_of:
            return bytes([self._byte_of[token_id]])
        if not (0 <= token_id < len(self.pieces)) or token_id in self.special_tokens.values():
            raise UserError(f"token id {token_id} is not an ordinary piece (vocabulary size {self.vocab_size})")
        return self.pieces[token_id][0].replace(SPACE, " ").encode("utf-8")

    def token_to_id(self, token: bytes | str) -> int | None:
        if isinstance(token, bytes):
            token = token.decode("utf-8", errors="replace").replace(" ", SPACE)
        if token in self.special_tokens:
            return self.special_tokens[token]
        hit = self.vocab.get(token)
        return None if hit is None else hit[0]

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The pieces' bytes joined, less the one space that add_dummy_prefix put in front."""
        data = super().decode_bytes(ids)
        return data[1:] if self.add_dummy_prefix and data.startswith(b" ") else data

    def decode(self, ids: Iterable[int], *, errors: str = "replace") -> str:
        if not self.sentencepiece_decode:
            return super().decode(ids, errors=errors)
        controls = frozenset(self.special_tokens.values()) - {self.unk_id}
        return sp_decode(ids, [p for p, _ in self.pieces], controls=controls, unknown=self.unk_id,
                         byte_of=self._byte_of, strip_first_space=self.add_dummy_prefix or self.remove_extra_whitespaces,
                         strip_all_leading=self.remove_extra_whitespaces)

    def stream_decoder(self) -> StreamDecoder:
        return PrefixStreamDecoder(self, strip_first_space=self.add_dummy_prefix)

    # ------------------------------------------------------------------ files

    def save(self, directory: str | Path) -> None:
        """`tokenizer.json` (HF format, loadable by `tokenizers` and `transformers`) and `vocab.txt`
        (`id<TAB>piece<TAB>score`), each written atomically into `directory`."""
        directory = Path(directory)
        write_json_atomic(directory / "tokenizer.json", self.to_hf_json())
        write_text_atomic(directory / "vocab.txt",
                          "".join(f"{i}\t{p}\t{s:.6f}\n" for i, (p, s) in enumerate(self.pieces)))

    def to_hf_json(self) -> dict[str, Any]:
        """The tokenizer.json object (unigram_io.py describes the format and reads it back)."""
        if self.remove_extra_whitespaces:
            raise UserError("remove_extra_whitespaces has no exact HF normalizer; save a tokenizer without it")
        if self.unused:
            raise UserError("SentencePiece UNUSED pieces have no HF equivalent")
        if getattr(self.text_normalizer, "charsmap", None) is not None:
            raise UserError("a tokenizer with a precompiled charsmap is saved by the library that wrote it "
                            "(transformers' converter writes its tokenizer.json)")
        normalizers = [{"type": HF_NORMALIZER_TYPES[self.normalizer]}] if self.normalizer != "none" else []
        if self.add_dummy_prefix:
            normalizers.append({"type": "Prepend", "prepend": SPACE})
        decoders = [_REPLACE_SPACE, {"type": "ByteFallback"}, {"type": "Fuse"}]
        if self.add_dummy_prefix:
            decoders.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
        added = [added_token(text, i) for text, i in sorted(self.special_tokens.items(), key=lambda t: t[1])]
        return {
            "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": {"type": "Sequence", "normalizers": normalizers} if normalizers else None,
            "pre_tokenizer": self._pre_tokenizer_json(),
            "post_processor": None,
            "decoder": {"type": "Sequence", "decoders": decoders},
            "model": {"type": "Unigram", "unk_id": self.unk_id, "vocab": [[p, s] for p, s in self.pieces],
                      "byte_fallback": self.byte_fallback},
        }

    def _pre_tokenizer_json(self) -> dict[str, Any]:
        """Metaspace, after a Split(regex, Isolated) of the chunks when the tokenizer has a pre-tokenizer."""
        if self.pre_tokenizer is None:
            return _METASPACE
        split = {"type": "Split", "pattern": {"Regex": chunk_pattern(self.pre_tokenizer)}, "behavior": "Isolated",
                 "invert": False}
        return {"type": "Sequence", "pretokenizers": [split, _METASPACE]}

    @cached_property
    def _prefixes(self) -> dict[str, tuple[int, float] | None]:
        """The vocabulary with every proper prefix of a piece (-> None): the lattice's look-ups stop where no
        piece goes on. Made on first use: the C search has its own trie, so with it this is needed only to
        sample, to show a lattice, or for a lone surrogate (1 M keys and 0.8 s for 250,000 pieces)."""
        return piece_prefixes(self.vocab)

    def __getstate__(self) -> dict[str, Any]:  # for encode_batch's worker processes: no cache
        state = dict(self.__dict__)
        state.pop("_prefixes", None)  # made again where it is needed
        state["_cache"] = {}
        state["_paths"] = {}
        state["_safe"] = {}
        state["_safe_spaced"] = {}
        state["_engine"] = None  # C state: each copy makes its own, over its own caches
        return state


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"cannot encode {text!r}: lone surrogates have no UTF-8 form") from None
