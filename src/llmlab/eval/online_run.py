"""`llmlab ppo | grpo | rloo`: online RL (align/online.py), then, in the main process, the finished policy
against the model it started from on the prompts the run held out, as `llmlab dpo` ends (eval/against_base.py):

    prompts   align.online.prompt_sets' held-out ones: the task world's eval split drawn with data.tasks
              (eval.n_prompts of them), or data.eval_fraction of the user's prompt rows (no gold label:
              refusals and lengths only, as `llmlab eval` treats foreign prompts)
    answers   greedy, and eval.k sampled at eval.temperature for pass@1 / pass@k, rollout.max_new_tokens
              long, seeded by train.seed; the proxy reward model's score beside them when the run had one
    report    eval.md / eval.json: gold accuracy per family, refusal, over-refusal, format, length, pass@1,
              pass@k with 95% intervals and the end policy's paired differences from the start; and the
              run's own first and last held-out evaluation (metrics.jsonl's eval/* rows, with the KL)

The in-loop evaluation (align.online.Evaluator) stays in the trainer: its eval/* rows feed the curves and the
reward-hacking lab, and run on every process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmlab.align.config import OnlineConfig
from llmlab.align.models import load_policy
from llmlab.align.online import online, prompt_sets
from llmlab.align.onpolicy import rm_scorer
from llmlab.eval.against_base import against_base, train_then_evaluate
from llmlab.model.device import pick_device
from llmlab.runs import Run, read_metrics


def online_command(cfg: OnlineConfig, ctx: Any) -> int:
    """`llmlab ppo | grpo | rloo` (ctx: cli.Context): train (`resume=RUN` continues a stopped run), then
    `finish_online_run` in the main process."""
    return train_then_evaluate(cfg, ctx, online, finish_online_run)


def finish_online_run(cfg: OnlineConfig, run_dir: Path, *, quiet: bool) -> dict[str, Any] | None:
    """The run's final policy against its starting model (cfg.reference_model, else cfg.model) on the run's
    held-out prompts: eval.md, eval.json, generations.jsonl, family_scores.png. None without held-out prompts."""
    run = Run(run_dir, quiet=quiet)
    held = prompt_sets(cfg, lambda message: None)[1]  # the train run already logged what it skipped
    if not held:
        return None
    device = pick_device(cfg.train.device)
    policy, tok = load_policy(str(run_dir), device=device)
    base = load_policy(cfg.reference_model or cfg.model, device=device)[0].eval().requires_grad_(False)
    proxy = rm_scorer(cfg.reward.reward_model, device, cfg.rollout.batch_size) if cfg.reward.reward_model else None
    metrics = run_dir / "metrics.jsonl"
    evals = [r for r in read_metrics(metrics) if "eval/accuracy" in r] if metrics.is_file() else []
    in_loop = {"start": evals[0], "end": evals[-1]} if evals else None
    return against_base(policy, base, tok, held, out_dir=run_dir, log=run.log, k=cfg.eval.k,
                        temperature=cfg.eval.temperature, max_new_tokens=cfg.rollout.max_new_tokens,
                        batch_size=cfg.rollout.batch_size, seed=cfg.train.seed, device=device, proxy=proxy,
                        title=f"{cfg.algo}: the final policy against {cfg.reference_model or cfg.model}",
                        in_loop=in_loop, quiet=quiet)
