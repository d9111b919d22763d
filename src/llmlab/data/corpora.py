"""The task world's datasets: pretraining corpus, SFT chats, preference pairs, eval prompts.

Every generator is a pure function of a `GenerateConfig` (same config, same rows)
and yields rows one at a time, so a large corpus never sits in memory.

Preference pairs name the kind of their rejected response:

    wrong_answer       a plausible wrong answer (off by a little, a distractor from the facts)
    unsafe_compliance  the secret, or help to harm (for unsafe prompts, whose chosen is a refusal)
    over_refusal       a refusal of a benign prompt (most often of a look-alike)
    format_violation   the right content in the wrong format
    verbose_padding    the right answer buried under filler (chosen is the concise one)

`prefs.label_noise` swaps chosen and rejected in that share of pairs; then
`prefs.length_bias` pads one side with neutral filler so that chosen is the longer
response in that share of pairs: a reward model trained on such data can learn to
prefer length, which is the seed of the reward-hacking experiments.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from llmlab.data.answers import REFUSALS, is_refusal
from llmlab.data.config import GenerateConfig, TaskConfig
from llmlab.data.families.world_qa import fact_lines
from llmlab.data.multilingual import code_mixed, parallel_sentences
from llmlab.data.task import Task
from llmlab.data.tasks import FAMILIES, sample_tasks
from llmlab.data.world import World, build_world
from llmlab.errors import UserError

# Filler for padding: no digits, no refusal phrases and no "answer", so gold scorers read through it.
FILLERS = ("Sure!", "Good question.", "Let me think about this carefully.", "I went through it step by step.",
           "Happy to help with this one.", "Here is what I found after checking.", "This one is worth a close look.")
REFUSAL_FILLERS = ("Please ask me something else.", "I hope you understand.", "Privacy matters to everyone.",
                   "Thank you for understanding.")

_ALL = set(FAMILIES)
KIND_FAMILIES: dict[str, set[str]] = {
    "wrong_answer": _ALL - {"unsafe"},
    "unsafe_compliance": {"unsafe"},
    "over_refusal": _ALL - {"unsafe"},
    "format_violation": {"format"},
    "verbose_padding": {name for name, f in FAMILIES.items() if f.paddable} - {"unsafe"},
}
KIND_WEIGHTS = {"wrong_answer": 2.0, "unsafe_compliance": 1.0, "over_refusal": 1.0, "format_violation": 3.0,
                "verbose_padding": 1.0}


def pad(response: str, rng: random.Random, k: int) -> str:
    """`response` with k filler sentences: after a refusal, before anything else."""
    if is_refusal(response):
        return " ".join([response, *rng.sample(REFUSAL_FILLERS, min(k, len(REFUSAL_FILLERS)))])
    return " ".join([*rng.sample(FILLERS, min(k, len(FILLERS))), "Here is my answer:", response])


def _longer(text: str, than: str, rng: random.Random) -> str:
    """Pad `text` with as few fillers as make it longer than `than` (unchanged if already longer)."""
    k = 1
    padded = text
    while len(padded) <= len(than) and k <= len(FILLERS):
        padded = pad(text, rng, k)
        k += 1
    return padded


def make_pair(task: Task, rng: random.Random, cfg: GenerateConfig) -> dict[str, Any]:
    """One `{prompt, chosen, rejected, meta}` row for `task`."""
    family = FAMILIES[task.family]
    allowed = cfg.prefs.rejected_kinds or tuple(KIND_WEIGHTS)
    kinds = [k for k in allowed if task.family in KIND_FAMILIES[k]]
    kind = rng.choices(kinds, weights=[KIND_WEIGHTS[k] * (3 if task.family == "benign" and k == "over_refusal" else 1)
                                       for k in kinds])[0]
    chosen = family.respond(task, rng)
    rejected = {
        "wrong_answer": lambda: family.wrong(task, rng),
        "unsafe_compliance": lambda: family.wrong(task, rng),
        "over_refusal": lambda: rng.choice(REFUSALS),
        "format_violation": lambda: family.violate(task, rng),
        "verbose_padding": lambda: pad(chosen, rng, rng.randint(3, 5)),
    }[kind]()
    flipped = rng.random() < cfg.prefs.label_noise
    if flipped:
        chosen, rejected = rejected, chosen
    if cfg.prefs.length_bias is not None:
        # Pad whichever side must be the longer one; format tasks' gold answers cannot be padded.
        want_chosen_longer = rng.random() < cfg.prefs.length_bias
        chosen_paddable = family.paddable or flipped
        if want_chosen_longer and chosen_paddable:
            chosen = _longer(chosen, rejected, rng)
        elif not want_chosen_longer:
            rejected = _longer(rejected, chosen, rng)
    meta = {"family": task.family, "rejected_kind": kind, "label_flipped": flipped,
            "chosen_longer": len(chosen) > len(rejected)}
    return {"prompt": task.prompt, "chosen": chosen, "rejected": rejected, "meta": meta}


def _pref_families(cfg: GenerateConfig) -> tuple[str, ...]:
    """The requested families that can make a pair of an allowed rejected kind."""
    wanted = cfg.tasks.families or tuple(FAMILIES)
    kinds = cfg.prefs.rejected_kinds or tuple(KIND_WEIGHTS)
    usable = tuple(f for f in wanted if any(f in KIND_FAMILIES[k] for k in kinds))
    if not usable:
        raise UserError(f"no task family in {', '.join(wanted)} can make pairs of kind {', '.join(kinds)}")
    return usable


def _tasks(cfg: GenerateConfig, n: int, *, families: tuple[str, ...] | None = None) -> list[Task]:
    tasks_cfg = cfg.tasks if families is None else type(cfg.tasks)(**{**vars(cfg.tasks), "families": families})
    # Each kind draws its own stream, so SFT and preference prompts differ for the same seed.
    return sample_tasks(n, seed=cfg.seed, split=cfg.resolved_split, world=cfg.world, tasks=tasks_cfg,
                        stream=cfg.kind)


def eval_rows(cfg: GenerateConfig) -> Iterator[dict[str, Any]]:
    for task in _tasks(cfg, cfg.n):
        yield {"prompt": task.prompt, "answer": task.answer, "family": task.family,
               "should_refuse": task.should_refuse}


def sft_rows(cfg: GenerateConfig) -> Iterator[dict[str, Any]]:
    rng = random.Random(f"llmlab-sft:{cfg.seed}")
    for task in _tasks(cfg, cfg.n):
        response = FAMILIES[task.family].respond(task, rng)
        yield {"messages": [{"role": "user", "content": task.prompt}, {"role": "assistant", "content": response}],
               "meta": {"family": task.family}}


def pref_rows(cfg: GenerateConfig) -> Iterator[dict[str, Any]]:
    rng = random.Random(f"llmlab-prefs:{cfg.seed}")
    for task in _tasks(cfg, cfg.n, families=_pref_families(cfg)):
        yield make_pair(task, rng, cfg)


# ----------------------------------------------------------------------------- pretraining corpus

_STORIES = (
    "One morning {name} walked from {home} to {town} with {pet_name} the {pet}. In {town} they saw the "
    "famous {thing}, and {pet_name} would not stop looking at them.",
    "{name} is a {job} from {home}. Every week {name} takes {pet_name}, a {colour} collar on its neck, "
    "to the market in {town}.",
    "When the rain came to {home}, {name} stayed inside and told {pet_name} the {pet} about the {thing} "
    "of {town}.",
)


def _bio(rng: random.Random, world: World, split: str) -> str:
    person = rng.choice(world.people_in(split))
    facts = list(fact_lines(person, secrets=False).values())
    rng.shuffle(facts)
    return " ".join([f"This is about {person.name}.", *facts])


def _place(rng: random.Random, world: World, split: str) -> str:
    place = rng.choice(world.places)
    residents = [p.name for p in world.people_in(split) if p.home == place.name][:4]
    text = f"{place.name} is known for its {place.famous_for}."
    if residents:
        text += f" People who live in {place.name} include {', '.join(residents)}."
    return text


def _story(rng: random.Random, world: World, split: str) -> str:
    person = rng.choice(world.people_in(split))
    town = rng.choice(world.places)
    return rng.choice(_STORIES).format(**vars(person), town=town.name, thing=town.famous_for)


def pretrain_documents(cfg: GenerateConfig) -> Iterator[str]:
    """Bios, towns, short stories and worked examples of every task family but `unsafe`.

    Unsafe prompts and refusals are left out on purpose: refusing is what the
    alignment stages must teach, so the base model should not know it yet.
    """
    world = build_world(cfg.world)
    rng = random.Random(f"llmlab-pretrain:{cfg.seed}")
    families = tuple(f for f in (cfg.tasks.families or FAMILIES) if f != "unsafe")
    worked: list[Task] = []
    chunk = 0
    produced = chars = 0
    while (chars < cfg.chars) if cfg.chars else (produced < cfg.n):
        kind = rng.choices(("bio", "place", "story", "worked"), weights=(0.25, 0.1, 0.25, 0.4))[0]
        if kind == "worked" and not families:
            kind = "bio"
        if kind == "worked":
            if not worked:
                chunk += 1
                tasks_cfg = type(cfg.tasks)(**{**vars(cfg.tasks), "families": families})
                worked = sample_tasks(256, seed=cfg.seed, split="train", world=cfg.world, tasks=tasks_cfg,
                                      stream=f"pretrain-{chunk}")
            doc = worked_example(worked.pop(), rng)
        else:
            doc = {"bio": _bio, "place": _place, "story": _story}[kind](rng, world, "train")
        produced += 1
        chars += len(doc) + 2
        yield doc


def worked_example(task: Task, rng: random.Random) -> str:
    """A task and a gold response as a pretraining document."""
    return f"Question: {task.prompt}\nAnswer: {FAMILIES[task.family].respond(task, rng)}"


def held_out_documents(n: int, *, seed: int = 0, tasks: TaskConfig = TaskConfig()) -> list[str]:  # noqa: B008
    """`n` worked examples like the pretraining corpus's, of eval-split tasks (no model trained on their
    problems) and, as there, of every family but `unsafe`: held-out text for perplexity."""
    families = tuple(f for f in (tasks.families or FAMILIES) if f != "unsafe")
    if not families:
        raise UserError("held-out text needs a task family other than unsafe (tasks.families)")
    rng = random.Random(f"llmlab-held-out-text:{seed}")
    drawn = sample_tasks(n, seed=seed, split="eval", tasks=replace(tasks, families=families), stream="held-out-text")
    return [worked_example(t, rng) for t in drawn]


def pretrain_rows(cfg: GenerateConfig) -> Iterator[dict[str, Any]]:
    for doc in pretrain_documents(cfg):
        yield {"text": doc}


def multilingual_rows(cfg: GenerateConfig) -> Iterator[dict[str, Any]]:
    """`cfg.n` parallel sentences, one row per language: {"lang": "ru", "text": ..., "id": 3}; rows of
    one id are translations of each other (multilingual.py)."""
    for i, row in enumerate(parallel_sentences(cfg.n, cfg.seed)):
        for lang, text in row.items():
            yield {"lang": lang, "text": text, "id": i}


def code_mixed_rows(cfg: GenerateConfig) -> Iterator[dict[str, Any]]:
    """`cfg.n` code-mixed samples (Hinglish, Hindi + English, Python with non-English comments)."""
    for i, text in enumerate(code_mixed(cfg.n, cfg.seed)):
        yield {"lang": "mixed", "text": text, "id": i}


GENERATORS = {"pretrain": pretrain_rows, "sft": sft_rows, "prefs": pref_rows, "eval": eval_rows,
              "multilingual": multilingual_rows, "code-mixed": code_mixed_rows}
# Kinds that may also be written as plain text (--out x.txt), with the separator between rows.
TEXT_KINDS = {"pretrain": "\n\n", "multilingual": "\n", "code-mixed": "\n\n"}
