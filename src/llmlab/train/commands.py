"""`llmlab pretrain`: the command around train/pretrain.py."""

from __future__ import annotations

from typing import Any

from llmlab.train.config import PretrainConfig


def pretrain(cfg: PretrainConfig, ctx: Any) -> int:
    """Train (ctx: the command's Context); `--resume RUN` continues with the saved config, the flags and
    overrides given now on top (e.g. more steps)."""
    from llmlab.train.checkpoint import with_resume
    from llmlab.train.pretrain import pretrain as run_pretrain

    run_pretrain(with_resume(cfg, ctx), out=ctx.out, quiet=ctx.quiet)
    return 0
