"""Where the regex engines of the tokenizer world read one split pattern differently.

One pattern string runs in three engines: llmlab's (Python's `regex` module), tiktoken's
(fancy-regex over Rust's regex) and HF `tokenizers`' (Oniguruma, Ruby syntax). They agree on the
patterns in use except for one construct, an interval quantifier followed by `+`:

    \\p{N}{1,3}+      regex, fancy-regex: possessive {1,3}        "0000" -> "000", "0"
                     Oniguruma: the interval, repeated (+)      "0000" -> "0000"

cl100k_base's pattern has it, so a cl100k tokenizer.json splits '0000' one way in HF and the other
in tiktoken and llmlab. llmlab cannot give both readings, so it warns (`RegexEngineWarning`, one
line) when such a pattern is loaded from a tokenizer.json, written to one, or exported to tiktoken, naming the
construct and a string that splits differently (found with HF `tokenizers` itself when installed).
Possessive `?+ *+ ++` are possessive in all three engines and are not reported.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import regex

from llmlab.errors import LlmlabWarning


class RegexEngineWarning(LlmlabWarning):
    """A split pattern that HF tokenizers (Oniguruma) reads differently from tiktoken and llmlab."""


@dataclass(frozen=True)
class EngineDifference:
    construct: str  # the quantifier as written, with what it applies to: '\p{N}{1,3}+'
    position: int  # character offset of the quantifier in the pattern


_INTERVAL_PLUS = regex.compile(r"\{\d+(?:,\d*)?\}\+")
_CANDIDATES = ("0000", "0000000", "aaaa", "AAAA", "    ", "\n\n\n\n", "....", "!!!!", "aaaaaaa", "日本語日本語")


def engine_differences(pattern: str) -> list[EngineDifference]:
    """The interval-then-`+` quantifiers of `pattern`, outside character classes and escapes.

    >>> engine_differences(r"\\p{N}{1,3}+|\\s++")
    [EngineDifference(construct='\\\\p{N}{1,3}+', position=5)]
    """
    found: list[EngineDifference] = []
    i, n, in_class, atom_start = 0, len(pattern), False, 0
    while i < n:
        c = pattern[i]
        if c == "\\":
            start = i
            i += 2
            if i < n and pattern[i - 1] in "pPxNu" and pattern[i] == "{":  # \p{N}: its braces are no quantifier
                i = pattern.find("}", i) + 1 or n
            if not in_class:
                atom_start = start
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class, atom_start = True, i
            i += 1
            if i < n and pattern[i] == "]":  # "[]...]": a leading ] is a literal
                i += 1
            continue
        elif (m := _INTERVAL_PLUS.match(pattern, i)) is not None:
            found.append(EngineDifference(pattern[atom_start:m.end()], i))
            i = m.end()
            continue
        elif c not in "{}?*+|()":
            atom_start = i
        elif c == ")":
            atom_start = pattern.rfind("(", 0, i)  # an approximation for naming the construct only
        i += 1
    return found


def differing_example(pattern: str) -> tuple[str, list[str], list[str]] | None:
    """(text, HF's chunks, Python regex's chunks) for a short text the two split differently; None when
    HF `tokenizers` is not installed or no candidate differs."""
    try:
        from tokenizers import Regex, pre_tokenizers  # lazily: an optional dependency
    except ImportError:
        return None
    split = pre_tokenizers.Split(Regex(pattern), "isolated")
    compiled = regex.compile(pattern)
    for text in _CANDIDATES:
        ours = [m.group() for m in compiled.finditer(text) if m.group()]
        theirs = [piece for piece, _ in split.pre_tokenize_str(text)]
        if ours != theirs:
            return text, theirs, ours
    return None


def engine_warning(pattern: str, where: str) -> str | None:
    """The one-line warning for `pattern` (None when the engines agree on it)."""
    found = engine_differences(pattern)
    if not found:
        return None
    constructs = ", ".join(f"{d.construct!r} at character {d.position}" for d in found)
    message = (f"split pattern {where}: {constructs} reads differently in HF tokenizers (Oniguruma: the "
               "interval repeated by +) and in tiktoken and llmlab (possessive)")
    example = differing_example(pattern)
    if example is not None:
        text, theirs, ours = example
        message += f"; e.g. {text!r} splits as {theirs} in HF and as {ours} in tiktoken and llmlab"
    return message


def warn_engine_differences(pattern: str, where: str) -> None:
    """`warnings.warn` a RegexEngineWarning when the engines read `pattern` differently."""
    message = engine_warning(pattern, where)
    if message is not None:
        warnings.warn(message, RegexEngineWarning, stacklevel=3)
