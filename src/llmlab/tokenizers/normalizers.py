"""Normalizers: the first stage of the pipeline, text -> text.

Chosen by name. Any normalizer but `none` makes decoding return the normalized text,
not the original: that is the trade it makes (NFKC folds "ﬁ" into "fi", so the
vocabulary needs one token fewer, and the exact input is gone).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

NORMALIZERS: dict[str, Callable[[str], str]] = {
    "none": lambda text: text,
    "nfc": lambda text: unicodedata.normalize("NFC", text),
    "nfkc": lambda text: unicodedata.normalize("NFKC", text),
    # subtle: str.lower() turns a word-final "Σ" into "ς"; HF's Lowercase maps each character
    # alone ("Σ" -> "σ" everywhere), so we do too: "AΣ" -> "aσ"
    "lowercase": lambda text: text.replace("Σ", "σ").lower(),
}
