"""Unigram tokenizers in other formats: HF `tokenizer.json` (write and read) and SentencePiece `.model` (read).

The writing itself is `UnigramTokenizer.to_hf_json` (unigram.py: a tokenizer saves itself); the
reading is here, above unigram.py.

tokenizer.json, as `tokenizers` 0.2x writes a Unigram model, with SentencePiece's whitespace rule:

    "normalizer": Sequence[NFKC?, Prepend("▁")?]    NFKC unless normalizer "none"; Prepend = add_dummy_prefix
    "pre_tokenizer": Metaspace(replacement "▁", prepend_scheme "never", split true)   " " -> "▁", cut before "▁"
                     or Sequence[Split(llmlab pattern, Isolated), Metaspace(...)] with a pre_tokenizer
    "model": {"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0.0], ["▁the", -3.2], ...], "byte_fallback": b}
    "decoder": Sequence[Replace("▁", " "), ByteFallback, Fuse, Strip(" ", 1, 0)?]

    subtle: the dummy prefix is a Prepend normalizer, not Metaspace's prepend_scheme: Metaspace adds
    "▁" only when the text does not start with one, so " a" and "a" would both become "▁a" and
    decoding could not give the leading space back. SentencePiece (and llmlab) prepend always.

Scores are read as HF reads them (`hf_score`: its JSON parser can be one ULP off for 17 digits,
which decides exact ties), so a loaded file encodes as HF encodes it; trained scores have 15
significant digits, which both read exactly. Special tokens (and <unk>) are `added_tokens`, also listed in `vocab` at their ids, as HF requires.
Reading accepts what llmlab writes and Metaspace files with prepend_scheme "always"/"first" (the
dummy prefix then differs for text that starts with a space, as said above), and the files that
transformers' converter writes for SentencePiece models (T5, ALBERT, XLNet): a normalizer with a
`Precompiled` charsmap, run step by step as HF runs it (sp_hf.HFTextPipeline).

A SentencePiece `.model` (sp_model.py reads the protobuf) loads as a UnigramTokenizer, or as a
SentencePieceBPE (sp_bpe.py) for model_type BPE, that encodes and decodes as `SentencePieceProcessor`:
its precompiled charsmap and whitespace options applied exactly (sp_text.SentencePieceNormalizer),
float32 Viterbi totals, and SentencePiece's decoding (" ⁇ " for the unknown piece).
Refused: word/char models, user-defined pieces, treat_whitespace_as_suffix, denormalizer rules.
"""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path
from typing import Any

from llmlab.errors import UserError
from llmlab.tokenizers.base import Tokenizer
from llmlab.tokenizers.normalizers import HF_NORMALIZERS
from llmlab.tokenizers.pre_tokenizers import PATTERNS
from llmlab.tokenizers.sp_bpe import from_sentencepiece as sp_bpe_from_sentencepiece
from llmlab.tokenizers.sp_hf import read_pipeline
from llmlab.tokenizers.sp_model import BPE, CONTROL, UNKNOWN, UNUSED, read_model
from llmlab.tokenizers.unigram import SPACE, UnigramTokenizer, chunk_pattern

# ---------------------------------------------------------------------- tokenizer.json


def from_hf_json(data: dict[str, Any]) -> UnigramTokenizer:
    """A Unigram tokenizer from a parsed tokenizer.json; UserErrors name the field at fault."""
    model = data.get("model")
    if not (isinstance(model, dict) and model.get("type") == "Unigram"):
        raise UserError("model.type: not 'Unigram'")
    vocab = model.get("vocab")
    if not (isinstance(vocab, list) and all(isinstance(v, list) and len(v) == 2 and isinstance(v[0], str)
                                            and isinstance(v[1], int | float) for v in vocab)):
        raise UserError("model.vocab: must be a list of [piece, score]")
    unk_id = model.get("unk_id")
    if not isinstance(unk_id, int):
        raise UserError("model.unk_id: llmlab needs an unknown piece (an integer id)")
    specials: dict[str, int] = {}
    for n, entry in enumerate(data.get("added_tokens") or []):
        if not (isinstance(entry, dict) and isinstance(entry.get("content"), str) and isinstance(entry.get("id"), int)):
            raise UserError(f"added_tokens[{n}]: needs a string `content` and an integer `id`")
        specials[entry["content"]] = entry["id"]
    if _has_precompiled(data.get("normalizer")):
        pipeline = read_pipeline(data.get("normalizer"), data.get("pre_tokenizer"))
        return UnigramTokenizer([(p, hf_score(float(s))) for p, s in vocab], unk_id=unk_id, special_tokens=specials,
                                byte_fallback=bool(model.get("byte_fallback", False)), normalizer="none",
                                add_dummy_prefix=pipeline.prepend, text_normalizer=pipeline, byte_pieces_match_text=True)
    normalizer, prefix = _read_normalizer(data.get("normalizer"))
    spec = data.get("pre_tokenizer")
    pre_tokenizer = None
    if isinstance(spec, dict) and spec.get("type") == "Sequence":
        pre_tokenizer, spec = _read_split(spec.get("pretokenizers"))
    prefix = _read_pre_tokenizer(spec) or prefix
    return UnigramTokenizer([(p, hf_score(float(s))) for p, s in vocab], unk_id=unk_id, special_tokens=specials,
                            byte_fallback=bool(model.get("byte_fallback", False)), normalizer=normalizer,
                            add_dummy_prefix=prefix, pre_tokenizer=pre_tokenizer, byte_pieces_match_text=True)


