"""Language-balanced training corpora: temperature sampling over languages, as XLM-R.

Conneau et al. 2020 (XLM-R, https://arxiv.org/abs/1911.02116) sample a language with

    p_i = q_i^alpha / sum_j q_j^alpha,   q_i = n_i / sum_j n_j   (n_i: size of language i)

alpha = 1 keeps the natural shares, alpha = 0 gives every language the same share, and
XLM-R's alpha = 0.3 sits between: low-resource languages are up-sampled, so the tokenizer
learns their merges instead of spending the vocabulary on the largest language.

    language_weights({"en": 900, "hi": 100}, 0.5)   # q = (0.9, 0.1); q^0.5 = (0.949, 0.316)
    -> {"en": 0.75, "hi": 0.25}

`balanced_corpus` then builds a training corpus of a given size with those shares, taking
whole lines in a seeded order and repeating a language's lines when its share needs more
than it has. Left out: sampling sentences one at a time during training (the share of a
tokenizer corpus is what matters here) and per-document weighting.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from llmlab.errors import UserError


def language_weights(sizes: Mapping[str, int], alpha: float) -> dict[str, float]:
    """p_i proportional to n_i^alpha (the same as q_i^alpha: the normaliser cancels)."""
    if alpha < 0:
        raise UserError(f"language alpha must be >= 0, got {alpha}")
    if not sizes or any(n <= 0 for n in sizes.values()):
        raise UserError("every language needs some text to sample from")
    powered = {lang: n ** alpha for lang, n in sizes.items()}
    total = sum(powered.values())
    return {lang: v / total for lang, v in powered.items()}


def language_budgets(sizes: Mapping[str, int], alpha: float, total: int) -> dict[str, int]:
    """Characters per language: round(p_i * total), each at least 1."""
    return {lang: max(1, round(p * total)) for lang, p in language_weights(sizes, alpha).items()}


def take_chars(lines: list[str], budget: int, rng: random.Random) -> list[str]:
    """Whole lines, in a shuffled order (cycled, reshuffled each pass), until `budget` characters."""
    if not lines:
        raise UserError("a language has no lines to sample from")
    out: list[str] = []
    size = 0
    while size < budget:
        order = lines[:]
        rng.shuffle(order)
        for line in order:
            out.append(line)
            size += len(line) + 1
            if size >= budget:
                break
    return out


def balanced_corpus(texts: Mapping[str, str], alpha: float, *, total_chars: int | None = None,
                    seed: int = 0) -> dict[str, str]:
    """Per language, a text of about p_i * total_chars characters (default total: all the input).

    Sizes n_i are counted in characters. The result keeps languages apart so that callers
    can report on each; concatenate the values to train on it.
    """
    sizes = {lang: len(text) for lang, text in texts.items()}
    budgets = language_budgets(sizes, alpha, total_chars if total_chars is not None else sum(sizes.values()))
    rng = random.Random(seed)
    return {lang: "\n".join(take_chars([ln for ln in texts[lang].splitlines() if ln.strip()], budget, rng)) + "\n"
            for lang, budget in budgets.items()}
