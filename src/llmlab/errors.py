"""User errors: problems with the user's input, reported in one line, never as a traceback.

Anything that is the user's to fix (a missing file, a malformed JSONL row, an unknown
config key, an impossible shape) raises a `UserError`. The CLI prints
`error: <message>` on stderr and exits with code 2; `--debug` or `LLMLAB_DEBUG=1`
shows the traceback. Every other exception is a bug in llmlab and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix. The message is one line that names the problem."""


class ConfigError(UserError):
    """An unknown config key, a wrong type, or a failed cross-field check."""


class DataError(UserError):
    """Unreadable or malformed input data; the message names `file:line` where there is one."""


class TrainingDiverged(UserError):
    """The loss or the gradient norm of a training step became NaN or infinite (train.on_nan=stop)."""


class LlmlabWarning(UserWarning):
    """Something the user should know that does not stop the work; the CLI prints it as one line
    `warning: ...` on stderr."""
