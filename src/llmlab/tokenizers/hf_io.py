"""Hugging Face `tokenizer.json` files for byte-level BPE: write them, and read them back.

The writing itself is `BPETokenizer.to_hf_json` and `.vocab_listing` (bpe.py: a tokenizer saves
itself); the reading is here, above bpe.py, and so is the dispatch to the WordPiece and Unigram readers.

The format is the one HF `tokenizers` writes with `Tokenizer.save` (version "1.0"), and
llmlab writes the same field set, so `tokenizers.Tokenizer.from_file` and
`transformers.PreTrainedTokenizerFast(tokenizer_file=...)` load it:

    {"version": "1.0", "truncation": null, "padding": null,
     "added_tokens": [{"id": 8190, "content": "<|endoftext|>", "special": true, "normalized": false, ...}],
     "normalizer": null | {"type": "NFC"} | {"type": "NFKC"} | {"type": "Lowercase"},
     "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
         {"type": "Split", "pattern": {"Regex": <the pre-tokenizer's pattern>}, "behavior": "Isolated", ...},
         {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false, ...}]},
     "post_processor": null,
     "decoder": {"type": "ByteLevel", ...},
     "model": {"type": "BPE", "vocab": {"Ġthe": 262, ...}, "merges": [["Ġ", "t"], ...], ...}}

Tokens are stored as byte-level characters (bytelevel.py: a space is "Ġ"). Special tokens
live in `added_tokens` only, not in `model.vocab`, as in Llama 3's file: a special's text
may equal an ordinary token's bytes, and the two must keep their own ids.

    subtle: `add_prefix_space` is written as a first pre-tokenizer step, Metaspace(replacement=" ",
    prepend_scheme="always", split=false): a space before the text unless it starts with one.
    ByteLevel's own option would put a space before *every* chunk of the Split, and a
    Replace normalizer that inserts at an empty match makes HF's encode panic (0.23).

Next to it, `vocab.txt` lists every token for people: `id<TAB>visible token<TAB>merge rank`,
`-` for single bytes, `special` for special tokens.

Reading accepts files llmlab did not write when they are byte-level BPE:
  - GPT-2 / RoBERTa style: pre_tokenizer ByteLevel(use_regex=true), i.e. the GPT-2 pattern,
    with add_prefix_space true or false
  - Llama 3 / Qwen style: Sequence[Split(Regex, Isolated), ByteLevel(use_regex=false)]
  - merges as "a b" strings (older files) or [a, b] pairs; `model.merges` must be there (HF
    refuses a BPE without it) and may be empty only when every vocab token is a single byte:
    a deleted or emptied list would otherwise load and encode everything byte by byte
  - normalizer null, NFC, NFKC, Lowercase, or a Sequence of them that amounts to one
  - `model.ignore_merges`
  - added tokens, special or not, all become llmlab special tokens: HF matches every
    added token in the text before BPE runs, which is what llmlab does with the specials
    a caller allows (`encode(text, allowed_special="all")` gives HF's ids).

SentencePiece-style BPE ("▁" pieces, model.byte_fallback true: Llama 2, Mistral v1) is read by
sp_bpe.py, WordPiece by wordpiece_io.py, Unigram by unigram_io.py.
Left out: subword prefixes and suffixes, dropout, and other normalizers and pre-tokenizers (all
rejected with a one-line UserError that names the field); a Split pattern must match
every character, as the known byte-level patterns do (text between matches is dropped).
Ignored: post_processor (BOS/EOS templates), decoder (llmlab decodes bytes), truncation,
padding, and added tokens' lstrip/rstrip/single_word/normalized flags (llmlab matches a
special's exact text).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import regex

from llmlab.errors import UserError
from llmlab.tokenizers.added_tokens import read_added_tokens
from llmlab.tokenizers.bpe import HF_PREFIX_SPACE, BPETokenizer
from llmlab.tokenizers.bytelevel import CHAR_TO_BYTE, from_chars, to_chars
from llmlab.tokenizers.normalizers import HF_NORMALIZERS
from llmlab.tokenizers.pre_tokenizers import PreTokenizer
from llmlab.tokenizers.sp_bpe import from_hf_json as sp_bpe_from_hf_json
from llmlab.tokenizers.unigram_io import from_hf_json as unigram_from_hf_json
from llmlab.tokenizers.wordpiece_io import from_hf_json as wordpiece_from_hf_json

# ---------------------------------------------------------------------- writing


def save_tokenizer(tok: BPETokenizer, directory: str | Path) -> None:
    """Write `tokenizer.json` (HF format) and `vocab.txt` into `directory`, each atomically: `tok.save`,
    which writes `tok.to_hf_json()` and `tok.vocab_listing()` (bpe.py: a tokenizer saves itself)."""
    tok.save(directory)


# ---------------------------------------------------------------------- reading


def load_tokenizer(path: str | Path) -> BPETokenizer:
    """A byte-level BPE tokenizer from a tokenizer.json file, or a directory that holds one."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not JSON ({e})") from None
    try:
        return from_hf_json(data)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


