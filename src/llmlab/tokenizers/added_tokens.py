"""tokenizer.json's `added_tokens`, written and read the same way for byte-level BPE and WordPiece.

Every added token, special or not, becomes an llmlab special token when read (hf_io.py says why);
llmlab writes its special tokens as `special: true`, `normalized: false`, matched by exact text.
"""

from __future__ import annotations

from typing import Any

from llmlab.errors import UserError


def added_token(text: str, token_id: int) -> dict[str, Any]:
    """One `added_tokens` entry, with HF's field set."""
    return {"id": token_id, "content": text, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": True}


def read_added_tokens(added: Any) -> dict[str, int]:
    """Every added token, special or not, as an llmlab special token (see the module docstring)."""
    if not isinstance(added, list):
        raise UserError("added_tokens: not a list")
    specials: dict[str, int] = {}
    for n, entry in enumerate(added):
        if not (isinstance(entry, dict) and isinstance(entry.get("content"), str)
                and isinstance(entry.get("id"), int) and entry["content"]):
            raise UserError(f"added_tokens[{n}]: needs a non-empty string `content` and an integer `id`")
        if entry["content"] in specials:
            raise UserError(f"added_tokens[{n}]: {entry['content']!r} is added twice")
        specials[entry["content"]] = entry["id"]
    return specials
