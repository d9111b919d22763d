"""Hugging Face `tokenizer.json` files for WordPiece (BERT-style): write them, and read them back.

The writing itself is `WordPieceTokenizer.to_hf_json` and `.vocab_txt` (wordpiece.py: a tokenizer
saves itself); the reading is here, above wordpiece.py.

The fields are those HF `tokenizers` writes for a BERT tokenizer, so `tokenizers.Tokenizer.from_file`,
`transformers.PreTrainedTokenizerFast(tokenizer_file=...)` and `BertTokenizerFast` load what llmlab writes:

    {"version": "1.0", "truncation": null, "padding": null,
     "added_tokens": [{"id": 0, "content": "[PAD]", "special": true, "normalized": false, ...}, ...],
     "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                    "strip_accents": null, "lowercase": true},
     "pre_tokenizer": {"type": "BertPreTokenizer"},
     "post_processor": {"type": "TemplateProcessing", ...} | null,     [CLS] $A [SEP] (and pairs)
     "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
     "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
               "max_input_chars_per_word": 100, "vocab": {"[PAD]": 0, ..., "##ing": 1234, ...}}}

The special tokens sit in `model.vocab` too, as in BERT's vocab.txt. The post-processor is
written when [CLS] and [SEP] are special tokens, so HF adds them by default as BERT models
expect; llmlab's `encode` never post-processes, and equals HF's `add_special_tokens=False`.

Next to it, `vocab.txt` is BERT's vocabulary file, one piece per line, line number = id
(readable, and `BertTokenizer(vocab_file=...)` loads it). That needs ids 0..N-1 without gaps.

Reading accepts WordPiece files llmlab did not write when their pipeline is BERT's:
normalizer BertNormalizer or null, pre_tokenizer BertPreTokenizer (alone or a one-step
Sequence), decoder WordPiece or null (llmlab decodes with the WordPiece decoder either way).
Added tokens become llmlab special tokens (hf_io.py says why). Ignored: post_processor,
truncation, padding, and added tokens' lstrip/rstrip/single_word/normalized flags.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmlab.errors import UserError
from llmlab.tokenizers.added_tokens import read_added_tokens
from llmlab.tokenizers.bert_text import BertNormalizer
from llmlab.tokenizers.wordpiece import BERT_NORMALIZER_FLAGS, WordPieceTokenizer

# ---------------------------------------------------------------------- reading


def from_hf_json(data: dict[str, Any]) -> WordPieceTokenizer:
    """A WordPiece tokenizer from a parsed tokenizer.json; UserErrors name the field at fault."""
    model = data.get("model")
    if not isinstance(model, dict) or model.get("type") != "WordPiece":
        raise UserError("model.type: not 'WordPiece'")
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not vocab:
        raise UserError("model.vocab: missing, empty or not an object")
    bad = next((t for t, i in vocab.items() if not isinstance(i, int) or isinstance(i, bool) or i < 0), None)
    if bad is not None:
        raise UserError(f"model.vocab: the id of {bad!r} is not a non-negative integer")
    options = {key: model.get(key, default) for key, default in
               (("unk_token", "[UNK]"), ("continuing_subword_prefix", "##"), ("max_input_chars_per_word", 100))}
    for key, value in options.items():
        expected = int if key == "max_input_chars_per_word" else str
        if not isinstance(value, expected) or isinstance(value, bool):
            raise UserError(f"model.{key}: {value!r} is not a {expected.__name__}")
    specials = read_added_tokens(data.get("added_tokens") or [])
    cleanup = _read_decoder(data.get("decoder"), options["continuing_subword_prefix"])
    _check_pre_tokenizer(data.get("pre_tokenizer"))
    try:
        return WordPieceTokenizer(vocab, special_tokens=specials, normalizer=_read_normalizer(data.get("normalizer")),
                                  decode_cleanup=cleanup, **options)
    except UserError as e:
        raise UserError(f"model: {e}") from None


def _read_normalizer(spec: Any) -> BertNormalizer:
    if spec is None:  # no normalizer: every BERT step off
        return BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=False, lowercase=False)
    if not isinstance(spec, dict) or spec.get("type") != "BertNormalizer":
        kind = spec.get("type") if isinstance(spec, dict) else spec
        raise UserError(f"normalizer: {kind!r} is not supported; llmlab's WordPiece reads BertNormalizer or null")
    flags = {flag: spec.get(flag, True) for flag in BERT_NORMALIZER_FLAGS}
    flags["strip_accents"] = spec.get("strip_accents")  # null: follow lowercase
    for flag, value in flags.items():
        if not (isinstance(value, bool) or (flag == "strip_accents" and value is None)):
            raise UserError(f"normalizer.{flag}: {value!r} is not true or false")
    return BertNormalizer(**flags)


def _check_pre_tokenizer(spec: Any) -> None:
    steps = spec.get("pretokenizers") if isinstance(spec, dict) and spec.get("type") == "Sequence" else [spec]
    if not (isinstance(steps, list) and len(steps) == 1 and isinstance(steps[0], dict)
            and steps[0].get("type") == "BertPreTokenizer"):
        raise UserError(f"pre_tokenizer: {spec!r} is not supported; llmlab's WordPiece reads BertPreTokenizer")


def _read_decoder(spec: Any, prefix: str) -> bool:
    """The decoder's `cleanup` flag (true when there is no decoder)."""
    if spec is None:
        return True
    if not isinstance(spec, dict) or spec.get("type") != "WordPiece":
        kind = spec.get("type") if isinstance(spec, dict) else spec
        raise UserError(f"decoder: {kind!r} is not supported; llmlab's WordPiece reads the WordPiece decoder or null")
    if spec.get("prefix", "##") != prefix:
        raise UserError(f"decoder.prefix: {spec.get('prefix')!r} differs from model.continuing_subword_prefix "
                        f"{prefix!r}")
    cleanup = spec.get("cleanup", True)
    if not isinstance(cleanup, bool):
        raise UserError(f"decoder.cleanup: {cleanup!r} is not true or false")
    return cleanup


def load_vocab_txt(path: str | Path) -> WordPieceTokenizer:
    """A BERT tokenizer from its `vocab.txt` (one piece per line, line number = id), as HF's
    `BertTokenizer(vocab_file=...)` builds it.

    The file does not say whether the model is cased. `do_lower_case` of a `tokenizer_config.json`
    beside it decides; without one the vocabulary does: a vocab with an uppercase letter in some
    piece is a cased one (bert-base-cased), else uncased (HF's default, do_lower_case=True).
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    vocab: dict[str, int] = {}
    for n, piece in enumerate(lines):
        piece = piece.rstrip("\r")
        if "\t" in piece:
            raise UserError(f"{path}:{n + 1}: a tab; not BERT's vocab.txt (llmlab's vocab listing is for people: "
                            "load the folder's tokenizer.json)")
        vocab.setdefault(piece, n)  # HF keeps the first of repeated lines
    lowercase = _do_lower_case(path.with_name("tokenizer_config.json"))
    if lowercase is None:
        lowercase = not any(c.isupper() for piece in vocab if not piece.startswith("[") for c in piece)
    try:
        return WordPieceTokenizer(vocab, normalizer=BertNormalizer(lowercase=lowercase))
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


def _do_lower_case(config: Path) -> bool | None:
    if not config.is_file():
        return None
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("do_lower_case")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise UserError(f"{config}: not a JSON object") from None
    if value is not None and not isinstance(value, bool):
        raise UserError(f"{config}: do_lower_case {value!r} is not true or false")
    return value
