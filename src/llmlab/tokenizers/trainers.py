"""One call to train any of llmlab's tokenizers by algorithm name: bpe, wordpiece or unigram.

    tok = train_tokenizer("unigram", texts, vocab_size=4096, byte_fallback=True)

A plain dict from name to a small adapter. The Unigram trainer (NumPy) is imported when it is
called, so that training BPE or WordPiece never imports NumPy. The pre-tokenizer (`gpt2`, `script`, ...)
is passed to the trainers that split text with a regex: BPE, and Unigram (which otherwise
splits at spaces only, "▁"); WordPiece splits with BERT's pre-tokenizer, so for it
`pre_tokenizer` must stay the default.
Left out: progress callbacks (the `tokenizer train` command wires BPE's own).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from llmlab.errors import UserError
from llmlab.tokenizers.base import Tokenizer
from llmlab.tokenizers.bpe_train import train_bpe
from llmlab.tokenizers.wordpiece_train import train_wordpiece


def _bpe(texts: Sequence[str], vocab_size: int, **kw: Any) -> Tokenizer:
    kw.pop("byte_fallback", None)  # byte-level BPE has every byte already
    return train_bpe(texts, vocab_size=vocab_size, **kw)


def _wordpiece(texts: Sequence[str], vocab_size: int, **kw: Any) -> Tokenizer:
    _only_default_pre_tokenizer("wordpiece", kw)
    kw.pop("byte_fallback", None)
    return train_wordpiece(texts, vocab_size, **kw)


def _unigram(texts: Sequence[str], vocab_size: int, **kw: Any) -> Tokenizer:
    from llmlab.tokenizers.unigram_train import train_unigram  # NumPy: imported only to train a Unigram

    return train_unigram(texts, vocab_size, **kw)  # pre_tokenizer: chunks before the lattice (None: spaces only)


def _only_default_pre_tokenizer(algo: str, kw: dict[str, Any]) -> None:
    name = kw.pop("pre_tokenizer", None)
    if name not in (None, "gpt2"):
        raise UserError(f"pre_tokenizer {name!r} applies to bpe and unigram; {algo} splits text with BERT's "
                        "pre-tokenizer (whitespace and punctuation)")


class AlgorithmUnavailable(UserError):
    """The algorithm's trainer is not part of this llmlab."""


TRAINERS: dict[str, Callable[..., Tokenizer]] = {"bpe": _bpe, "wordpiece": _wordpiece, "unigram": _unigram}


def train_tokenizer(algo: str, texts: Sequence[str], *, vocab_size: int, **kw: Any) -> Tokenizer:
    """Train `algo` on `texts`; `kw` goes to its trainer (special_tokens, pre_tokenizer, byte_fallback...)."""
    if algo not in TRAINERS:
        raise UserError(f"unknown algorithm {algo!r}; choose one of {', '.join(TRAINERS)}")
    try:
        return TRAINERS[algo](list(texts), vocab_size, **kw)
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("llmlab.tokenizers."):
            raise AlgorithmUnavailable(f"algorithm {algo!r} is not available in this llmlab ({e.name} is missing)") from None
        raise
