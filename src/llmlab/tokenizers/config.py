"""Configs of the `llmlab tokenizer ...` commands."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmlab.config import check, require
from llmlab.tokenizers.trainers import TRAINERS

_BPE_SPECIALS = ("<|endoftext|>",)
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # wordpiece.DEFAULT_SPECIAL_TOKENS


@dataclass(frozen=True)
class TrainTokenizerConfig:
    """`llmlab tokenizer train`.

    What each algorithm takes (anything else is a ConfigError that says why):

        option           bpe          unigram                      wordpiece
        pre_tokenizer    any (gpt2)   any (none: spaces only, "▁")  none: BERT's (whitespace + punctuation)
        byte_fallback    -            yes (default on: lossless)   -
        score            -            -                            likelihood | frequency
        min_frequency    yes          -                            yes
        normalizer       yes          - (NFKC)                     - (BERT's)
    """

    algo: Literal["bpe", "wordpiece", "unigram"] = "bpe"
    vocab_size: int = 8192  # bpe: 256 bytes + merges + special tokens
    min_frequency: int = 2  # a pair seen fewer times is never merged (bpe, wordpiece)
    input: tuple[str, ...] = ()  # text files; empty: the task world's pretraining corpus
    corpus_chars: int = 2_000_000  # size of the built-in corpus when no input is given
    # None: the algorithm's own (bpe: gpt2; unigram: spaces only; wordpiece: BERT's, the only choice)
    pre_tokenizer: Literal["gpt2", "cl100k", "digits", "whitespace", "words", "script"] | None = None
    normalizer: Literal["none", "nfc", "nfkc", "lowercase"] = "none"  # bpe only
    # left as is with algo=wordpiece: BERT's [PAD] [UNK] [CLS] [SEP] [MASK] instead
    special_tokens: tuple[str, ...] = _BPE_SPECIALS
    workers: int = 0  # bpe: processes counting words (0: one per core for files); unigram: threads (0: one per core)
    errors: Literal["strict", "replace"] = "strict"  # non-UTF-8 bytes in the input
    # unigram: characters in no piece become <0xNN> byte pieces (None: on, so no text is lost; false gives <unk>)
    byte_fallback: bool | None = None
    score: Literal["likelihood", "frequency"] = "likelihood"  # wordpiece's merge criterion (frequency: as HF)
    language_input: tuple[str, ...] = ()  # LANG=FILE per language, for language-balanced training
    language_alpha: float | None = None  # sample language i with p_i ∝ n_i^alpha (XLM-R: 0.3); None: as given

    def __post_init__(self) -> None:
        check(self.algo != "wordpiece" or self.pre_tokenizer is None,
              "pre_tokenizer applies to algo=bpe and algo=unigram; WordPiece splits text with BERT's "
              "pre-tokenizer (whitespace and punctuation), as HF's BertPreTokenizer")
        why = "byte-level BPE has every byte already" if self.algo == "bpe" else "WordPiece's unknown word is [UNK]"
        check(self.algo == "unigram" or not self.byte_fallback, f"byte_fallback applies to algo=unigram only ({why})")
        check(self.algo == "wordpiece" or self.score == "likelihood", "score applies to algo=wordpiece only")
        check(self.algo == "bpe" or self.normalizer == "none",
              f"normalizer applies to algo=bpe only ({self.algo} has its own: "
              f"{'NFKC' if self.algo == 'unigram' else 'BERT normalisation'})")
        check(self.algo != "wordpiece" or "[UNK]" in self.resolved_special_tokens,
              f"algo=wordpiece needs [UNK] among special_tokens (BERT's: {','.join(BERT_SPECIALS)})")
        check(not (self.language_input and self.input), "give --input or --language-input, not both")
        check(self.language_alpha is None or bool(self.language_input),
              "language_alpha needs per-language inputs (--language-input LANG=FILE ...)")
        check(self.language_alpha is None or self.language_alpha >= 0,
              f"language_alpha must be >= 0, got {self.language_alpha}")
        for item in self.language_input:
            lang, sep, path = item.partition("=")
            check(bool(sep and lang and path), f"language_input {item!r} is not LANG=FILE")
        floor = 256 + len(self.special_tokens)
        check(self.vocab_size >= floor, f"vocab_size {self.vocab_size} is smaller than 256 bytes + "
              f"{len(self.special_tokens)} special tokens = {floor}")
        check(self.min_frequency >= 1, f"min_frequency must be at least 1, got {self.min_frequency}")
        check(all(self.special_tokens), "a special token is the empty string")
        check(len(set(self.special_tokens)) == len(self.special_tokens), "a special token is given twice")
        check(self.workers >= 0, f"workers must be >= 0, got {self.workers}")
        check(self.corpus_chars >= 1000, f"corpus_chars must be at least 1000, got {self.corpus_chars}")

    @property
    def resolved_byte_fallback(self) -> bool:
        """Unigram's byte fallback: on unless turned off (the trainer's own default, as SentencePiece's, is off)."""
        return self.algo == "unigram" and self.byte_fallback is not False

    @property
    def resolved_special_tokens(self) -> tuple[str, ...]:
        """The special tokens, with BERT's for wordpiece when they were left at the default."""
        if self.algo == "wordpiece" and self.special_tokens == _BPE_SPECIALS:
            return BERT_SPECIALS
        return self.special_tokens


@dataclass(frozen=True)
class EncodeConfig:
    """`llmlab tokenizer encode`."""

    tokenizer: str = ""
    text: str | None = None
    input: str | None = None
    ids: bool = False
    allowed_special: tuple[str, ...] = ()  # ("all",) for every special token
    errors: Literal["strict", "replace"] = "strict"

    def __post_init__(self) -> None:
        require(bool(self.tokenizer), "tokenizer is required (--tokenizer DIR)")
        require(self.text is not None or self.input is not None, "give exactly one of --text and --input")
        check(self.text is None or self.input is None, "give exactly one of --text and --input")


@dataclass(frozen=True)
class DecodeConfig:
    """`llmlab tokenizer decode`."""

    tokenizer: str = ""
    ids: str | None = None
    input: str | None = None

    def __post_init__(self) -> None:
        require(bool(self.tokenizer), "tokenizer is required (--tokenizer DIR)")
        require(self.ids is not None or self.input is not None, "give exactly one of --ids and --input")
        check(self.ids is None or self.input is None, "give exactly one of --ids and --input")


@dataclass(frozen=True)
class StatsConfig:
    """`llmlab tokenizer stats`."""

    tokenizer: tuple[str, ...] = ()
    eval: tuple[str, ...] = ()  # text files; empty: built-in parallel sentences in 7 languages
    eval_sentences: int = 200  # size of the built-in evaluation text, per language
    top_n: int = 10

    def __post_init__(self) -> None:
        require(bool(self.tokenizer), "tokenizer is required (--tokenizer DIR [DIR ...])")
        check(self.eval_sentences >= 1, f"eval_sentences must be at least 1, got {self.eval_sentences}")
        check(self.top_n >= 1, f"top_n must be at least 1, got {self.top_n}")


@dataclass(frozen=True)
class CompareConfig:
    """`llmlab tokenizer compare`."""

    tokenizer: tuple[str, ...] = ()
    text: str | None = None
    input: str | None = None

    def __post_init__(self) -> None:
        require(bool(self.tokenizer), "tokenizer is required (--tokenizer A [B ...])")
        require(self.text is not None or self.input is not None, "give exactly one of --text and --input")
        check(self.text is None or self.input is None, "give exactly one of --text and --input")


@dataclass(frozen=True)
class SweepConfig:
    """`llmlab tokenizer sweep`."""

    algos: tuple[str, ...] = ("bpe", "wordpiece", "unigram")
    vocab_sizes: tuple[str, ...] = ("1k", "2k", "4k")  # k = 1024
    input: tuple[str, ...] = ()  # empty: the task world's corpus + built-in multilingual sentences
    eval: tuple[str, ...] = ()  # empty: built-in parallel sentences (another seed) + code-mixed text
    corpus_chars: int = 200_000  # size of each built-in training part
    pre_tokenizer: Literal["gpt2", "cl100k", "digits", "whitespace", "words", "script"] = "gpt2"  # for bpe

    def __post_init__(self) -> None:
        check(bool(self.algos), "algos must name at least one algorithm")
        for algo in self.algos:
            check(algo in TRAINERS, f"unknown algorithm {algo!r}; choose from {', '.join(TRAINERS)}")
        check(bool(self.vocab_sizes), "vocab_sizes must list at least one size")
        for size in self.vocab_sizes:
            check(parse_size(size) is not None, f"vocab size {size!r} is not a number like 4096 or 4k")
        check(self.corpus_chars >= 1000, f"corpus_chars must be at least 1000, got {self.corpus_chars}")


@dataclass(frozen=True)
class ExtendConfig:
    """`llmlab tokenizer extend`."""

    tokenizer: str = ""
    domain: str | None = None  # a text file of the domain
    num_tokens: int = 0  # new tokens to learn on the domain (continued BPE merges)
    tokens: tuple[str, ...] = ()  # or: these strings as new tokens
    min_frequency: int = 2

    def __post_init__(self) -> None:
        require(bool(self.tokenizer), "tokenizer is required (--tokenizer DIR)")
        require(self.num_tokens > 0 or bool(self.tokens), "give exactly one of --num-tokens N and --tokens a,b,c")
        check(not (self.num_tokens > 0 and self.tokens), "give exactly one of --num-tokens N and --tokens a,b,c")
        check(self.num_tokens >= 0, f"num_tokens must be >= 0, got {self.num_tokens}")
        check(self.num_tokens == 0 or self.domain is not None, "--num-tokens learns on a --domain FILE")


def parse_size(text: str) -> int | None:
    """'4k' -> 4096, '32K' -> 32768, '1000' -> 1000; None if neither.

    >>> parse_size("1k"), parse_size("300")
    (1024, 300)
    """
    text = text.strip().lower()
    scale = 1024 if text.endswith("k") else 1
    digits = text[:-1] if scale > 1 else text
    return int(digits) * scale if digits.isdigit() and int(digits) > 0 else None
