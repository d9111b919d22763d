"""`llmlab pretrain`: the command around train/pretrain.py."""

from __future__ import annotations

from llmlab.cli import Context
from llmlab.train.config import PretrainConfig


def pretrain(cfg: PretrainConfig, ctx: Context) -> int:
    from llmlab.train.pretrain import pretrain as run_pretrain
    from llmlab.train.pretrain import resumed_config

    if cfg.resume:  # continue with the saved config; overrides given now still apply (e.g. more steps)
        flags = {k: v for k, v in ctx.flags.items() if k != "resume"}
        cfg, _ = resumed_config(cfg.resume, tuple(o for o in ctx.overrides if not o.startswith("resume=")), flags)
    run_pretrain(cfg, out=ctx.out, quiet=ctx.quiet)
    return 0
