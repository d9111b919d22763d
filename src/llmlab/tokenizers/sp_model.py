"""SentencePiece `.model` files: the protobuf `ModelProto`, read with a minimal wire-format reader
(no protobuf dependency), into what llmlab's Unigram and BPE tokenizers need.

    ModelProto      1 pieces (repeated: 1 piece, 2 score float32, 3 type)   2 trainer_spec   3 normalizer_spec
                    5 denormalizer_spec
    TrainerSpec     3 model_type (1 unigram, 2 bpe, 3 word, 4 char)   24 treat_whitespace_as_suffix
                    35 byte_fallback   44 unk_surface
    NormalizerSpec  1 name   2 precompiled_charsmap   3 add_dummy_prefix   4 remove_extra_whitespaces
                    5 escape_whitespaces   (defaults true, true, true)

Piece types: 1 normal, 2 unknown, 3 control (<s>, </s>), 4 user-defined, 5 unused, 6 byte (<0x41>).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from llmlab.errors import UserError
from llmlab.tokenizers.charsmap import Charsmap
from llmlab.tokenizers.sp_text import UNK_SURFACE, SentencePieceNormalizer

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
UNIGRAM, BPE = 1, 2


@dataclass(frozen=True)
class SentencePieceModel:
    pieces: list[tuple[str, float]]
    types: list[int]
    model_type: int
    byte_fallback: bool
    normalizer_name: str
    normalizer: SentencePieceNormalizer
    unk_surface: str

    @property
    def unk_id(self) -> int:
        return self.types.index(UNKNOWN)

    def check(self, kind: str) -> None:
        """UserErrors for what llmlab does not read (common to the Unigram and BPE readers)."""
        if USER_DEFINED in self.types:
            raise UserError("SentencePiece user-defined pieces are not supported")
        if UNKNOWN not in self.types:
            raise UserError("SentencePiece model without an unknown piece")
        if self.unk_surface != UNK_SURFACE:
            raise UserError(f"SentencePiece unk_surface {self.unk_surface!r} is not supported (only {UNK_SURFACE!r})")
        if not self.normalizer.escape_whitespaces:
            raise UserError(f"SentencePiece {kind} model with escape_whitespaces false is not supported")


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message: varints as ints, 32-bit as raw 4 bytes, length-delimited as bytes."""
    i, n = 0, len(data)

    def varint() -> int:
        nonlocal i
        shift = result = 0
        while True:
            if i >= n:
                raise UserError("not a SentencePiece model: truncated protobuf")
            b = data[i]
            i += 1
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result

    while i < n:
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            yield field, varint()
        elif wire == 1:
            yield field, data[i:i + 8]
            i += 8
        elif wire == 2:
            size = varint()
            if i + size > n:
                raise UserError("not a SentencePiece model: truncated protobuf")
            yield field, data[i:i + size]
            i += size
        elif wire == 5:
            yield field, data[i:i + 4]
            i += 4
        else:
            raise UserError(f"not a SentencePiece model: protobuf wire type {wire}")


def read_model(path: str | Path | bytes) -> SentencePieceModel:
    """The parts of a `.model` file (or its bytes) that llmlab uses; a UserError for one it cannot read."""
    data = path if isinstance(path, bytes) else Path(path).read_bytes()
    pieces: list[tuple[str, float]] = []
    types: list[int] = []
    model_type, byte_fallback, suffix, unk_surface = UNIGRAM, False, False, UNK_SURFACE
    name, charsmap, dummy, extra, escape = "nmt_nfkc", b"", True, True, True
    for field, value in _fields(data):
        if field == 1 and isinstance(value, bytes):
            piece, score, kind = "", 0.0, NORMAL
            for f, v in _fields(value):
                if f == 1 and isinstance(v, bytes):
                    piece = v.decode("utf-8")
                elif f == 2 and isinstance(v, bytes):
                    score = struct.unpack("<f", v)[0]
                elif f == 3 and isinstance(v, int):
                    kind = v
            pieces.append((piece, score))
            types.append(kind)
        elif field == 2 and isinstance(value, bytes):
            for f, v in _fields(value):
                if f == 3 and isinstance(v, int):
                    model_type = v
                elif f == 35 and isinstance(v, int):
                    byte_fallback = bool(v)
                elif f == 24 and isinstance(v, int):
                    suffix = bool(v)
                elif f == 44 and isinstance(v, bytes):
                    unk_surface = v.decode("utf-8")
        elif field == 3 and isinstance(value, bytes):
            for f, v in _fields(value):
                if f == 1 and isinstance(v, bytes):
                    name = v.decode("utf-8")
                elif f == 2 and isinstance(v, bytes):
                    charsmap = v
                elif f == 3 and isinstance(v, int):
                    dummy = bool(v)
                elif f == 4 and isinstance(v, int):
                    extra = bool(v)
                elif f == 5 and isinstance(v, int):
                    escape = bool(v)
        elif field == 5 and isinstance(value, bytes) and any(f == 2 and v for f, v in _fields(value)):
            raise UserError("SentencePiece denormalizer rules are not supported")
    if suffix:
        raise UserError("SentencePiece treat_whitespace_as_suffix is not supported")
    if model_type not in (UNIGRAM, BPE):
        raise UserError(f"SentencePiece model_type {model_type} is not supported (Unigram 1, BPE 2)")
    normalizer = SentencePieceNormalizer(Charsmap.from_blob(charsmap) if charsmap else None, add_dummy_prefix=dummy,
                                         remove_extra_whitespaces=extra, escape_whitespaces=escape)
    return SentencePieceModel(pieces=pieces, types=types, model_type=model_type, byte_fallback=byte_fallback,
                              normalizer_name=name, normalizer=normalizer, unk_surface=unk_surface)
