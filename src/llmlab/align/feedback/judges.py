"""Judges: anything that scores a response or prefers one of two, with a rationale, behind one interface.

    Judge.score(prompts, responses)      -> [Score]     how good each response is (higher is better)
    Judge.compare(prompts, a, b)         -> [Verdict]   P(a is better than b) per pair, 0.5 = no preference

Both calls take lists: a judge that runs a model batches them. A judge that only scores compares by
its scores (`ScoringJudge`): the Bradley–Terry probability sigmoid(s_a - s_b / temperature), or a hard
1 / 0.5 / 0 for judges whose scores are on no common logit scale (the gold scorers). `build_judge(spec)`
turns a command-line spec into a judge:

    gold                    the task world's gold scorers (task-world prompts only)
    rm=DIR                  a reward model folder: Bradley–Terry on its rewards
    safety[=RULES.yaml]     rule-based safety checks (safety.py; the default rules in safety_rules.yaml)
    endpoint=URL[,k=v...]   an OpenAI-compatible chat endpoint as an LLM judge (endpoint.py)
    llm=DIR                 a local llmlab or HF model with a rubric, read from its option log-probs (llm_judge.py)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from llmlab.align.feedback.base import (
    Judge,
    Score,
    ScoringJudge,
    Verdict,
    both_orders,
    check_lengths,
    position_consistency,
)
from llmlab.align.feedback.endpoint import EndpointJudge
from llmlab.align.feedback.safety import SafetyJudge
from llmlab.data.tasks import parse_task
from llmlab.errors import UserError

# the interface lives in base.py (the judge modules import it from there); it is re-exported here
__all__ = ["JUDGES", "EndpointJudge", "GoldJudge", "Judge", "RewardModelJudge", "SafetyJudge", "Score",
           "ScoringJudge", "Verdict", "both_orders", "build_judge", "check_lengths", "position_consistency"]


class GoldJudge(ScoringJudge):
    """The task world's gold scorers: exact for task-world prompts, a UserError naming any other."""

    name = "gold"

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Score]:
        check_lengths(prompts, responses)
        out = []
        for prompt, response in zip(prompts, responses, strict=True):
            task = parse_task(prompt)
            if task is None:
                raise UserError(f"the gold judge knows only task-world prompts, not {prompt[:60]!r}")
            value = task.score(response)
            why = "should refuse" if task.should_refuse else f"expected {task.answer[:40]!r}"
            out.append(Score(value, f"{task.family}: {why}"))
        return out


class RewardModelJudge(ScoringJudge):
    """A reward model folder (`llmlab rm train`, or an HF ...ForSequenceClassification): scores are its
    rewards, which are Bradley–Terry logits by training, so compare is sigmoid(r_a - r_b)."""

    name = "rm"
    temperature = 1.0

    def __init__(self, directory: str, *, batch_size: int = 16) -> None:
        # torch and transformers are imported only when a reward model is used
        from llmlab.align.reward_model import load_reward_model

        if not directory:
            raise UserError("the rm judge needs a reward model folder: --judge rm=DIR")
        self.rm, self.tok = load_reward_model(directory)
        self.batch_size = batch_size

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Score]:
        from llmlab.align.reward_model import score_texts

        check_lengths(prompts, responses)
        rewards = score_texts(self.rm, self.tok, list(zip(prompts, responses, strict=True)),
                              batch_size=self.batch_size)
        return [Score(r, "reward") for r in rewards]


def _llm_judge(arg: str) -> Judge:
    # torch is imported only when a model judge is used
    from llmlab.align.feedback.llm_judge import build_llm_judge

    return build_llm_judge(arg)


# name -> a constructor taking the spec's argument (the text after "NAME=", "" without one)
JUDGES: dict[str, Callable[[str], Judge]] = {
    "gold": lambda arg: GoldJudge(),
    "rm": RewardModelJudge,
    "safety": SafetyJudge,
    "endpoint": EndpointJudge.from_spec,
    "llm": _llm_judge,
}


def build_judge(spec: str) -> Judge:
    """A judge from its spec: "NAME" or "NAME=ARG" (the argument is a folder, a URL, ...)."""
    name, _, arg = spec.partition("=")
    if name not in JUDGES:
        raise UserError(f"unknown judge {name!r} in {spec!r}; known: {', '.join(sorted(JUDGES))}")
    return JUDGES[name](arg)
