"""Two tokenizer-training experiments on the built-in multilingual corpora, as functions that return tables.

    balanced_training_report(...)   each language's fertility when the tokenizer is trained on
                                    the plain concatenation (natural shares) and on a corpus
                                    re-sampled with p_i ∝ n_i^alpha (sampling.py, XLM-R)
    code_mixed_comparison(...)      BPE with the GPT-2 pre-tokenizer, BPE with the script-aware
                                    one, plain Unigram and the hybrid (Unigram with byte fallback,
                                    on script-split text) on a code-mixed evaluation set

Both train small tokenizers, so a call takes seconds; docs/tokenizers.md shows their tables.
A setup whose algorithm is not available in this llmlab is left out of the table and named
in `missing`. Left out: a downstream model (these are tokenizer-side numbers only).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmlab.data.multilingual import code_mixed, language_corpus
from llmlab.errors import UserError
from llmlab.tokenizers.analysis import analyze
from llmlab.tokenizers.sampling import balanced_corpus, language_weights
from llmlab.tokenizers.trainers import train_tokenizer

# A skewed multilingual corpus: English dominates, as it does in web crawls.
SKEWED_CHARS: dict[str, int] = {"en": 240_000, "de": 40_000, "ru": 20_000, "el": 10_000, "hi": 10_000,
                                "ar": 10_000, "ja": 10_000}


@dataclass(frozen=True)
class LanguageRow:
    lang: str
    share_plain: float  # the language's share of the plain training corpus
    share_sampled: float
    fertility_plain: float
    fertility_sampled: float
    bytes_per_token_plain: float
    bytes_per_token_sampled: float


def builtin_corpora(sizes: Mapping[str, int], *, seed: int) -> dict[str, str]:
    return {lang: language_corpus(lang, chars, seed) for lang, chars in sizes.items()}


def balanced_training_report(texts: Mapping[str, str], eval_texts: Mapping[str, str], *, vocab_size: int,
                             alpha: float, algo: str = "bpe", seed: int = 0, **train_kw: Any) -> list[LanguageRow]:
    """Per language: fertility on `eval_texts` of a tokenizer trained on `texts` as they are, and on
    `texts` re-sampled to shares p_i ∝ n_i^alpha (same total size)."""
    sampled = balanced_corpus(texts, alpha, seed=seed)
    plain_tok = train_tokenizer(algo, list(texts.values()), vocab_size=vocab_size, **train_kw)
    sampled_tok = train_tokenizer(algo, list(sampled.values()), vocab_size=vocab_size, **train_kw)
    plain_share = language_weights({k: len(v) for k, v in texts.items()}, 1.0)
    sampled_share = language_weights({k: len(v) for k, v in sampled.items()}, 1.0)
    rows = []
    for lang, text in eval_texts.items():
        a, b = analyze(plain_tok, text), analyze(sampled_tok, text)
        rows.append(LanguageRow(lang, plain_share.get(lang, 0.0), sampled_share.get(lang, 0.0), a.fertility,
                                b.fertility, a.bytes_per_token, b.bytes_per_token))
    return rows


def balanced_table(rows: list[LanguageRow], alpha: float) -> str:
    lines = [f"| lang | share plain | share α={alpha} | fertility plain | fertility α={alpha} | "
             "bytes/token plain | bytes/token sampled |", "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.lang} | {r.share_plain:.1%} | {r.share_sampled:.1%} | {r.fertility_plain:.2f} | "
              f"{r.fertility_sampled:.2f} | {r.bytes_per_token_plain:.2f} | {r.bytes_per_token_sampled:.2f} |"
              for r in rows]
    return "\n".join(lines)


# name -> (algorithm, trainer keywords)
SETUPS: dict[str, tuple[str, dict[str, Any]]] = {
    "bpe gpt2": ("bpe", {"pre_tokenizer": "gpt2"}),
    "bpe script": ("bpe", {"pre_tokenizer": "script"}),
    "unigram": ("unigram", {}),
    "unigram byte-fallback": ("unigram", {"byte_fallback": True}),
    "unigram byte-fallback script (hybrid)": ("unigram", {"byte_fallback": True, "pre_tokenizer": "script"}),
}


@dataclass(frozen=True)
class SetupRow:
    setup: str
    bytes_per_token: float
    fertility: float
    continued_words: float
    unk_rate: float
    partial_rate: float
    alignment: str


@dataclass(frozen=True)
class Comparison:
    rows: tuple[SetupRow, ...]
    missing: tuple[str, ...]  # setups that could not be trained here, with the reason


def code_mixed_comparison(train_texts: list[str], eval_text: str, *, vocab_size: int,
                          setups: Mapping[str, tuple[str, dict[str, Any]]] = SETUPS) -> Comparison:
    """Each setup trained on `train_texts` and measured on `eval_text`."""
    rows, missing = [], []
    for name, (algo, kw) in setups.items():
        try:
            tok = train_tokenizer(algo, train_texts, vocab_size=vocab_size, **kw)
        except (UserError, TypeError) as e:  # the algorithm is missing, or does not take this option
            missing.append(f"{name}: {e}")
            continue
        s = analyze(tok, eval_text)
        rows.append(SetupRow(name, s.bytes_per_token, s.fertility, s.continued_words, s.unk_rate, s.partial_rate,
                             s.alignment))
    return Comparison(tuple(rows), tuple(missing))


def comparison_table(result: Comparison) -> str:
    lines = ["| setup | bytes/token | fertility | continued words | UNK rate | partial tokens |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.setup} | {r.bytes_per_token:.2f} | {r.fertility:.2f} | {r.continued_words:.1%} | "
              f"{r.unk_rate:.2%} | {r.partial_rate:.2%} |" for r in result.rows]
    return "\n".join(lines)


def code_mixed_corpora(*, train_chars_per_lang: int = 20_000, n_train: int = 600, n_eval: int = 150,
                       seed: int = 0) -> tuple[list[str], str]:
    """(training texts, evaluation text): English, Hindi, Russian, German and Japanese sentences
    plus code-mixed samples for training; code-mixed samples of another seed for evaluation."""
    texts = list(builtin_corpora({lang: train_chars_per_lang for lang in ("en", "hi", "ru", "de", "ja")},
                                 seed=seed).values())
    texts += code_mixed(n_train, seed)
    return texts, "\n".join(code_mixed(n_eval, seed + 1))
