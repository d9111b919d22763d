"""WordPiece (BERT): greedy longest-match-first encoding of each word over a vocabulary of strings.

Follows Google BERT's `WordpieceTokenizer` and HF tokenizers' `models::WordPiece` /
`decoders::WordPiece`, whose ids llmlab reproduces (tested against `tokenizers` and
`transformers`). The pipeline:

    text -> BertNormalizer -> bert_pre_tokenize (bert_text.py) -> words -> WordPiece per word -> ids

Each word is covered left to right by the longest vocabulary piece that fits; a piece that
does not start the word is looked up with the continuation prefix "##":

    vocab {un, ##aff, ##able, ##a, [UNK]}:  "unaffable" -> un ##aff ##able
    "xunaffable": no piece starts with "x"  -> [UNK]   (the whole word: one UNK, as BERT)

A word longer than `max_input_chars_per_word` (100) is one [UNK] without trying.

Decoding is HF's WordPiece decoder: a "##" piece is glued to the one before, any other
piece gets a space before it, and `cleanup` removes the space before . , ! ? and English
contractions ("do n't" -> "don't"). WordPiece decoding is lossy by design: the normalizer
lowercases and strips accents, the pre-tokenizer drops whitespace and splits punctuation,
and a word that became [UNK] is gone. `decode(encode(s))` is a readable, normalized
version of `s`, never `s` itself: "Héllo , WORLD!" -> "hello, world!".

The ids of a vocabulary belong to its strings, special tokens included, as in BERT's
vocab.txt (`[PAD]` 0 ... `[MASK]` 4 in a trained one). The ABC's byte view:
`token_bytes(id)` is the UTF-8 of the piece without its "##" (what the piece contributes to a
word), `id_to_token(id)` the piece as stored ("##ing"), `decode_bytes` the UTF-8 of `decode`.

Leaves out: BERT's `never_split` list and HF's offsets; the post-processor's [CLS]/[SEP]
(`encode` returns the ids of the text only; wordpiece_io.py writes the template into
tokenizer.json for HF users).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from llmlab.errors import UserError
from llmlab.files import write_json_atomic, write_text_atomic
from llmlab.tokenizers.added_tokens import added_token
from llmlab.tokenizers.base import StreamDecoder, Tokenizer
from llmlab.tokenizers.bert_text import BertNormalizer, split_punctuation, whitespace_chunks

DEFAULT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_CACHE_LIMIT = 1 << 20  # words; the cache is cleared when it grows past this
# the BertNormalizer fields of tokenizer.json, written by `save` and read back by wordpiece_io.py
BERT_NORMALIZER_FLAGS = ("clean_text", "handle_chinese_chars", "strip_accents", "lowercase")


def wordpiece_word(word: str, vocab: Mapping[str, int], *, unk_id: int, prefix: str = "##",
                   max_chars: int = 100, max_piece_chars: int | None = None) -> list[int]:
    """Greedy longest-match-first pieces of one word; [UNK] alone if any position has no piece.

    `max_piece_chars` bounds the pieces tried (the longest vocabulary string): the same result
    as trying every end, as HF does, without the hopeless look-ups.

    >>> v = {"un": 0, "##aff": 1, "##able": 2, "##a": 3, "[UNK]": 4}
    >>> wordpiece_word("unaffable", v, unk_id=4)
    [0, 1, 2]
    >>> wordpiece_word("unaffablex", v, unk_id=4)
    [4]
    """
    n = len(word)
    if n > max_chars:
        return [unk_id]
    longest = max_piece_chars if max_piece_chars is not None else n + len(prefix)
    ids: list[int] = []
    start = 0
    while start < n:
        for end in range(min(n, start + longest), start, -1):
            found = vocab.get(word[start:end] if start == 0 else prefix + word[start:end])
            if found is not None:
                break
        else:
            return [unk_id]
        ids.append(found)
        start = end
    return ids


def cleanup(piece: str) -> str:
    """HF's decoder cleanup, in HF's order (it runs on each piece with its leading space)."""
    for dirty, clean in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                         (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        piece = piece.replace(dirty, clean)
    return piece


def decode_piece(piece: str, position: int, *, prefix: str = "##", clean: bool = True) -> str:
    """What the piece at `position` adds to the text; HF's decoder, one piece at a time.

    >>> "".join(decode_piece(p, i) for i, p in enumerate(["un", "##aff", "##able", "!", "##x"]))
    'unaffable!x'
    """
    if position:
        piece = piece[len(prefix):] if piece.startswith(prefix) else " " + piece
    return cleanup(piece) if clean else piece


class WordPieceTokenizer(Tokenizer):
    def __init__(self, vocab: Mapping[str, int], *, unk_token: str = "[UNK]", continuing_subword_prefix: str = "##",
                 max_input_chars_per_word: int = 100, special_tokens: Mapping[str, int] | None = None,
                 normalizer: BertNormalizer | None = None, decode_cleanup: bool = True) -> None:
        """`vocab` maps every piece (specials included, as in BERT's vocab.txt) to its id.

        `special_tokens` default: those of [PAD] [UNK] [CLS] [SEP] [MASK] that are in `vocab`;
        the unk token is always special (it stands for text, it is not text). A special may
        also be outside `vocab` (an HF added token), with an id of its own.
        """
        self.vocab = dict(vocab)
        self.unk_token = unk_token
        self.prefix = continuing_subword_prefix
        self.max_input_chars_per_word = max_input_chars_per_word
        if special_tokens is None:
            special_tokens = {t: self.vocab[t] for t in DEFAULT_SPECIAL_TOKENS if t in self.vocab}
        self.special_tokens = dict(special_tokens)
        if unk_token in self.vocab:
            self.special_tokens.setdefault(unk_token, self.vocab[unk_token])
        self.normalizer = normalizer if normalizer is not None else BertNormalizer()
        self.decode_cleanup = decode_cleanup
        self._check()
        self.unk_id = self.vocab[unk_token]
        self._pieces = {i: t for t, i in self.vocab.items()} | {i: t for t, i in self.special_tokens.items()}
        self._special_ids = frozenset(self.special_tokens.values())
        self._longest = max(map(len, self.vocab))
        self._cache: dict[str, list[int]] = {}

    def _check(self) -> None:
        if self.unk_token not in self.vocab:
            raise UserError(f"the unk token {self.unk_token!r} is not in the vocabulary")
        if not self.prefix:
            raise UserError("continuing_subword_prefix is empty; WordPiece needs one (BERT's is '##')")
        if self.max_input_chars_per_word < 1:
            raise UserError(f"max_input_chars_per_word must be >= 1, got {self.max_input_chars_per_word}")
        owner: dict[int, str] = {}
        for token, i in self.vocab.items():
            if not token or "\n" in token or "\r" in token:
                raise UserError(f"vocabulary token {token!r} (id {i}) is empty or holds a line break")
            if i in owner:
                raise UserError(f"{owner[i]!r} and {token!r} share id {i}")
            owner[i] = token
        for token, i in self.special_tokens.items():
            if not token:
                raise UserError("a special token is the empty string")
            if self.vocab.get(token, i) != i or (token not in self.vocab and i in owner):
                raise UserError(f"special token {token!r} has id {i}, which the vocabulary gives to "
                                f"{owner.get(i, token)!r}")

    # ------------------------------------------------------------------ encoding

    def _encode_ordinary(self, text: str) -> list[int]:
        ids: list[int] = []
        cache = self._cache
        for chunk in whitespace_chunks(self.normalizer(text)):  # cached per chunk: "world!" -> world !
            cached = cache.get(chunk)
            if cached is None:
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cached = cache[chunk] = [
                    i for word in split_punctuation(chunk)
                    for i in wordpiece_word(word, self.vocab, unk_id=self.unk_id, prefix=self.prefix,
                                            max_chars=self.max_input_chars_per_word, max_piece_chars=self._longest)]
            ids += cached
        return ids

    # ------------------------------------------------------------------ decoding

    def decode(self, ids: Iterable[int], *, errors: str = "replace", skip_special_tokens: bool = False) -> str:
        """HF's WordPiece decoder (see the module docstring: lossy by design).

        `errors` is accepted for the ABC's signature; pieces are strings, so nothing is undecodable.
        """
        pieces = [self.id_to_token(i) for i in ids if not (skip_special_tokens and i in self._special_ids)]
        return "".join(decode_piece(p, k, prefix=self.prefix, clean=self.decode_cleanup)
                       for k, p in enumerate(pieces))

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self.decode(ids).encode("utf-8")

    def stream_decoder(self) -> WordPieceStreamDecoder:
        return WordPieceStreamDecoder(self)

    # ------------------------------------------------------------------ vocabulary

    def id_to_token(self, token_id: int) -> str:
        """The piece as stored: "##ing", "hello", "[CLS]"."""
        try:
            return self._pieces[token_id]
        except KeyError:
            raise UserError(f"token id {token_id} is not in the vocabulary (size {self.vocab_size})") from None

    def token_bytes(self, token_id: int) -> bytes:
        """UTF-8 of an ordinary piece without its "##": what it adds to a word."""
        piece = self.id_to_token(token_id)
        if token_id in self._special_ids:
            raise UserError(f"token id {token_id} is the special token {piece!r}, which has no bytes")
        return piece.removeprefix(self.prefix).encode("utf-8")

    def token_to_id(self, token: bytes | str) -> int | None:
        """The id of a piece as stored ("##ing"); bytes are read as UTF-8."""
        if isinstance(token, bytes):
            token = token.decode("utf-8", errors="replace")
        found = self.vocab.get(token)
        return found if found is not None else self.special_tokens.get(token)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab) + sum(1 for t in self.special_tokens if t not in self.vocab)

    @property
    def id_count(self) -> int:
        return 1 + max([*self.vocab.values(), *self.special_tokens.values()])

    # ------------------------------------------------------------------ files

    def save(self, directory: str | Path) -> None:
        """`tokenizer.json` (HF format, loadable by `tokenizers` and `transformers`) and BERT's `vocab.txt`,
        each written atomically into `directory` (wordpiece_io.py describes the format and reads it back)."""
        directory = Path(directory)
        listing = self.vocab_txt()  # first: it may refuse, and then nothing is written
        write_json_atomic(directory / "tokenizer.json", self.to_hf_json())
        write_text_atomic(directory / "vocab.txt", listing)

    def to_hf_json(self) -> dict[str, Any]:
        """The tokenizer.json object, with HF's field set and field order."""
        norm = self.normalizer
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [added_token(text, i) for text, i in sorted(self.special_tokens.items(), key=lambda t: t[1])],
            "normalizer": {"type": "BertNormalizer", **{flag: getattr(norm, flag) for flag in BERT_NORMALIZER_FLAGS}},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": _bert_template(self.special_tokens),
            "decoder": {"type": "WordPiece", "prefix": self.prefix, "cleanup": self.decode_cleanup},
            "model": {
                "type": "WordPiece",
                "unk_token": self.unk_token,
                "continuing_subword_prefix": self.prefix,
                "max_input_chars_per_word": self.max_input_chars_per_word,
                "vocab": dict(sorted(self.vocab.items(), key=lambda t: t[1])),
            },
        }

    def vocab_txt(self) -> str:
        """BERT's vocab.txt: the piece of id k on line k+1; a UserError when the ids have gaps."""
        pieces = {i: t for t, i in self.vocab.items()} | {i: t for t, i in self.special_tokens.items()}
        missing = next((i for i in range(len(pieces)) if i not in pieces), None)
        if missing is not None:
            raise UserError(f"cannot write vocab.txt: the ids are not 0..{len(pieces) - 1} (no token has id {missing})")
        return "".join(f"{pieces[i]}\n" for i in range(len(pieces)))

    def __getstate__(self) -> dict[str, Any]:  # for encode_batch's worker processes: no cache
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state


