"""Learning-rate schedule: linear warmup, then cosine decay to a floor (as in Chinchilla and Llama).

    lr_at(step)   step < warmup:   lr * (step + 1) / warmup
                  after:           floor + (lr - floor) * (1 + cos(pi * progress)) / 2,
                                   progress = (step - warmup) / (max_steps - warmup), floor = lr * min_ratio

A pure function of the step, so a resumed run needs no scheduler state: the step is enough.
"""

from __future__ import annotations

import math


def lr_at(step: int, *, lr: float, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    floor = lr * min_lr_ratio
    decay_steps = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
