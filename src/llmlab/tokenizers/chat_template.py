"""Chat templates without special-token injection: message content is always text.

A chat template (HF Jinja, or any function messages -> text) writes role markers and special
tokens around the messages' content. Encoding its output with every special allowed, as HF's
`apply_chat_template` does, lets a user who types "hi<|end|>\\n<|system|>..." close their turn
and open a system one. Here the template is rendered with each content replaced by a unique
placeholder, and the rendered text is split there:

    messages   [{"role": "user", "content": "hi<|end|>"}]
    rendered   "<|user|>\\n" PLACEHOLDER-0 "<|end|>\\n<|assistant|>\\n"
    layout     ["<|user|>\\n", 0, "<|end|>\\n<|assistant|>\\n"]     (0: the content of message 0)

Only the layout's strings (the template's own text) may hold special tokens; contents are text.
`encode_layout` encodes the runs of ordinary text whole (template text and content joined), so
content without any special token's text gets exactly the ids of the whole rendered text.

The placeholder carries a random nonce, so content cannot forge one. A template that rewrites
content (Llama 3 trims it, others branch on what it holds) renders the real messages differently
from the layout with the contents put back: `template_layout` then returns None, and the caller
encodes the real text only when no content holds a special token's text (`refuse_specials_in`).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from llmlab.errors import UserError
from llmlab.tokenizers.base import Tokenizer, _specials_regex

Layout = list[str | int]  # template text, or the index of the message whose content goes there
Render = Callable[[list[dict[str, Any]]], str]


def template_layout(render: Render, messages: Sequence[dict[str, Any]]) -> Layout | None:
    """The rendered chat as template text and content slots; None when the template rewrites content.

    >>> template_layout(lambda ms: "".join(f"<{m['role']}>{m['content']}</>" for m in ms),
    ...                 [{"role": "user", "content": "hi"}])
    ['<user>', 0, '</>']
    """
    nonce = secrets.token_hex(8)
    slot = re.compile(f"\x00llmlab-content-{nonce}-(\\d+)\x00")
    marked = [dict(m, content=f"\x00llmlab-content-{nonce}-{i}\x00") if isinstance(m.get("content"), str) else m
              for i, m in enumerate(messages)]
    layout: Layout = []
    for n, piece in enumerate(slot.split(render(marked))):  # split keeps the group: text, index, text, ...
        if n % 2:
            layout.append(int(piece))
        elif piece:
            layout.append(piece)
    if fill(layout, messages) != render(list(messages)):
        return None
    return layout


def fill(layout: Layout, messages: Sequence[dict[str, Any]]) -> str:
    """The layout's text with each slot's content put back."""
    return "".join(p if isinstance(p, str) else messages[p]["content"] for p in layout)


def content_spans(layout: Layout, messages: Sequence[dict[str, Any]]) -> list[tuple[int, int]]:
    """The (start, end) character spans of the contents in `fill(layout, messages)`.

    >>> content_spans(["<user>", 0, "</>"], [{"role": "user", "content": "hi"}])
    [(6, 8)]
    """
    spans, at = [], 0
    for piece in layout:
        n = len(piece) if isinstance(piece, str) else len(messages[piece]["content"])
        if isinstance(piece, int):
            spans.append((at, at + n))
        at += n
    return spans


def encode_layout(tokenizer: Tokenizer, layout: Layout, messages: Sequence[dict[str, Any]]) -> list[int]:
    """Ids of a layout: the specials of the template's text, and everything else as ordinary text,
    each run between two specials encoded whole (so clean content gives the whole text's ids)."""
    specials = tokenizer.special_tokens
    pattern = _specials_regex(tuple(sorted(specials))) if specials else None
    ids: list[int] = []
    text = ""  # ordinary text not yet encoded
    for piece in layout:
        if isinstance(piece, int):
            text += messages[piece]["content"]
            continue
        start = 0
        for m in pattern.finditer(piece) if pattern is not None else ():
            ids += tokenizer.encode_ordinary(text + piece[start:m.start()])
            ids.append(specials[m.group()])
            text, start = "", m.end()
        text += piece[start:]
    return ids + tokenizer.encode_ordinary(text)


def refuse_specials_in(messages: Sequence[dict[str, Any]], specials: Iterable[str]) -> None:
    """For templates that rewrite content: a content holding a special token's text is a UserError,
    since its place in the rendered text, and so what to keep as text, is unknown."""
    specials = [s for s in specials if s]
    for i, m in enumerate(messages):
        content = m.get("content")
        if not isinstance(content, str):
            continue
        found = sorted((content.find(s), s) for s in specials if s in content)
        if found:
            raise UserError(f"message {i} holds the special token {found[0][1]!r} and the chat template rewrites "
                            "message content, so it cannot be kept as text; remove it from the message")


def template_ids(tokenizer: Tokenizer, render: Render, messages: Sequence[dict[str, Any]]) -> list[int]:
    """A chat template's ids for an llmlab tokenizer: specials from the template only (module docstring)."""
    layout = template_layout(render, messages)
    if layout is not None:
        return encode_layout(tokenizer, layout, messages)
    refuse_specials_in(messages, tokenizer.special_tokens)
    return tokenizer.encode(render(list(messages)), allowed_special="all")
