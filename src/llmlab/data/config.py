"""Configs of the task world and of the `llmlab data ...` commands."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from llmlab.config import check, require


@dataclass(frozen=True)
class WorldConfig:
    """The invented world that world-QA and safety tasks are about.

    The world depends only on these fields, so every file generated with the same
    world config talks about the same people and places, whatever the sampling seed.
    """

    seed: int = 0
    n_people: int = 400
    n_places: int = 40
    eval_fraction: float = 0.2  # share of people, places and problems held out for eval

    def __post_init__(self) -> None:
        check(self.n_people >= 20, f"n_people must be at least 20, got {self.n_people}")
        check(self.n_places >= 8, f"n_places must be at least 8, got {self.n_places}")
        check(0.0 < self.eval_fraction < 1.0, f"eval_fraction must be in (0, 1), got {self.eval_fraction}")


# The names of the task families, in the order of `tasks.FAMILIES` (which checks that they agree).
FAMILY_NAMES = ("arithmetic", "reverse", "sort", "count", "compare", "format", "world_qa", "unsafe", "benign")


@dataclass(frozen=True)
class TaskConfig:
    """Which task families to draw and how hard they are."""

    families: tuple[str, ...] = ()  # empty: all families, in equal shares
    arith_ops: tuple[str, ...] = ("+", "-", "*")
    arith_min_digits: int = 1
    arith_max_digits: int = 3
    mul_max_digits: int = 2  # `*` operands are capped here: 3x3-digit products are hard for small models
    list_min_len: int = 3
    list_max_len: int = 6
    max_number: int = 999  # sort and compare draw from 0..max_number
    distractors: int = 2  # other people described in a world-QA context
    facts_per_person: int = 0  # facts given per person in a world-QA context (0: all five); shorter prompts

    def __post_init__(self) -> None:
        for name in self.families:
            check(name in FAMILY_NAMES, f"unknown task family {name!r}; families: {', '.join(FAMILY_NAMES)}")
        for op in self.arith_ops:
            check(op in ("+", "-", "*"), f"arith_ops: unknown operator {op!r}; use +, - or *")
        check(len(self.arith_ops) > 0, "arith_ops must name at least one operator")
        check(1 <= self.arith_min_digits <= self.arith_max_digits <= 9,
              f"need 1 <= arith_min_digits <= arith_max_digits <= 9, got {self.arith_min_digits}, {self.arith_max_digits}")
        check(self.mul_max_digits >= 1, "mul_max_digits must be at least 1")
        check(2 <= self.list_min_len <= self.list_max_len <= 20,
              f"need 2 <= list_min_len <= list_max_len <= 20, got {self.list_min_len}, {self.list_max_len}")
        check(self.max_number >= 20, f"max_number must be at least 20, got {self.max_number}")
        check(0 <= self.distractors <= 6, f"distractors must be in 0..6, got {self.distractors}")
        check(0 <= self.facts_per_person <= 5, f"facts_per_person must be in 0..5 (0: all), got {self.facts_per_person}")

    def describe(self, *, only_changed: bool = False) -> str:
        """"families=('compare',), max_number=99, ..." for reports: every setting, or those that differ
        from the defaults ("default tasks" when none does)."""
        default = TaskConfig()
        return ", ".join(f"{k}={v}" for k, v in self.__dict__.items()
                         if not only_changed or v != getattr(default, k)) or "default tasks"


REJECTED_KINDS = ("wrong_answer", "unsafe_compliance", "over_refusal", "format_violation", "verbose_padding")


@dataclass(frozen=True)
class PrefsConfig:
    """How preference pairs are corrupted: the knobs of the reward-hacking experiments."""

    label_noise: float = 0.0  # share of pairs whose chosen and rejected are swapped
    length_bias: float | None = None  # share of pairs in which chosen is the longer response; None: as drawn
    rejected_kinds: tuple[str, ...] = ()  # empty: every kind that applies to the prompt

    def __post_init__(self) -> None:
        check(0.0 <= self.label_noise <= 0.5, f"label_noise must be in [0, 0.5], got {self.label_noise}")
        check(self.length_bias is None or 0.0 <= self.length_bias <= 1.0,
              f"length_bias must be null or in [0, 1], got {self.length_bias}")
        for kind in self.rejected_kinds:
            check(kind in REJECTED_KINDS, f"unknown rejected kind {kind!r}; kinds: {', '.join(REJECTED_KINDS)}")


@dataclass(frozen=True)
class GenerateConfig:
    """`llmlab data generate`."""

    # multilingual: parallel sentences, one row per sentence and language; code-mixed: Hinglish, code...
    kind: Literal["pretrain", "sft", "prefs", "eval", "multilingual", "code-mixed"] = "eval"
    n: int = 1000  # multilingual: parallel sentences (each written in every language)
    chars: int = 0  # pretrain: stop once the corpus has this many characters (0: n documents)
    seed: int = 0
    out: str = "-"
    split: Literal["train", "eval"] | None = None  # default: eval for kind=eval, train otherwise
    world: WorldConfig = field(default_factory=WorldConfig)
    tasks: TaskConfig = field(default_factory=TaskConfig)
    prefs: PrefsConfig = field(default_factory=PrefsConfig)

    def __post_init__(self) -> None:
        check(self.n >= 1, f"n must be at least 1, got {self.n}")
        check(self.chars >= 0, f"chars must be >= 0, got {self.chars}")
        check(self.chars == 0 or self.kind == "pretrain", "chars applies to kind=pretrain only")
        check(self.kind != "pretrain" or self.split in (None, "train"),
              "the pretraining corpus is built from the train split only")

    @property
    def resolved_split(self) -> str:
        return self.split or ("eval" if self.kind == "eval" else "train")


@dataclass(frozen=True)
class ScoreConfig:
    """`llmlab data score`."""

    input: str = ""
    out: str | None = None
    strict: bool = False  # stop at the first malformed row instead of skipping it

    def __post_init__(self) -> None:
        require(bool(self.input), "input is required (--input FILE)")


@dataclass(frozen=True)
class ValidateConfig:
    """`llmlab data validate`."""

    input: str = ""
    schema: Literal["text", "chat", "prefs", "responses", "eval"] = "chat"
    strict: bool = False

    def __post_init__(self) -> None:
        require(bool(self.input), "input is required (--input FILE)")
