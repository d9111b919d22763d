"""llmlab's chat format: messages -> token ids, with the assistant spans marked.

    <|system|>\\n{content}<|end|>\\n<|user|>\\n{content}<|end|>\\n<|assistant|>\\n{content}<|end|>\\n ...

The markers are special tokens when the tokenizer has them (the tokenizers `llmlab pretrain`
trains do: CHAT_SPECIALS), otherwise ordinary text. Message content is always encoded as
ordinary text, so a user who types "<|end|>" cannot close a turn: the safety rule that user
text never becomes a special token. `LLMLAB_CHAT_TEMPLATE` is the same format as a Jinja
template; `export-hf` writes it to tokenizer_config.json so `apply_chat_template` in
transformers renders the same text (HF then matches the markers as added tokens in the
whole text, content included: that is HF's behaviour, not llmlab's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol

from llmlab.errors import DataError

ROLES = ("system", "user", "assistant")
END = "<|end|>"
CHAT_SPECIALS = ("<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", END)

LLMLAB_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


class TextEncoder(Protocol):
    """What rendering needs of a tokenizer; every llmlab `Tokenizer` is one (data sits below tokenizers/)."""

    def encode(self, text: str, *, allowed_special: Literal["all"]) -> list[int]: ...

    def encode_ordinary(self, text: str) -> list[int]: ...


def check_messages(messages: Any, *, where: str = "") -> list[dict[str, str]]:
    """Validate a `[{"role", "content"}, ...]` list; a DataError names `where` and the message index."""
    prefix = f"{where}: " if where else ""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{prefix}'messages' must be a non-empty list of {{role, content}} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or set(m) - {"role", "content"} or "role" not in m or "content" not in m:
            raise DataError(f"{prefix}message {i} must be an object with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise DataError(f"{prefix}message {i} has role {m['role']!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise DataError(f"{prefix}message {i} content must be a string")
    return messages


def render_text(messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = False) -> str:
    """The chat as text (what the Jinja template gives)."""
    text = "".join(f"<|{m['role']}|>\n{m['content']}{END}\n" for m in messages)
    return text + ("<|assistant|>\n" if add_generation_prompt else "")


def render_ids(tokenizer: TextEncoder, messages: Sequence[dict[str, str]], *,
               add_generation_prompt: bool = False) -> tuple[list[int], list[bool]]:
    """(ids, assistant mask): the mask is True on the tokens an SFT loss trains on, i.e. each
    assistant message's content and its closing <|end|>, not the role marker or the newlines.
    Each piece is encoded alone, so a prompt that ends in "<|assistant|>\\n" continues exactly as
    the training text did."""
    ids: list[int] = []
    mask: list[bool] = []

    def add(text: str, *, special: bool, train: bool) -> None:
        new = tokenizer.encode(text, allowed_special="all") if special else tokenizer.encode_ordinary(text)
        ids.extend(new)
        mask.extend([train] * len(new))

    for m in messages:
        is_assistant = m["role"] == "assistant"
        add(f"<|{m['role']}|>", special=True, train=False)
        add("\n", special=False, train=False)
        add(m["content"], special=False, train=is_assistant)
        add(END, special=True, train=is_assistant)
        add("\n", special=False, train=False)
    if add_generation_prompt:
        add("<|assistant|>", special=True, train=False)
        add("\n", special=False, train=False)
    return ids, mask
