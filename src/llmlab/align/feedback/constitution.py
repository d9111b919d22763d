"""Constitutions: the written principles of Constitutional AI (Bai et al. 2022, https://arxiv.org/abs/2212.08073).

    principles:
      - name: privacy
        critique:   "Does the answer reveal a person's password ...? Say what is wrong with it."
        revision:   "Rewrite the answer so that it reveals no password ..."
        comparison: "Which response better protects other people's passwords ...?"

`critique` and `revision` drive the supervised stage (SL-CAI: answer -> critique -> revision), and
`comparison` is the question the feedback model answers when it labels a pair (RL-CAI). Each use draws
one principle at random (`draw_principle`), as the paper does, so no single principle dominates.

llmlab ships one aimed at the task world (constitution.yaml beside this module: privacy and harm refusal,
over-refusal of benign look-alikes, correctness, brevity). Loading checks the file strictly: an unknown key
(a typo), a missing or empty field, a duplicate name or an empty list is a one-line UserError that names
the file and the principle.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

from llmlab.config import read_yaml
from llmlab.errors import UserError


@dataclass(frozen=True)
class Principle:
    name: str
    critique: str  # asks the model to critique its own answer under this principle
    revision: str  # asks it to rewrite the answer to meet the critique
    comparison: str  # asks a feedback model which of two responses better follows the principle


_KEYS = tuple(f.name for f in fields(Principle))
DEFAULT_CONSTITUTION = "llmlab:constitution.yaml"  # how configs and reports name the shipped one


def default_constitution_path() -> Path:
    """The constitution shipped with llmlab (package data)."""
    return Path(str(resources.files("llmlab.align.feedback").joinpath("constitution.yaml")))


def load_constitution(path: str | Path | None = None) -> list[Principle]:
    """The principles of `path` (None or "": llmlab's own), checked (see the module doc)."""
    path = default_constitution_path() if not path or str(path) == DEFAULT_CONSTITUTION else Path(path)
    return parse_constitution(read_yaml(path), source=str(path))


def parse_constitution(data: dict[str, Any], *, source: str) -> list[Principle]:
    """Principles from a constitution file's mapping; `source` names the file in errors."""
    unknown = sorted(set(data) - {"principles"})
    if unknown:
        raise UserError(f"{source}: unknown top-level key {unknown[0]!r} (expected 'principles')")
    items = data.get("principles")
    if not isinstance(items, list) or not items:
        raise UserError(f"{source}: 'principles' must be a non-empty list of principles")
    out: list[Principle] = []
    for i, item in enumerate(items, 1):
        where = f"{source}: principle {i}"
        if not isinstance(item, dict):
            raise UserError(f"{where}: must be a mapping with keys {', '.join(_KEYS)}, got {type(item).__name__}")
        if isinstance(item.get("name"), str) and item["name"].strip():
            where += f" ({item['name']!r})"
        extra = sorted(set(item) - set(_KEYS))
        if extra:
            raise UserError(f"{where}: unknown key {extra[0]!r} (known: {', '.join(_KEYS)})")
        for key in _KEYS:
            value = item.get(key)
            if not isinstance(value, str) or not value.strip():
                raise UserError(f"{where}: '{key}' must be non-empty text" + ("" if key in item else " (missing)"))
        out.append(Principle(**{k: item[k].strip() for k in _KEYS}))
    names = [p.name for p in out]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise UserError(f"{source}: principle name {duplicate!r} is used twice")
    return out


def draw_principle(principles: list[Principle], seed: int, *keys: object) -> Principle:
    """The principle for one use, drawn uniformly and reproducibly from (seed, keys): the same prompt
    and round get the same principle whatever the batch or an interruption."""
    return random.Random(":".join(map(str, ("llmlab-cai", seed, *keys)))).choice(principles)
