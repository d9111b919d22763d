"""The task families, by name, and drawing, parsing and scoring tasks.

    FAMILIES["arithmetic"].draw(rng, ctx)      one task
    sample_tasks(n, seed=0, split="eval")      n tasks in equal shares per family
    parse_task(prompt)                          the task a prompt states (or None)
    score(prompt, response)                     the gold score of a response

A task belongs to the split `split_of(task.key)`: a problem (an arithmetic
expression, a word, a person) is in train or in eval, never in both, whichever
family or template asks about it.
"""

from __future__ import annotations

import random

from llmlab.data.config import FAMILY_NAMES, TaskConfig, WorldConfig
from llmlab.data.families.formatting import Format
from llmlab.data.families.numbers import Arithmetic, Compare
from llmlab.data.families.safety import Benign, Unsafe
from llmlab.data.families.strings import Count, Reverse, Sort
from llmlab.data.families.world_qa import WorldQA
from llmlab.data.task import Family, SampleContext, Task
from llmlab.data.world import build_world, split_of
from llmlab.errors import UserError

FAMILIES: dict[str, Family] = {
    f.name: f for f in (Arithmetic(), Reverse(), Sort(), Count(), Compare(), Format(), WorldQA(), Unsafe(), Benign())
}
if tuple(FAMILIES) != FAMILY_NAMES:  # TaskConfig checks family names against config.FAMILY_NAMES
    raise RuntimeError(f"config.FAMILY_NAMES {FAMILY_NAMES} differs from the families {tuple(FAMILIES)}")

_MAX_TRIES = 10_000


def sample_task(family: Family, rng: random.Random, ctx: SampleContext) -> Task:
    """Draw from `family` until the task's key falls in `ctx.split`."""
    for _ in range(_MAX_TRIES):
        task = family.draw(rng, ctx)
        if split_of(task.key, ctx.world.config.eval_fraction) == ctx.split:
            return task
    raise UserError(f"task family {family.name!r} drew no {ctx.split} task in {_MAX_TRIES} tries; "
                    "widen its settings (digits, list lengths, max_number)")


def sample_tasks(n: int, *, seed: int = 0, split: str = "eval", world: WorldConfig = WorldConfig(),  # noqa: B008
                 tasks: TaskConfig = TaskConfig(), stream: str = "") -> list[Task]:  # noqa: B008
    """`n` tasks of `split`, the families in equal shares (round robin, then shuffled).

    Deterministic for (seed, split, stream, configs); `stream` names independent draws
    with the same seed (the SFT and the preference sets of one run). Prompts are distinct as long as the
    family's problem space allows it: after 50 repeats in a row a duplicate is kept.
    """
    names = list(tasks.families or FAMILIES)
    rng = random.Random(f"llmlab-tasks:{seed}:{split}:{stream}")
    ctx = SampleContext(build_world(world), tasks, split)
    seen: set[str] = set()
    out: list[Task] = []
    for i in range(n):
        family = FAMILIES[names[i % len(names)]]
        for _ in range(50):
            task = sample_task(family, rng, ctx)
            if task.prompt not in seen:
                break
        seen.add(task.prompt)
        out.append(task)
    rng.shuffle(out)
    return out


def parse_task(prompt: str) -> Task | None:
    """The task that `prompt` states, rebuilt from the prompt alone; None for a foreign prompt."""
    for family in FAMILIES.values():
        task = family.parse(prompt)
        if task is not None:
            return task
    return None


def score(prompt: str, response: str) -> float:
    """Gold score of `response` to a task-world `prompt`; a UserError if the prompt is not one."""
    task = parse_task(prompt)
    if task is None:
        raise UserError(f"not a task-world prompt: {prompt[:60]!r}")
    return task.score(response)