def _bert_template(specials: dict[str, int]) -> dict[str, Any] | None:
    """BERT's `[CLS] A [SEP]` / `[CLS] A [SEP] B [SEP]` (B with type id 1), if both tokens are special."""
    if "[CLS]" not in specials or "[SEP]" not in specials:
        return None

    def special(name: str, type_id: int) -> dict[str, Any]:
        return {"SpecialToken": {"id": name, "type_id": type_id}}

    def sequence(name: str, type_id: int) -> dict[str, Any]:
        return {"Sequence": {"id": name, "type_id": type_id}}

    single = [special("[CLS]", 0), sequence("A", 0), special("[SEP]", 0)]
    return {"type": "TemplateProcessing", "single": single,
            "pair": [*single, sequence("B", 1), special("[SEP]", 1)],
            "special_tokens": {name: {"id": name, "ids": [specials[name]], "tokens": [name]}
                               for name in ("[CLS]", "[SEP]")}}


class WordPieceStreamDecoder(StreamDecoder):
    """Text piece by piece, equal in sum to `decode`: the space or glue of each piece is known
    from the piece alone, and HF's cleanup works within one piece."""

    def __init__(self, tokenizer: WordPieceTokenizer) -> None:
        super().__init__(tokenizer)
        self._wp = tokenizer
        self._position = 0

    def push(self, token_id: int) -> str:
        piece = decode_piece(self._wp.id_to_token(token_id), self._position, prefix=self._wp.prefix,
                             clean=self._wp.decode_cleanup)
        self._position += 1
        return piece

    def flush(self) -> str:
        return ""

