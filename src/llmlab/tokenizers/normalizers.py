"""Normalizers: the first stage of the pipeline, text -> text.

Chosen by name. Any normalizer but `none` makes decoding return the normalized text,
not the original: that is the trade it makes (NFKC folds "ﬁ" into "fi", so the
vocabulary needs one token fewer, and the exact input is gone).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable


def identity(text: str) -> str:
    return text


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def lowercase(text: str) -> str:
    # subtle: str.lower() turns a word-final Σ into ς; HF lowercases per character (σ), and we match HF.
    return text.replace("Σ", "σ").lower()


# Module-level functions, not lambdas, so that tokenizers pickle into encode_batch's workers.
NORMALIZERS: dict[str, Callable[[str], str]] = {"none": identity, "nfc": nfc, "nfkc": nfkc, "lowercase": lowercase}

# The normalizer types of HF tokenizer.json files <-> llmlab normalizer names (written and read back
# by the BPE and Unigram files).
HF_NORMALIZERS = {"NFC": "nfc", "NFKC": "nfkc", "Lowercase": "lowercase"}
HF_NORMALIZER_TYPES = {name: hf for hf, name in HF_NORMALIZERS.items()}