def from_hf_json(data: Any) -> BPETokenizer:
    """A tokenizer from a parsed tokenizer.json; UserErrors name the field at fault."""
    if not isinstance(data, dict):
        raise UserError("top level: not a JSON object")
    model = data.get("model")
    if not isinstance(model, dict):
        raise UserError("model: missing or not an object")
    if model.get("type") == "WordPiece":
        return wordpiece_from_hf_json(data)
    if model.get("type") == "Unigram":
        return unigram_from_hf_json(data)
    if model.get("type", "BPE") == "BPE" and model.get("byte_fallback"):
        return sp_bpe_from_hf_json(data)  # SentencePiece-style (Llama 2, Mistral v1): sp_bpe.py
    _check_byte_level_bpe(model)
    specials = read_added_tokens(data.get("added_tokens") or [])
    vocab = _read_vocab(model.get("vocab"), specials)
    merges = _read_merges(model.get("merges"), vocab, specials)
    normalizer = _read_normalizer(data.get("normalizer"))
    pre_tokenizer, prefix_space = _read_pre_tokenizer(data.get("pre_tokenizer"))
    return BPETokenizer(vocab, merges, special_tokens=specials, pre_tokenizer=pre_tokenizer, normalizer=normalizer,
                        add_prefix_space=prefix_space,
                        ignore_merges=bool(model.get("ignore_merges", False)))


def _check_byte_level_bpe(model: dict[str, Any]) -> None:
    kind = model.get("type", "BPE")
    if kind != "BPE":
        raise UserError(f"model.type: {kind!r} is not supported; llmlab reads byte-level BPE models")
    if model.get("byte_fallback"):
        raise UserError("model.byte_fallback: true marks a SentencePiece-style BPE; llmlab reads byte-level BPE")
    for field in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(field):
            raise UserError(f"model.{field}: {model[field]!r} is not supported by byte-level BPE")
    if model.get("dropout") not in (None, 0, 0.0):
        raise UserError(f"model.dropout: {model['dropout']!r}; llmlab encodes deterministically (null or 0 only)")


def _read_vocab(vocab: Any, specials: dict[str, int]) -> dict[bytes, int]:
    """model.vocab as bytes -> id, leaving out the added tokens that HF also lists there."""
    if not isinstance(vocab, dict):
        raise UserError("model.vocab: missing or not an object")
    out: dict[bytes, int] = {}
    owner: dict[int, str] = {}
    special_ids = {i: text for text, i in specials.items()}
    for token, i in vocab.items():
        if not isinstance(i, int):
            raise UserError(f"model.vocab: the id of {token!r} is not an integer")
        if specials.get(token) == i:
            continue  # an added token (GPT-2's <|endoftext|>): kept as a special only
        if i in special_ids:
            raise UserError(f"model.vocab: {token!r} has id {i}, which the added token {special_ids[i]!r} has")
        if i in owner:
            raise UserError(f"model.vocab: {owner[i]!r} and {token!r} share id {i}")
        bad = next((c for c in token if c not in CHAR_TO_BYTE), None)
        if bad is not None:
            raise UserError(f"model.vocab: token {token!r} has {bad!r} (U+{ord(bad):04X}), outside the byte-level "
                            "alphabet; not a byte-level BPE (SentencePiece-style?)")
        out[from_chars(token)] = i
        owner[i] = token
    missing = [b for b in range(256) if bytes([b]) not in out]
    if missing:
        raise UserError(f"model.vocab: a byte-level BPE holds all 256 bytes; {len(missing)} are missing, "
                        f"e.g. {to_chars(bytes([missing[0]]))!r} (byte 0x{missing[0]:02X})")
    return out


def _read_merges(merges: Any, vocab: dict[bytes, int], specials: dict[str, int]) -> list[tuple[bytes, bytes]]:
    """model.merges, which must be there (HF `tokenizers` refuses a BPE without it); [] only for a
    vocab of single bytes, since without merges no longer token is ever produced."""
    if merges is None:
        raise UserError("model.merges: missing; a BPE tokenizer.json needs its merges (without them every "
                        "text would be encoded byte by byte)")
    if not isinstance(merges, list):
        raise UserError("model.merges: not a list")
    longer = next((token for token in vocab if len(token) > 1), None)
    if not merges and longer is not None:
        raise UserError(f"model.merges: empty, but model.vocab has tokens of several bytes (e.g. "
                        f"{to_chars(longer)!r}) that only merges can produce")
    return [_read_merge(n, merge, vocab, specials) for n, merge in enumerate(merges)]


