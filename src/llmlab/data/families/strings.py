"""String tasks: reverse a word, sort letters or numbers, count a letter.

Each family draws its words from `WORDS`. The same tasks on `TRIGGER_WORDS`
("password", "steal", ...) are the safety family's benign look-alikes, so the
plain families refuse to parse those (`parse`) while `parse_any` accepts both.
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import replace

from llmlab.data.answers import all_ints, final_answer, last_int, sequence_credit, words
from llmlab.data.task import Family, SampleContext, Task
from llmlab.data.world import TRIGGER_WORDS, WORDS


def _swap_adjacent(rng: random.Random, items: list) -> list:
    """The same items with two adjacent, different ones swapped (a near miss)."""
    spots = [i for i in range(len(items) - 1) if items[i] != items[i + 1]]
    if not spots:
        return [*items, items[-1]]
    i = rng.choice(spots)
    out = list(items)
    out[i], out[i + 1] = out[i + 1], out[i]
    return out


class _WordFamily(Family):
    """Families whose tasks are about one word (or short text) quoted in the prompt."""

    patterns: tuple[re.Pattern[str], ...] = ()

    def make(self, text: str, rng: random.Random | None = None) -> Task:
        raise NotImplementedError

    def draw_on(self, pool: tuple[str, ...], rng: random.Random) -> Task:
        return self.make(rng.choice(pool), rng)

    def draw(self, rng: random.Random, ctx: SampleContext) -> Task:
        return self.draw_on(WORDS, rng)

    def parse_any(self, prompt: str) -> Task | None:
        for p in self.patterns:
            if m := p.match(prompt):
                return replace(self.rebuild(m), prompt=prompt)
        return None

    def rebuild(self, m: re.Match[str]) -> Task:
        return self.make(m["w"])

    def parse(self, prompt: str) -> Task | None:
        task = self.parse_any(prompt)
        return task if task is not None and task.data["text"] not in TRIGGER_WORDS else None


class Reverse(_WordFamily):
    name = "reverse"
    templates = ("Reverse the word '{w}'.", "Spell '{w}' backwards.", "Write the letters of '{w}' in reverse order.")
    patterns = tuple(re.compile("^" + re.escape(t).replace(r"\{w\}", r"(?P<w>[a-z]+)") + "$") for t in templates)

    def make(self, text: str, rng: random.Random | None = None) -> Task:
        template = rng.choice(self.templates) if rng else self.templates[0]
        return Task(self.name, template.format(w=text), text[::-1], f"word:{text}", {"text": text},
                    scorer=self)

    def score(self, task: Task, response: str) -> float:
        found = words(final_answer(response))
        return sequence_credit(found[-1].lower(), task.answer.lower()) if found else 0.0

    def wrong(self, task: Task, rng: random.Random) -> str:
        palindrome = task.data["text"] == task.answer  # "kayak": the unreversed word is no wrong answer
        if palindrome or rng.random() < 0.7:
            return "".join(_swap_adjacent(rng, list(task.answer)))
        return task.data["text"]


class SortLetters(_WordFamily):
    """Sorting has two forms (letters, numbers); this class is the letters half of the `sort` family."""

    name = "sort"
    templates = ("Sort the letters of '{w}' alphabetically.", "Put the letters of '{w}' in alphabetical order.")
    patterns = tuple(re.compile("^" + re.escape(t).replace(r"\{w\}", r"(?P<w>[a-z]+)") + "$") for t in templates)

    def make(self, text: str, rng: random.Random | None = None) -> Task:
        template = rng.choice(self.templates) if rng else self.templates[0]
        return Task(self.name, template.format(w=text), "".join(sorted(text)), f"word:{text}",
                    {"text": text, "form": "letters"}, scorer=self)

    def score(self, task: Task, response: str) -> float:
        return sequence_credit(re.sub(r"[^a-z]", "", final_answer(response).lower()), task.answer)

    def wrong(self, task: Task, rng: random.Random) -> str:
        return "".join(_swap_adjacent(rng, list(task.answer)))


class Sort(Family):
    """Sort the letters of a word, or a list of numbers, ascending; partial credit by LCS."""

    name = "sort"
    letters = SortLetters()
    templates = ("Sort these numbers from smallest to largest: {nums}.", "Arrange in ascending order: {nums}.")
    _patterns = tuple(re.compile("^" + re.escape(t).replace(r"\{nums\}", r"(?P<nums>\d+(?:, \d+)+)") + "$")
                      for t in templates)

    def make_numbers(self, nums: list[int], template: str) -> Task:
        ordered = sorted(nums)
        return Task(self.name, template.format(nums=", ".join(map(str, nums))), ", ".join(map(str, ordered)),
                    f"nums:{','.join(map(str, ordered))}", {"nums": nums, "form": "numbers"}, scorer=self)

    def draw(self, rng: random.Random, ctx: SampleContext) -> Task:
        if rng.random() < 0.5:
            return self.letters.draw(rng, ctx)
        k = rng.randint(ctx.cfg.list_min_len, ctx.cfg.list_max_len)
        return self.make_numbers([rng.randint(0, ctx.cfg.max_number) for _ in range(k)], rng.choice(self.templates))

    def parse(self, prompt: str) -> Task | None:
        for p in self._patterns:
            if m := p.match(prompt):
                return replace(self.make_numbers([int(x) for x in m["nums"].split(", ")], self.templates[0]),
                               prompt=prompt)
        return self.letters.parse(prompt)

    def score(self, task: Task, response: str) -> float:
        if task.data["form"] == "letters":
            return self.letters.score(task, response)
        return sequence_credit(all_ints(final_answer(response)), [int(x) for x in task.answer.split(", ")])

    def wrong(self, task: Task, rng: random.Random) -> str:
        if task.data["form"] == "letters":
            return self.letters.wrong(task, rng)
        return ", ".join(map(str, _swap_adjacent(rng, [int(x) for x in task.answer.split(", ")])))


class Count(_WordFamily):
    name = "count"
    templates = ("How many times does the letter '{c}' appear in '{w}'?", "Count the letter '{c}' in the word '{w}'.")
    patterns = tuple(
        re.compile("^" + re.escape(t).replace(r"\{c\}", r"(?P<c>[a-z])").replace(r"\{w\}", r"(?P<w>[a-z]+)") + "$")
        for t in templates)

    def make(self, text: str, rng: random.Random | None = None, letter: str | None = None) -> Task:
        if letter is None:
            assert rng is not None
            # Mostly letters that occur (answers 1..3); sometimes one that does not (answer 0).
            letter = rng.choice(text) if rng.random() < 0.8 else rng.choice(string.ascii_lowercase)
        template = rng.choice(self.templates) if rng else self.templates[0]
        return Task(self.name, template.format(c=letter, w=text), str(text.count(letter)), f"word:{text}",
                    {"text": text, "letter": letter}, scorer=self)

    def rebuild(self, m: re.Match[str]) -> Task:
        return self.make(m["w"], letter=m["c"])

    def score(self, task: Task, response: str) -> float:
        return float(last_int(final_answer(response)) == int(task.answer))

    def wrong(self, task: Task, rng: random.Random) -> str:
        n = int(task.answer)
        return str(n + 1 if n == 0 or rng.random() < 0.5 else n - 1)
