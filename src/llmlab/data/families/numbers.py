"""Number tasks: integer arithmetic and comparing two numbers."""

from __future__ import annotations

import random
import re
from dataclasses import replace

from llmlab.data.answers import all_ints, final_answer, last_int
from llmlab.data.task import Family, SampleContext, Task

_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def _operand(rng: random.Random, min_digits: int, max_digits: int) -> int:
    d = rng.randint(min_digits, max_digits)
    return rng.randint(0 if d == 1 else 10 ** (d - 1), 10**d - 1)


def _off_by(rng: random.Random, value: int, *, floor: int | None = None) -> int:
    """A nearby wrong value, the kind of slip a model makes."""
    while True:
        wrong = value + rng.choice((-1, 1)) * rng.randint(1, max(2, min(10, abs(value) // 4 + 1)))
        if wrong != value and (floor is None or wrong >= floor):
            return wrong


class Arithmetic(Family):
    name = "arithmetic"
    templates = ("What is {a} {op} {b}?", "Compute {a} {op} {b}.", "Calculate {a} {op} {b}.")
    _pattern = re.compile(r"^(?:What is|Compute|Calculate) (\d+) ([-+*]) (\d+)[?.]$")

    def make(self, a: int, op: str, b: int, template: str) -> Task:
        return Task(self.name, template.format(a=a, op=op, b=b), str(_OPS[op](a, b)), f"arith:{a}{op}{b}",
                    {"a": a, "op": op, "b": b}, scorer=self)

    def draw(self, rng: random.Random, ctx: SampleContext) -> Task:
        cfg = ctx.cfg
        op = rng.choice(cfg.arith_ops)
        hi = min(cfg.arith_max_digits, cfg.mul_max_digits) if op == "*" else cfg.arith_max_digits
        lo = min(cfg.arith_min_digits, hi)
        return self.make(_operand(rng, lo, hi), op, _operand(rng, lo, hi), rng.choice(self.templates))

    def parse(self, prompt: str) -> Task | None:
        m = self._pattern.match(prompt)
        if not m:
            return None
        return replace(self.make(int(m[1]), m[2], int(m[3]), self.templates[0]), prompt=prompt)

    def score(self, task: Task, response: str) -> float:
        return float(last_int(final_answer(response)) == int(task.answer))

    def wrong(self, task: Task, rng: random.Random) -> str:
        return str(_off_by(rng, int(task.answer)))


class Compare(Family):
    name = "compare"
    _pattern = re.compile(r"^Which (?:number )?is (larger|smaller|bigger), (\d+) or (\d+)\?$")

    def make(self, a: int, b: int, which: str) -> Task:
        pick = max(a, b) if which in ("larger", "bigger") else min(a, b)
        prompt = f"Which {'number ' if which == 'bigger' else ''}is {which}, {a} or {b}?"
        return Task(self.name, prompt, str(pick), f"cmp:{min(a, b)}:{max(a, b)}", {"a": a, "b": b},
                    scorer=self)

    def draw(self, rng: random.Random, ctx: SampleContext) -> Task:
        a, b = rng.sample(range(ctx.cfg.max_number + 1), 2)
        if rng.random() < 0.5:  # near pairs are the interesting ones: same length, same leading digit
            b = min(ctx.cfg.max_number, max(0, a + rng.choice((-1, 1)) * rng.randint(1, 9)))
            if a == b:
                b = a + 1 if a < ctx.cfg.max_number else a - 1
        return self.make(a, b, rng.choice(("larger", "smaller", "bigger")))

    def parse(self, prompt: str) -> Task | None:
        m = self._pattern.match(prompt)
        return replace(self.make(int(m[2]), int(m[3]), m[1]), prompt=prompt) if m and m[2] != m[3] else None

    def score(self, task: Task, response: str) -> float:
        """The final answer's first number must be the right one, and every number it names must be one of
        the two compared: "383 is larger than 120" scores, a list of guesses ("40, 33, 44": GRPO learned to
        write these against the looser rule that only looked at the two numbers) does not."""
        named = all_ints(final_answer(response))
        candidates = (task.data["a"], task.data["b"])
        return float(bool(named) and named[0] == int(task.answer) and all(x in candidates for x in named))

    def wrong(self, task: Task, rng: random.Random) -> str:
        a, b = task.data["a"], task.data["b"]
        return str(b if int(task.answer) == a else a)
