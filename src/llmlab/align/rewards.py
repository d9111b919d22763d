"""The online trainers' reward: a weighted sum of terms named in the config (align/config.RewardConfig),

    reward = gold * gold_score + rm * reward_model_score + format * closed_turn + length * n_tokens

and the signals logged beside it whatever their weights: the gold score of every task-world prompt
(so a run trained on a reward model still shows what it does to true quality) and the reward
model's score whenever one is named (the "proxy" of the reward-hacking lab).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llmlab.align.config import RewardConfig
from llmlab.align.onpolicy import Prompt
from llmlab.align.reward_model import load_reward_model, score_texts
from llmlab.data.answers import is_refusal
from llmlab.data.tasks import parse_task
from llmlab.errors import UserError


@dataclass(frozen=True)
class Scored:
    """Per response: the training reward and the signals beside it (nan where a signal does not apply)."""

    reward: list[float]
    gold: list[float]  # nan for a prompt that is not a task-world prompt
    proxy: list[float]  # the reward model's score; nan without one
    refused: list[float]  # 1 where the response is a refusal


class Rewards:
    """Scores responses; the reward model (if any) is loaded once, on `device`."""

    def __init__(self, cfg: RewardConfig, *, device: Any, batch_size: int) -> None:
        self.cfg, self.batch_size = cfg, batch_size
        self.rm = load_reward_model(cfg.reward_model, device=device) if cfg.reward_model else None

    def check_prompts(self, prompts: Sequence[Prompt]) -> None:
        """The gold term needs task-world prompts: a one-line error naming the first that is not."""
        if self.cfg.gold:
            foreign = next((p.text for p in prompts if p.family is None), None)
            if foreign is not None:
                raise UserError(f"reward.gold={self.cfg.gold} needs task-world prompts, but {foreign[:60]!r} is not "
                                "one; set reward.gold=0 and use a reward model (reward.rm, reward.reward_model)")

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str], closed: Sequence[bool],
                 lengths: Sequence[int]) -> Scored:
        tasks = [parse_task(p.text) if p.family is not None else None for p in prompts]
        gold = [t.score(r) if t is not None else math.nan for t, r in zip(tasks, responses, strict=True)]
        proxy = ([float(x) for x in score_texts(*self.rm, [(p.text, r) for p, r in zip(prompts, responses,
                                                                                      strict=True)],
                                                batch_size=self.batch_size)]
                 if self.rm is not None else [math.nan] * len(responses))
        c = self.cfg
        reward = [
            (c.gold * g if c.gold else 0.0) + (c.rm * x if c.rm else 0.0)
            + c.format * float(bool(r) and ok) + c.length * n
            for g, x, r, ok, n in zip(gold, proxy, responses, closed, lengths, strict=True)
        ]
        return Scored(reward, gold, proxy, [float(is_refusal(r)) for r in responses])