def _has_precompiled(spec: Any) -> bool:
    """Whether the normalizer holds the steps of transformers' SentencePiece converter (a Precompiled
    charsmap, Replace or Strip), which `sp_hf.HFTextPipeline` runs."""
    steps = spec.get("normalizers", []) if isinstance(spec, dict) and spec.get("type") == "Sequence" else [spec]
    return any(isinstance(step, dict) and step.get("type") in ("Precompiled", "Replace", "Strip") for step in steps)


def _read_split(steps: Any) -> tuple[str, Any]:
    """(llmlab pre-tokenizer name, the Metaspace step) of a Sequence[Split(regex, Isolated), Metaspace]."""
    if not (isinstance(steps, list) and len(steps) == 2 and isinstance(steps[0], dict)
            and steps[0].get("type") == "Split" and steps[0].get("behavior") == "Isolated"
            and not steps[0].get("invert")):
        raise UserError("pre_tokenizer: llmlab reads a Unigram Sequence of Split(regex, Isolated) and Metaspace only")
    pattern = (steps[0].get("pattern") or {}).get("Regex")
    names = [name for name in PATTERNS if chunk_pattern(name) == pattern]
    if not names:
        raise UserError("pre_tokenizer: the Split regex is not one of llmlab's pre-tokenizers "
                        f"({', '.join(PATTERNS)}) with the '▁?' prefix that llmlab writes")
    return names[0], steps[1]


_POW10 = [float(f"1e{k}") for k in range(309)]  # serde_json's POW10 table: correctly rounded literals


def hf_score(x: float) -> float:
    """The float64 that HF `tokenizers` reads for the JSON number `repr(x)`.

    subtle: serde_json (without its float_roundtrip feature) parses "d1d2...dn" x 10^e as
    float(d1...dn) / 10^-e, which is exact for up to 15 digits but may be one ULP off for the
    17 digits of a float32 score written as a double: "-7.6636810302734375" -> -7.663681030273437.
    One ULP decides exact ties (see `viterbi`), so llmlab reads the numbers as HF does. Python
    and HF (ryu) both write the shortest round-trip digits, so repr(x) has the file's digits.
    """
    if not math.isfinite(x) or x == 0:
        return x
    sign, digits, exp = Decimal(repr(x)).as_tuple()
    assert isinstance(exp, int)
    if abs(exp) >= len(_POW10):
        return x
    f = float(int("".join(map(str, digits))))
    f = f * _POW10[exp] if exp >= 0 else f / _POW10[-exp]
    return -f if sign else f


def _read_normalizer(spec: Any) -> tuple[str, bool]:
    """(llmlab normalizer, dummy prefix) of the `normalizer` field."""
    steps = [] if spec is None else spec.get("normalizers", []) if spec.get("type") == "Sequence" else [spec]
    names, prefix = [], False
    for step in steps:
        kind = step.get("type") if isinstance(step, dict) else None
        if kind == "Prepend" and step.get("prepend") == SPACE:
            prefix = True
        elif kind in HF_NORMALIZERS:
            names.append(HF_NORMALIZERS[kind])
        else:
            raise UserError(f"normalizer: {kind!r} is not supported for Unigram (NFKC, NFC, Lowercase, Prepend('▁'))")
    if len(set(names)) > 1:
        raise UserError(f"normalizer: the Sequence {names} is not one llmlab normalizer")
    return (names[0] if names else "none"), prefix


def _read_pre_tokenizer(spec: Any) -> bool:
    """Whether the pre-tokenizer adds the dummy prefix (Metaspace with prepend_scheme always/first)."""
    if not (isinstance(spec, dict) and spec.get("type") == "Metaspace" and spec.get("replacement") == SPACE):
        raise UserError("pre_tokenizer: llmlab reads Unigram files with a Metaspace('▁') pre-tokenizer")
    return spec.get("prepend_scheme", "always") in ("always", "first")


# ---------------------------------------------------------------------- SentencePiece .model


def load_sentencepiece_model(path: str | Path | bytes) -> Tokenizer:
    """A tokenizer from a SentencePiece `.model` file (or its bytes) that encodes and decodes like
    `sentencepiece.SentencePieceProcessor`: a UnigramTokenizer, or for model_type BPE a
    SentencePieceBPE (sp_bpe.py). The model's own normalisation (its precompiled charsmap and
    whitespace options) is applied exactly (sp_text.SentencePieceNormalizer)."""
    model = read_model(path)
    if model.model_type == BPE:
        return sp_bpe_from_sentencepiece(model)
    model.check("Unigram")
    types = model.types
    specials = {p: i for i, ((p, _), t) in enumerate(zip(model.pieces, types, strict=True)) if t in (UNKNOWN, CONTROL)}
    norm = model.normalizer
    return UnigramTokenizer(model.pieces, unk_id=model.unk_id, byte_fallback=model.byte_fallback,
                            special_tokens=specials, normalizer="none",
                            add_dummy_prefix=norm.add_dummy_prefix, remove_extra_whitespaces=norm.remove_extra_whitespaces,
                            unused=[i for i, t in enumerate(types) if t == UNUSED], float32=True,
                            text_normalizer=norm, sentencepiece_decode=True)
