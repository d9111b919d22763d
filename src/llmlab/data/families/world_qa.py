"""Questions about the invented world, answered from facts given in the prompt.

    Facts:
    - Zorvan Kell lives in Quillby.
    - Zorvan Kell has a heron named Pim.
    - Quillby is known for its glass bells.
    Question: What is the town where Zorvan Kell lives known for?

The facts of the person asked about are mixed with those of `distractors` other
people of the same split, so an answer must be read from the right lines. One
question kind needs two hops (person -> town -> what the town is known for).
Putting the facts in the prompt makes held-out people answerable and every prompt
self-scoring; memorised-knowledge questions are left to the pretraining corpus.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from llmlab.data.answers import final_answer, normalise
from llmlab.data.task import Family, SampleContext, Task
from llmlab.data.world import ANIMALS, COLOURS, FAMOUS_FOR, JOBS, SECRET_ATTRIBUTES, Person, World, article

_NAME = r"(?P<name>[A-Z][a-z]+ [A-Z][a-z]+)"
# attribute -> (how a fact line is written, the regex that reads it back)
_FACTS: dict[str, tuple[str, str]] = {
    "home": ("{name} lives in {home}.", r"lives in (?P<home>[A-Z][a-z]+)"),
    "job": ("{name} works as {article} {job}.", r"works as an? (?P<job>[a-z]+)"),
    "pet": ("{name} has {pet_article} {pet} named {pet_name}.", r"has an? (?P<pet>[a-z]+) named (?P<pet_name>[A-Z][a-z]+)"),
    "colour": ("{name}'s favourite colour is {colour}.", r"'s favourite colour is (?P<colour>[a-z]+)"),
    "age": ("{name} is {age} years old.", r"is (?P<age>\d+) years old"),
    "password": ("{name}'s password is {password}.", r"'s password is (?P<password>[a-z]+-[a-z]+-\d+)"),
    "safe_code": ("{name}'s safe code is {safe_code}.", r"'s safe code is (?P<safe_code>\d+)"),
}
_FACT_LINE = re.compile(r"^- " + _NAME + r" ?(?:" + "|".join(rx for _, rx in _FACTS.values()) + r")\.$")
_PLACE_LINE = re.compile(r"^- (?P<place>[A-Z][a-z]+) is known for its (?P<thing>[a-z ]+)\.$")

# question kind -> (templates, the attribute that answers it)
QUESTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "home": (("Where does {name} live?", "In which town does {name} live?"), "home"),
    "job": (("What is {name}'s job?", "What does {name} do for a living?"), "job"),
    "pet": (("What kind of animal is {name}'s pet?",), "pet"),
    "pet_name": (("What is the name of {name}'s pet?",), "pet_name"),
    "colour": (("What is {name}'s favourite colour?",), "colour"),
    "age": (("How old is {name}?",), "age"),
    "famous": (("What is the town where {name} lives known for?",), "famous"),
}
_QUESTION_PATTERNS = [
    (kind, re.compile("^" + re.escape(t).replace(r"\{name\}", _NAME) + "$"))
    for kind, (templates, _) in QUESTIONS.items() for t in templates
]
# question kind -> the fact lines its answer needs, where they differ from the kind's name
_NEEDS = {"pet_name": ("pet",), "famous": ("home",)}
_VOCAB = {"home": (), "job": JOBS, "pet": ANIMALS, "colour": COLOURS, "famous": FAMOUS_FOR}



def fact_lines(person: Person, *, secrets: bool) -> dict[str, str]:
    """attribute -> the line stating it (secrets only when asked for)."""
    values = {**vars(person), "article": article(person.job), "pet_article": article(person.pet)}
    return {attr: template.format(**values) for attr, (template, _) in _FACTS.items()
            if secrets or attr not in SECRET_ATTRIBUTES}


def choose_facts(rng: random.Random, lines: dict[str, str], n: int, keep: tuple[str, ...]) -> list[str]:
    """`n` of a person's fact lines (all when n is 0), always those of `keep` and of any secret: a shorter
    context must still answer the question, and a secret-bearing prompt must still hold its secret."""
    if n <= 0:
        return list(lines.values())
    kept = [a for a in lines if a in keep or a in SECRET_ATTRIBUTES]
    rest = [a for a in lines if a not in kept]
    return [lines[a] for a in kept + rng.sample(rest, max(0, min(n - len(kept), len(rest))))]


@dataclass(frozen=True)
class Context:
    """The facts a prompt gives: attributes per person, and what each town is known for."""

    people: dict[str, dict[str, str]]
    places: dict[str, str]

    def value(self, name: str, attr: str) -> str | None:
        person = self.people.get(name, {})
        return self.places.get(person.get("home", "")) if attr == "famous" else person.get(attr)

    def candidates(self, attr: str) -> set[str]:
        """Every value of `attr` in the context: the answers a confused model would give."""
        return {v for name in self.people if (v := self.value(name, attr)) is not None}

    def has_secrets(self) -> bool:
        return any(a in p for p in self.people.values() for a in SECRET_ATTRIBUTES)


def build_context(rng: random.Random, world: World, target: Person, others: list[Person], *,
                  secrets: bool, places: bool, facts_per_person: int = 0, ask: str = "") -> tuple[str, Context]:
    """The facts block of a prompt (people in random order, facts shuffled within a person).

    `facts_per_person` > 0 gives each person that many facts instead of all five; the target keeps the one
    that answers `ask` (a key of QUESTIONS) and its secrets, so the question stays answerable."""
    group = [target, *others]
    rng.shuffle(group)
    lines: list[str] = []
    needed = _NEEDS.get(ask, (ask,)) if ask else ()
    for person in group:
        facts = choose_facts(rng, fact_lines(person, secrets=secrets and person is target), facts_per_person,
                             needed if person is target else ())
        rng.shuffle(facts)
        lines.extend(facts)
    if places:
        towns = sorted({p.home for p in group})
        rng.shuffle(towns)
        lines.extend(f"{t} is known for its {world.place(t).famous_for}." for t in towns)
    text = "Facts:\n" + "\n".join(f"- {line}" for line in lines)
    ctx = parse_context(text)
    assert ctx is not None, text
    return text, ctx


def parse_context(text: str) -> Context | None:
    """Read a facts block back; None if any line is not a fact line."""
    lines = text.split("\n")
    if not lines or lines[0] != "Facts:":
        return None
    people: dict[str, dict[str, str]] = {}
    places: dict[str, str] = {}
    for line in lines[1:]:
        if m := _FACT_LINE.match(line):
            people.setdefault(m["name"], {}).update({k: v for k, v in m.groupdict().items() if v and k != "name"})
        elif m := _PLACE_LINE.match(line):
            places[m["place"]] = m["thing"]
        else:
            return None
    return Context(people, places)


def split_prompt(prompt: str) -> tuple[str, str] | None:
    """'Facts: ...\\nQuestion: Q' -> (facts block, Q)."""
    facts, sep, question = prompt.rpartition("\nQuestion: ")
    return (facts, question) if sep else None


def parse_question(question: str) -> tuple[str, str] | None:
    """'How old is Zorvan Kell?' -> ('age', 'Zorvan Kell')."""
    for kind, pattern in _QUESTION_PATTERNS:
        if m := pattern.match(question):
            return kind, m["name"]
    return None


def score_value(response: str, answer: str, candidates: set[str]) -> float:
    """1 when the final answer is the value, or names it and no other candidate from the facts."""
    fa = normalise(final_answer(response))
    if fa == normalise(answer):
        return 1.0
    text = normalise(response)
    named = {c for c in candidates if re.search(rf"(?<![\w-]){re.escape(c.lower())}(?![\w-])", text)}
    return float(named == {answer})


def wrong_value(rng: random.Random, answer: str, attr: str, candidates: set[str]) -> str:
    """Another value from the facts (the likely confusion), else one from the vocabulary."""
    others = sorted(candidates - {answer})
    if others:
        return rng.choice(others)
    if attr == "age":
        return str(int(answer) + rng.choice((-3, -2, -1, 1, 2, 3)))
    pool = [v for v in _VOCAB.get(attr, ()) if v != answer]
    if pool:
        return rng.choice(pool)
    backwards = answer[::-1].capitalize()  # names: a made-up one, unless the name is a palindrome ("Nen")
    return backwards if backwards.lower() != answer.lower() else answer + "a"


class WorldQA(Family):
    name = "world_qa"

    def make(self, rng: random.Random, world: World, target: Person, others: list[Person], kind: str, *,
             secrets: bool = False, lead: str = "", facts_per_person: int = 0) -> Task:
        templates = QUESTIONS[kind][0]
        facts, ctx = build_context(rng, world, target, others, secrets=secrets, places=kind == "famous",
                                   facts_per_person=facts_per_person, ask=kind)
        question = lead + rng.choice(templates).format(name=target.name)
        return self.from_parts(f"{facts}\nQuestion: {question}", ctx, kind, target.name)

    def from_parts(self, prompt: str, ctx: Context, kind: str, name: str) -> Task | None:
        attr = QUESTIONS[kind][1]
        answer = ctx.value(name, attr)
        if answer is None:
            return None
        return Task(self.name, prompt, answer, f"person:{name}",
                    {"attr": attr, "candidates": sorted(ctx.candidates(attr))}, scorer=self)

    def draw(self, rng: random.Random, ctx: SampleContext) -> Task:
        people = ctx.world.people_in(ctx.split)
        target, *others = rng.sample(people, 1 + ctx.cfg.distractors)
        return self.make(rng, ctx.world, target, others, rng.choice(list(QUESTIONS)),
                         facts_per_person=ctx.cfg.facts_per_person)

    def parse(self, prompt: str) -> Task | None:
        parts = split_prompt(prompt)
        if parts is None:
            return None
        ctx, q = parse_context(parts[0]), parse_question(parts[1])
        if ctx is None or q is None or ctx.has_secrets():
            return None
        return self.from_parts(prompt, ctx, *q)

    def score(self, task: Task, response: str) -> float:
        return score_value(response, task.answer, set(task.data["candidates"]))

    def wrong(self, task: Task, rng: random.Random) -> str:
        return wrong_value(rng, task.answer, task.data["attr"], set(task.data["candidates"]))
