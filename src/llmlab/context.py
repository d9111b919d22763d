"""What a command gets besides its config: where to write and how loudly.

The CLI builds one `Context` per command run and passes it to the command's function;
commands import it from here (a bottom module), never from `llmlab.cli`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Context:
    """What a command gets besides its config: where to write and how loudly."""

    command: str
    out: Path | None = None
    quiet: bool = False
    argv: tuple[str, ...] = field(default_factory=tuple)
    overrides: tuple[str, ...] = ()  # the key=value overrides as given (a resumed run re-applies them)
    flags: dict[str, Any] = field(default_factory=dict)  # config keys set by flags, as given
