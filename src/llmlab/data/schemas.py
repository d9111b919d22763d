"""Row schemas for the user's own data: one validator per schema name, chosen from a plain dict.

A validator takes one row (whatever a JSONL line or a dataset row parsed to) and returns
None when the row is fine, or a short description of the first problem, e.g.

    {"prompt": 3, "chosen": "a", "rejected": "b"}  -> "'prompt' must be a string or a list of messages, got int"

The loaders add `file:line: ` in front. Pure functions, no I/O. Extra keys are always
allowed (a `meta` or `family` field travels with the row untouched).

The checks are those of the trainers, so `llmlab data validate` passes exactly the rows that
`sft`, `rm train` and `dpo` accept: beyond the shape, a preference pair needs a non-empty prompt
and responses and chosen != rejected (`normalise_pair`), and a chat a non-empty assistant message
(`normalise_chat`). The trainers call those two to get the rows in their normal form.

Message lists follow the chat format used by HF `transformers` chat templates and TRL:
`[{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]`.
Preference rows follow TRL's two forms: standard (three strings) and conversational
(`prompt` a list of messages, `chosen` and `rejected` lists of assistant messages;
a `chosen` that repeats the prompt, TRL's implicit-prompt form, is accepted too).
Left out: tool-call payloads (`tool_calls`, non-string `content`) and multimodal content parts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ROLES = ("system", "user", "assistant", "tool")


def _kind(value: Any) -> str:
    """The type name used in messages: `int`, `list`, `dict`, `None`."""
    return "None" if value is None else type(value).__name__


def _check_object(row: Any) -> str | None:
    if not isinstance(row, dict):
        return f"expected a JSON object, got {_kind(row)}"
    return None


def _check_string(row: dict[str, Any], key: str, *, non_empty: bool) -> str | None:
    if key not in row:
        return f"missing key {key!r}"
    value = row[key]
    if not isinstance(value, str):
        return f"{key!r} must be a string, got {_kind(value)}"
    if non_empty and not value.strip():
        return f"{key!r} is empty"
    return None


def _check_messages(messages: Any, where: str, *, needs_assistant: bool) -> str | None:
    """Check a non-empty list of {"role", "content"} messages; `where` names it, e.g. `'messages'`."""
    if not isinstance(messages, list):
        return f"{where} must be a list of messages, got {_kind(messages)}"
    if not messages:
        return f"{where} is empty"
    for i, message in enumerate(messages):
        at = f"{where}[{i}]"
        if not isinstance(message, dict):
            return f"{at} must be an object with 'role' and 'content', got {_kind(message)}"
        for key in ("role", "content"):
            if key not in message:
                return f"{at} missing key {key!r}"
        if message["role"] not in ROLES:
            return f"{at}['role'] must be one of {', '.join(ROLES)}, got {message['role']!r}"
        if not isinstance(message["content"], str):
            return f"{at}['content'] must be a string, got {_kind(message['content'])}"
    if needs_assistant and not any(m["role"] == "assistant" for m in messages):
        return f"{where} has no assistant message"
    return None


def check_text(row: Any) -> str | None:
    """{"text": non-empty str}: pretraining documents."""
    return _check_object(row) or _check_string(row, "text", non_empty=True)


def check_chat(row: Any) -> str | None:
    """{"messages": [...]} with a non-empty assistant turn, or there is nothing to learn from."""
    if problem := _check_object(row):
        return problem
    if "messages" not in row:
        return "missing key 'messages'"
    if problem := _check_messages(row["messages"], "'messages'", needs_assistant=True):
        return problem
    return _problem(normalise_chat(row))


def normalise_chat(row: dict[str, Any]) -> dict[str, Any] | str:
    """A chat-schema row as it is, or why no SFT loss can be computed on it.

    Expects a row whose shape `check_chat`'s message checks passed.
    """
    if not any(m["role"] == "assistant" and m["content"].strip() for m in row["messages"]):
        return "'messages' has no non-empty assistant message"
    return row


def _problem(result: dict[str, Any] | str) -> str | None:
    """The problem a normalise_* function returned, or None for a row."""
    return result if isinstance(result, str) else None


def _check_pref_field(row: dict[str, Any], key: str) -> str | None:
    """A string, or a message list; `chosen` and `rejected` must contain an assistant turn."""
    if key not in row:
        return f"missing key {key!r}"
    value = row[key]
    if isinstance(value, str):
        return None
    if isinstance(value, list):
        return _check_messages(value, repr(key), needs_assistant=key != "prompt")
    return f"{key!r} must be a string or a list of messages, got {_kind(value)}"


def is_probability(value: Any) -> bool:
    """A number in [0, 1]: not a bool, not nan (which JSON lets through as NaN), not infinite.

    >>> [is_probability(v) for v in (0.25, 1, True, "0.5", float("nan"), 1.5)]
    [True, True, False, False, False, False]
    """
    return not isinstance(value, bool) and isinstance(value, int | float) and 0.0 <= value <= 1.0


def _check_probability(row: dict[str, Any], key: str) -> str | None:
    """An optional number in [0, 1].

    >>> _check_probability({"p_chosen": 1.5}, "p_chosen")
    "'p_chosen' must be a number in [0, 1], got 1.5"
    """
    if key not in row or is_probability(value := row[key]):
        return None
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return f"{key!r} must be a number in [0, 1], got {value if number else _kind(value)}"


def check_prefs(row: Any) -> str | None:
    """{"prompt", "chosen", "rejected"}, all three strings or all three message lists (TRL's convention),
    and optionally "p_chosen": the soft label P(chosen is the better), a number in [0, 1] (absent: 1).

    Mixing the forms (a string prompt with message-list answers) is an error: a chat
    template would be applied to one part and not the other.
    """
    if problem := _check_object(row):
        return problem
    for key in ("prompt", "chosen", "rejected"):
        if problem := _check_pref_field(row, key):
            return problem
    if problem := _check_probability(row, "p_chosen"):
        return problem
    if len({isinstance(row[key], str) for key in ("prompt", "chosen", "rejected")}) > 1:
        forms = ", ".join(f"{k!r} is a {_kind(row[k])}" for k in ("prompt", "chosen", "rejected"))
        return f"mixed forms ({forms}); use all strings or all message lists"
    return _problem(normalise_pair(row))


def normalise_pair(row: dict[str, Any]) -> dict[str, Any] | str:
    """A prefs row as {"prompt": str | messages, "chosen": str, "rejected": str, ...}, or why not.

    Expects a row whose shape `check_prefs` passed. A conversational answer becomes the content
    of its last message, which must be the assistant's; messages before it must repeat the prompt
    (TRL's implicit-prompt form). Empty parts and chosen == rejected teach nothing: refused.

    >>> normalise_pair({"prompt": [{"role": "user", "content": "2+2?"}],
    ...                 "chosen": [{"role": "assistant", "content": "4"}],
    ...                 "rejected": [{"role": "assistant", "content": "5"}]})["chosen"]
    '4'
    >>> normalise_pair({"prompt": "2+2?", "chosen": "4", "rejected": "4"})
    "'chosen' and 'rejected' are the same"
    """
    prompt = row["prompt"]
    if isinstance(prompt, str) and not prompt.strip():
        return "'prompt' is empty"
    out = dict(row)
    for key in ("chosen", "rejected"):
        value = row[key]
        if isinstance(value, list):
            *head, last = value
            if last["role"] != "assistant":
                return f"{key!r} must end with an assistant message"
            if head and head != prompt:
                return f"{key!r} repeats a conversation that is not 'prompt'"
            value = last["content"]
        if not value.strip():
            return f"{key!r} is empty"
        out[key] = value
    if out["chosen"] == out["rejected"]:
        return "'chosen' and 'rejected' are the same"
    return out


def check_responses(row: Any) -> str | None:
    """{"prompt": str, "response": str}: sampled generations, e.g. to be scored or compared."""
    return (
        _check_object(row)
        or _check_string(row, "prompt", non_empty=False)
        or _check_string(row, "response", non_empty=False)
    )


def check_eval(row: Any) -> str | None:
    """{"prompt": non-empty str}; `answer`, `family` and other keys ride along."""
    return _check_object(row) or _check_string(row, "prompt", non_empty=True)


SCHEMAS: dict[str, Callable[[Any], str | None]] = {
    "text": check_text,
    "chat": check_chat,
    "prefs": check_prefs,
    "responses": check_responses,
    "eval": check_eval,
}