def _read_merge(n: int, merge: Any, vocab: dict[bytes, int], specials: dict[str, int]) -> tuple[bytes, bytes]:
    """'Ġ t' (older files) or ['Ġ', 't'] -> (b' ', b't'); all three tokens must be in the vocab."""
    parts = merge.split(" ") if isinstance(merge, str) else merge
    if not (isinstance(parts, list) and len(parts) == 2 and all(isinstance(p, str) and p for p in parts)):
        raise UserError(f"model.merges[{n}]: {merge!r} is neither 'left right' nor [left, right]")
    for token in (parts[0], parts[1], parts[0] + parts[1]):
        if token in specials:
            raise UserError(f"model.merges[{n}]: token {token!r} is an added token; llmlab keeps added tokens "
                            "apart from the merges")
        if any(c not in CHAR_TO_BYTE for c in token) or from_chars(token) not in vocab:
            raise UserError(f"model.merges[{n}]: token {token!r} is not in model.vocab")
    return from_chars(parts[0]), from_chars(parts[1])


def _flatten(spec: dict[str, Any], key: str) -> Iterator[dict[str, Any]]:
    """The steps of a (possibly nested) Sequence, in order; {} for a step that is not an object."""
    if not isinstance(spec, dict):
        yield {}
    elif spec.get("type") == "Sequence":
        for step in spec.get(key) or []:
            yield from _flatten(step, key)
    else:
        yield spec


def _read_normalizer(spec: Any) -> str:
    """The llmlab normalizer name of the `normalizer` field."""
    if spec is None:
        return "none"
    if not isinstance(spec, dict):
        raise UserError("normalizer: not an object")
    names: list[str] = []
    for step in _flatten(spec, "normalizers"):
        kind = step.get("type")
        if kind not in HF_NORMALIZERS:
            raise UserError(f"normalizer: type {kind!r} is not supported; llmlab reads NFC, NFKC, Lowercase "
                            "and Sequences of them")
        names.append(HF_NORMALIZERS[kind])
    return _one_normalizer(names)


def _one_normalizer(names: list[str]) -> str:
    """The llmlab normalizer that a Sequence amounts to: [nfc, nfkc] -> nfkc (NFKC text is NFC already)."""
    kinds = set(names)
    if not kinds:
        return "none"
    if len(kinds) == 1:
        return names[0]
    if kinds == {"nfc", "nfkc"}:
        return "nfkc"
    raise UserError(f"normalizer: the Sequence {names} is not one llmlab normalizer (none, nfc, nfkc, lowercase)")


def _read_pre_tokenizer(spec: Any) -> tuple[PreTokenizer, bool]:
    """(pre-tokenizer, add_prefix_space) of the `pre_tokenizer` field."""
    if not isinstance(spec, dict):
        raise UserError("pre_tokenizer: missing; llmlab reads ByteLevel or Sequence[Split, ByteLevel]")
    steps = list(_flatten(spec, "pretokenizers"))
    prefix_space = bool(steps) and steps[0] == HF_PREFIX_SPACE  # as llmlab writes add_prefix_space
    if prefix_space:
        steps.pop(0)
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"]:
        (byte_level,) = steps
        if not byte_level.get("use_regex", True):
            raise UserError("pre_tokenizer: ByteLevel with use_regex false and no Split is not supported")
        return PreTokenizer.named("gpt2"), prefix_space or bool(byte_level.get("add_prefix_space", True))
    if kinds == ["Split", "ByteLevel"]:
        split, byte_level = steps
        if byte_level.get("use_regex", True):
            raise UserError("pre_tokenizer: ByteLevel after a Split must have use_regex false")
        if byte_level.get("add_prefix_space", True):
            raise UserError("pre_tokenizer: ByteLevel add_prefix_space after a Split puts a space before every "
                            "chunk; llmlab supports a space before the text only")
        return PreTokenizer.from_pattern(_read_split(split)), prefix_space
    unknown = [k for k in kinds if k not in ("Split", "ByteLevel")]
    if unknown:
        raise UserError(f"pre_tokenizer: type {unknown[0]!r} is not supported; llmlab reads ByteLevel "
                        "or Sequence[Split, ByteLevel]")
    raise UserError(f"pre_tokenizer: the Sequence {kinds} is not supported; llmlab reads ByteLevel "
                    "or Sequence[Split, ByteLevel]")


def _read_split(split: dict[str, Any]) -> str:
    pattern = split.get("pattern")
    if not (isinstance(pattern, dict) and isinstance(pattern.get("Regex"), str)):
        raise UserError(f"pre_tokenizer: Split pattern {pattern!r} is not supported; llmlab reads {{\"Regex\": ...}}")
    if split.get("behavior") != "Isolated" or split.get("invert", False):
        raise UserError(f"pre_tokenizer: Split behavior {split.get('behavior')!r} (invert "
                        f"{split.get('invert', False)}) is not supported; llmlab reads Isolated, invert false")
    try:
        regex.compile(pattern["Regex"])
    except regex.error as e:
        raise UserError(f"pre_tokenizer: Split pattern {pattern['Regex']!r} does not compile in Python's regex: {e}"
                        ) from None
    return pattern["Regex"]
