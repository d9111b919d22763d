"""Pre-tokenizers: split text into chunks that BPE merges never cross.

Each is one regular expression (the `regex` module, for `\\p{L}` classes), chosen by name:

    gpt2        GPT-2's pattern: contractions, ` ?letters`, ` ?digits`, ` ?other`, whitespace
    cl100k      GPT-4's: case-insensitive contractions, digits in groups of at most 3, newlines apart
    digits      gpt2 with every digit its own chunk (numbers tokenize digit by digit, as in Llama)
    whitespace  runs of non-space and runs of space; lossless, unlike HF's `Whitespace`,
                which drops the spaces
    words       letters, digits (groups of at most 3), other symbols and whitespace each their own
                chunk: a word is the same token after a space, a newline or at the start of a
                message, so copying it from the prompt is copying one id (what a small model
                learns first; GPT-2's " 21" and "21" are two unrelated tokens)
    script      for multilingual and code-mixed text: a chunk never spans two scripts
                (Latin, Cyrillic, Greek, Devanagari, Arabic, ... runs), each CJK ideograph is a
                chunk and each kana run is one (CJK has no spaces to split at), every digit is
                a chunk and every punctuation or symbol character is one (`==`, `->`, `("` in
                code become single-character chunks that BPE cannot glue to words)

`script` splits digits one by one rather than cl100k's groups of up to 3: a multilingual
vocabulary is short of room for words, and 1-3 digit groups would take up to 1,110 of it,
while single digits make numbers tokenize the same way in every script and context.
The script names are Unicode Script properties (`\\p{Cyrillic}`), which Python's `regex`
and HF tokenizers' Oniguruma read alike, so the pattern runs unchanged from tokenizer.json.

Every pattern matches every character of any input, so the chunks join back to the
text exactly (a test checks it). A file may be cut into blocks between a line that ends in
"<non-space>\n" and a line that starts with a non-space character: with every pattern here a
chunk ends at that "\n" and the chunks before it are the same with or without the text
after it, which is what lets the trainer count a large file in parallel blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import regex

from llmlab.errors import UserError

GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
CL100K = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
          r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
DIGITS = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
WHITESPACE = r"""\S+|\s+"""
WORDS = r"""\p{L}+|\p{N}{1,3}|[^\s\p{L}\p{N}]+|\s+"""
_ALPHABETS = ("Latin", "Cyrillic", "Greek", "Armenian", "Georgian", "Hebrew", "Arabic", "Devanagari", "Bengali",
              "Gujarati", "Tamil", "Telugu", "Thai", "Hangul")
SCRIPT = ("|".join(rf" ?[\p{{{name}}}\p{{M}}]+" for name in _ALPHABETS)
          + r"""| ?\p{Han}\p{M}*| ?\p{Hiragana}+| ?[\p{Katakana}ー]+| ?\p{L}\p{M}*|\p{N}| ?[^\s\p{L}\p{N}]"""
          r"""|\s+(?!\S)|\s+""")

PATTERNS: dict[str, str] = {"gpt2": GPT2, "cl100k": CL100K, "digits": DIGITS, "whitespace": WHITESPACE, "words": WORDS,
                         "script": SCRIPT}


@dataclass(frozen=True)
class PreTokenizer:
    """A split pattern, by name (`gpt2`) or as a raw regex (for tokenizer.json files we load)."""

    pattern: str
    name: str = field(default="custom", compare=False)

    @classmethod
    def named(cls, name: str) -> PreTokenizer:
        if name not in PATTERNS:
            raise UserError(f"unknown pre-tokenizer {name!r}; choose one of {', '.join(PATTERNS)}")
        return cls(PATTERNS[name], name)

    @classmethod
    def from_pattern(cls, pattern: str) -> PreTokenizer:
        name = next((n for n, p in PATTERNS.items() if p == pattern), "custom")
        return cls(pattern, name)

    @cached_property
    def compiled(self) -> regex.Pattern[str]:
        return regex.compile(self.pattern)

    def split(self, text: str) -> list[str]:
        return self.compiled.findall(text)

# The patterns of OpenAI's public encodings, as tiktoken ships them (tiktoken_ext/openai_public.py).
# A .tiktoken rank file holds no pattern; these are what `load_tiktoken(path, encoding=...)` pairs it with.
# They are not among PATTERNS (the trainer's choices): `cl100k` above is the older spelling without
# possessive quantifiers, which HF tokenizers reads the same way as Python's regex (regex_engines.py).
R50K_BASE = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
CL100K_BASE = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
               r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
O200K_BASE = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
# Split patterns of other published tokenizers (read through hf_io; fastbpe.py scans them in C), written
# from their published files; no copy could be downloaded here to compare the strings with.
TEKKEN = "|".join([  # Mistral's tekken (o200k's letters without the contraction, single digits)
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*""",
    r"""\p{N}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])

# Qwen2's tokenizer.json: cl100k's (Llama 3's) split with single digits
QWEN2 = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"""
         r"""|\s+(?!\S)|\s+""")

ENCODING_PATTERNS: dict[str, str] = {"gpt2": R50K_BASE, "r50k_base": R50K_BASE, "p50k_base": R50K_BASE,
                                     "p50k_edit": R50K_BASE, "cl100k_base": CL100K_BASE, "o200k_base": O200K_BASE}
