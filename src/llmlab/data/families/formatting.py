"""Format-following tasks: answer in UPPERCASE, in exactly N words, or as JSON.

Two of the three wrap another family's task, and score half for the format and half
for the content, so a response in the right format with the wrong answer (or the
right answer in the wrong format) earns 0.5. The N-words task scores the format only,
with partial credit that falls with the distance from N.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import replace

from llmlab.data.answers import words
from llmlab.data.families.numbers import Arithmetic, Compare
from llmlab.data.families.strings import Count, Reverse, Sort, SortLetters
from llmlab.data.task import Family, SampleContext, Task
from llmlab.data.world import ADJECTIVES, ANIMALS, WORDS, article

UPPER_SUFFIX = " Answer in UPPERCASE."
JSON_SUFFIX = ' Reply only with JSON of the form {"answer": ...}.'
_WORDS_PATTERN = re.compile(r"^List exactly (?P<n>\d+) words that describe an? (?P<animal>[a-z]+)\.$")
_UPPER_INNER = (Reverse(), SortLetters())
_JSON_INNER = (Arithmetic(), Count(), Compare())
# the families that score the wrapped tasks, by name (`sort`: both halves, as in tasks.FAMILIES)
_INNER_FAMILIES = {f.name: f for f in (Reverse(), Sort(), Arithmetic(), Count(), Compare())}



def _json_answer(response: str) -> dict | None:
    """The response as a JSON object with the one key "answer", or None."""
    try:
        value = json.loads(response.strip())
    except (ValueError, RecursionError):  # not JSON (or absurdly nested)
        return None
    return value if isinstance(value, dict) and set(value) == {"answer"} else None


class Format(Family):
    name = "format"
    paddable = False  # a filler sentence would itself break the format

    def draw(self, rng: random.Random, ctx: SampleContext) -> Task:
        style = rng.choice(("upper", "json", "words"))
        if style == "upper":
            inner = rng.choice(_UPPER_INNER).draw_on(WORDS, rng)
            return self._wrap(inner, "upper")
        if style == "json":
            return self._wrap(rng.choice(_JSON_INNER).draw(rng, ctx), "json")
        n, animal = rng.randint(3, 7), rng.choice(ANIMALS)
        return self._words(f"List exactly {n} words that describe {article(animal)} {animal}.", n, animal)

    def _wrap(self, inner: Task, style: str) -> Task:
        if style == "upper":
            prompt, answer = inner.prompt + UPPER_SUFFIX, inner.answer.upper()
        else:
            prompt, answer = inner.prompt + JSON_SUFFIX, json.dumps({"answer": int(inner.answer)})
        return Task(self.name, prompt, answer, inner.key,
                    {"style": style, "inner_family": inner.family, "inner_prompt": inner.prompt}, scorer=self)

    def _words(self, prompt: str, n: int, animal: str) -> Task:
        return Task(self.name, prompt, " ".join(ADJECTIVES[:n]), f"words:{animal}:{n}", {"style": "words", "n": n},
                    scorer=self)

    def parse(self, prompt: str) -> Task | None:
        if m := _WORDS_PATTERN.match(prompt):
            return self._words(prompt, int(m["n"]), m["animal"])
        for suffix, style, inners in ((UPPER_SUFFIX, "upper", _UPPER_INNER), (JSON_SUFFIX, "json", _JSON_INNER)):
            if prompt.endswith(suffix):
                for family in inners:
                    inner = family.parse(prompt[: -len(suffix)])
                    if inner is not None:
                        return replace(self._wrap(inner, style), prompt=prompt)
        return None

    def _inner(self, task: Task) -> tuple[Family, Task]:
        family = _INNER_FAMILIES[task.data["inner_family"]]
        inner = family.parse(task.data["inner_prompt"])
        assert inner is not None
        return family, inner

    def complies(self, task: Task, response: str) -> bool:
        """Is `response` in the format the prompt asks for, whatever its content? (`llmlab eval`'s format
        compliance.) upper: it has letters and none is lowercase; json: it parses as a JSON object whose only
        key is "answer"; words: it has exactly N words.

        >>> f = Format(); t = f.parse("List exactly 3 words that describe a cat.")
        >>> f.complies(t, "small quiet grey"), f.complies(t, "small grey")
        (True, False)
        """
        style = task.data["style"]
        if style == "words":
            return len(words(response)) == task.data["n"]
        if style == "upper":
            letters = re.sub(r"[^\w]|\d|_", "", response)
            return bool(letters) and letters == letters.upper()
        return _json_answer(response) is not None

    def score(self, task: Task, response: str) -> float:
        style = task.data["style"]
        if style == "words":
            n, k = task.data["n"], len(words(response))
            return max(0.0, 1.0 - abs(k - n) / n)
        family, inner = self._inner(task)
        if style == "upper":
            return 0.5 * float(self.complies(task, response)) + 0.5 * family.score(inner, response)
        value = _json_answer(response)
        if value is None:
            return 0.5 * family.score(inner, response)  # the content may still be right
        return 0.5 + 0.5 * family.score(inner, str(value["answer"]))

    def respond(self, task: Task, rng: random.Random) -> str:
        if task.data["style"] == "words":
            return " ".join(rng.sample(ADJECTIVES, task.data["n"]))
        return task.answer

    def wrong(self, task: Task, rng: random.Random) -> str:
        """The right format with the wrong content (N-words: the wrong count, its only content)."""
        style = task.data["style"]
        if style == "words":
            return self.violate(task, rng)
        family, inner = self._inner(task)
        bad = family.wrong(inner, rng)
        return bad.upper() if style == "upper" else json.dumps({"answer": int(bad)})

    def violate(self, task: Task, rng: random.Random) -> str:
        style = task.data["style"]
        if style == "words":
            n = task.data["n"]
            k = max(1, n + rng.choice((-2, -1, 1, 2)))
            return " ".join(rng.sample(ADJECTIVES, k))
        _, inner = self._inner(task)
        return inner.answer.lower() if style == "upper" else inner.answer
