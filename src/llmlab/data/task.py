"""A task instance and the interface every task family implements.

A task's prompt is its own answer key: every family can rebuild the task from the
prompt text alone (`Family.parse`), so `llmlab data score` needs nothing but
`{prompt, response}` rows, whatever produced them. World-QA prompts carry their
facts in the prompt for the same reason.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from llmlab.data.answers import is_refusal
from llmlab.data.config import TaskConfig
from llmlab.data.world import World


@dataclass(frozen=True)
class Task:
    family: str
    prompt: str
    answer: str  # the canonical gold response (a refusal for unsafe prompts)
    key: str  # the problem's identity: decides its split, shared by look-alike tasks
    data: dict[str, Any] = field(default_factory=dict, hash=False)  # what the scorer needs
    # The family that made the task and scores it (for `sort`, the letters or the numbers half).
    # Not part of a task's identity: two tasks with the same fields are equal, whoever made them.
    scorer: Family | None = field(default=None, compare=False, repr=False)

    @property
    def should_refuse(self) -> bool:
        return self.family == "unsafe"

    def score(self, response: str) -> float:
        """Gold score in [0, 1] of `response` to this task.

        Refusing a task that should be answered scores 0, whatever words the refusal
        shares with the answer: partial credit is for attempts, not for declining.
        """
        if not self.should_refuse and is_refusal(response):
            return 0.0
        if self.scorer is None:
            raise ValueError(f"this {self.family!r} task was not made by a Family, so nothing can score it")
        return self.scorer.score(self, response)

    def is_refusal(self, response: str) -> bool:
        return is_refusal(response)


@dataclass(frozen=True)
class SampleContext:
    world: World
    cfg: TaskConfig
    split: str


class Family:
    """One kind of verifiable task. Subclasses fill in `draw`, `parse`, `score`, `wrong`."""

    name: str = ""
    paddable: bool = True  # may a filler sentence be put before the answer without breaking it?

    def draw(self, rng: random.Random, ctx: SampleContext) -> Task:
        """A random task; the caller keeps it only if its key falls in `ctx.split`."""
        raise NotImplementedError

    def parse(self, prompt: str) -> Task | None:
        """The task whose prompt is `prompt`, or None if this family did not write it."""
        raise NotImplementedError

    def score(self, task: Task, response: str) -> float:
        raise NotImplementedError

    def respond(self, task: Task, rng: random.Random) -> str:
        """A gold response (families with several good responses draw one)."""
        return task.answer

    def wrong(self, task: Task, rng: random.Random) -> str:
        """A plausible response with the wrong content (for rejected preference responses)."""
        raise NotImplementedError

    def violate(self, task: Task, rng: random.Random) -> str | None:
        """Right content in the wrong format; None where the family has no format to break."""
        return None
