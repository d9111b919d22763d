"""Hugging Face `tokenizer.json` files for byte-level BPE: write them, and read them back; and
`load_tokenizer`, the one entry point that reads every format llmlab knows by sniffing it (the
table below `FORMATS`: tokenizer.json, GPT-2's vocab.json + merges.txt, .tiktoken, SentencePiece
.model, BERT vocab.txt).

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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import regex

from llmlab.errors import UserError
from llmlab.tokenizers.added_tokens import read_added_tokens
from llmlab.tokenizers.base import Tokenizer
from llmlab.tokenizers.bpe import HF_PREFIX_SPACE, BPETokenizer
from llmlab.tokenizers.bytelevel import CHAR_TO_BYTE, from_chars, to_chars
from llmlab.tokenizers.normalizers import HF_NORMALIZERS
from llmlab.tokenizers.pre_tokenizers import PreTokenizer
from llmlab.tokenizers.regex_engines import warn_engine_differences
from llmlab.tokenizers.sp_bpe import from_hf_json as sp_bpe_from_hf_json
from llmlab.tokenizers.tiktoken_file import load_tiktoken
from llmlab.tokenizers.unigram_io import from_hf_json as unigram_from_hf_json
from llmlab.tokenizers.unigram_io import load_sentencepiece_model
from llmlab.tokenizers.wordpiece_io import from_hf_json as wordpiece_from_hf_json
from llmlab.tokenizers.wordpiece_io import load_vocab_txt

# ---------------------------------------------------------------------- writing


def save_tokenizer(tok: BPETokenizer, directory: str | Path) -> None:
    """Write `tokenizer.json` (HF format) and `vocab.txt` into `directory`, each atomically: `tok.save`,
    which writes `tok.to_hf_json()` and `tok.vocab_listing()` (bpe.py: a tokenizer saves itself)."""
    tok.save(directory)


# ---------------------------------------------------------------------- reading


# ---------------------------------------------------------------------- one entry point

#  format                    sniffed by (first bytes)                      read by
#  tokenizer.json            *.json, or JSON: "model"                    from_hf_json (BPE, WordPiece, Unigram)
#  GPT-2 vocab.json          JSON object of token -> id, merges.txt beside  load_gpt2_files
#  GPT-2 merges.txt          "#version" first line, vocab.json beside       load_gpt2_files
#  .tiktoken rank file       first line "base64 rank" (Llama 3's tokenizer.model too)  tiktoken_file.load_tiktoken
#  SentencePiece .model      protobuf: first byte 0x0A (field 1, a piece)  unigram_io.load_sentencepiece_model
#  BERT vocab.txt            text with a "[UNK]" line                      wordpiece_io.load_vocab_txt
# A folder: the first of FOLDER_FILES that is there (tokenizer.json before the rest).
# load_sentencepiece_model returns whatever model the .model file holds (a new model type is a case there).

FOLDER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model",
                "*.model", "*.tiktoken", "vocab.txt")
_HEAD = 4096
_TIKTOKEN_LINE = regex.compile(rb"[A-Za-z0-9+/]+=*[ ]\d+\r?(?:\n|$)")


def _is_json(path: Path, head: bytes) -> bool:
    return path.suffix == ".json" or head.lstrip().startswith(b"{")


def _is_merges_txt(path: Path, head: bytes) -> bool:
    return head.startswith(b"#version") or path.name == "merges.txt"


def _is_tiktoken(path: Path, head: bytes) -> bool:
    return _TIKTOKEN_LINE.match(head) is not None


def _is_sentencepiece(path: Path, head: bytes) -> bool:
    return head[:1] == b"\x0a"


def _is_vocab_txt(path: Path, head: bytes) -> bool:
    return b"\n[UNK]" in b"\n" + head.replace(b"\r", b"")


def _load_json(path: Path, **options: Any) -> Tokenizer:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not JSON ({e})") from None
    if isinstance(data, dict) and data and "model" not in data and all(isinstance(v, int) for v in data.values()):
        return load_gpt2_files(path.with_name("merges.txt"), vocab=data)
    try:
        return from_hf_json(data, source=str(path))
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


FORMATS: dict[str, tuple[Callable[[Path, bytes], bool], Callable[..., Tokenizer]]] = {
    "tokenizer.json / vocab.json": (_is_json, _load_json),
    "merges.txt": (_is_merges_txt, lambda path: load_gpt2_files(path)),
    ".tiktoken": (_is_tiktoken, load_tiktoken),
    "SentencePiece .model": (_is_sentencepiece, load_sentencepiece_model),
    "BERT vocab.txt": (_is_vocab_txt, load_vocab_txt),
}


def load_tokenizer(path: str | Path, **options: Any) -> Tokenizer:
    """Any tokenizer llmlab reads, from its file or the folder that holds it, by sniffing the format
    (the table above). `options` go to the .tiktoken reader: `encoding`, `pattern`, `special_tokens`."""
    path = Path(path)
    if path.is_dir():
        found = next((f for name in FOLDER_FILES for f in sorted(path.glob(name)) if f.is_file()), None)
        if found is None:
            raise UserError(f"{path}: no tokenizer file in the folder (looked for {', '.join(FOLDER_FILES)})")
        path = found
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    with path.open("rb") as f:
        head = f.read(_HEAD)
    for name, (sniff, load) in FORMATS.items():
        if sniff(path, head):
            if options and load is not load_tiktoken:
                raise UserError(f"{path}: options {', '.join(options)} apply to .tiktoken files; this is {name}")
            try:
                return load(path, **options)
            except UserError as e:  # every message names the file
                raise UserError(str(e) if str(e).startswith(str(path)) else f"{path}: {e}") from None
    raise UserError(f"{path}: not a tokenizer format llmlab reads ({', '.join(FORMATS)})")


def load_gpt2_files(merges_txt: Path, *, vocab: dict[str, int] | None = None) -> BPETokenizer:
    """GPT-2's original pair: `vocab.json` (byte-level token -> id) and `merges.txt` ("#version" line,
    then "a b" per merge), read as HF's `GPT2Tokenizer` reads them: the GPT-2 pattern, no prefix space.
    Tokens that no merge makes and that are not single bytes (GPT-2's <|endoftext|>) become special
    tokens, as the model's tokenizer_config declares them."""
    vocab_json = merges_txt.with_name("vocab.json")
    if vocab is None:
        if not vocab_json.is_file():
            raise UserError(f"{merges_txt}: GPT-2's merges.txt needs its vocab.json beside it")
        try:
            vocab = json.loads(vocab_json.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{vocab_json}: not JSON ({e})") from None
    if not merges_txt.is_file():
        raise UserError(f"{vocab_json}: GPT-2's vocab.json needs its merges.txt beside it")
    lines = merges_txt.read_text(encoding="utf-8").splitlines()
    merges = [line for line in lines[1 if lines and lines[0].startswith("#version") else 0:] if line.strip()]
    made = {"".join(line.split(" ")) for line in merges}
    specials = [{"id": i, "content": t, "special": True} for t, i in (vocab or {}).items()
                if isinstance(i, int) and len(t) > 1 and t not in made]
    data = {"added_tokens": specials, "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
            "model": {"type": "BPE", "vocab": vocab, "merges": merges}}
    try:
        tok = from_hf_json(data, source=str(merges_txt))
    except UserError as e:
        raise UserError(f"{merges_txt.parent}: {e}") from None
    assert isinstance(tok, BPETokenizer)
    return tok


def from_hf_json(data: Any, source: str = "a tokenizer.json") -> Tokenizer:
    """A tokenizer from a parsed tokenizer.json; UserErrors name the field at fault. A split pattern
    that HF's regex engine reads differently from llmlab's is warned about (regex_engines.py)."""
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
    warn_engine_differences(pre_tokenizer.pattern, f"loaded from {source}")
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
