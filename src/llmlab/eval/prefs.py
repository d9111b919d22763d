"""Evaluation of an aligned policy against its base: `llmlab eval-prefs`, and `llmlab dpo` (training, then
this evaluation, then the training curves).

    held-out pairs    implicit reward r(y) = log pi(y|x) - log pi_base(y|x) (summed over the response);
                      accuracy = share of pairs with r(chosen) > r(rejected), plus the mean margin
    held-out prompts  task-world eval prompts (corpora.eval_rows: none is in the train split) answered
                      greedily by the base and by the aligned model and summarised as `llmlab eval` does
                      (eval/policies.py): gold accuracy per family, refusal of unsafe requests, over-refusal
                      of their benign look-alikes, format compliance, length, each with a 95% interval, and
                      the aligned model's paired difference from the base

Both written by eval/against_base.py (eval.md, eval.json, generations.jsonl, family_scores.png), which
`llmlab ppo | grpo | rloo` share (eval/online_run.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmlab.align.config import DPOConfig, EvalPrefsConfig, PrefEvalConfig
from llmlab.align.data import encode_pairs, holdout_split, load_preference_rows
from llmlab.align.dpo_train import dpo, preference_rows, task_world_pairs
from llmlab.align.models import ChatTokenizer, load_policy, sequence_lengths
from llmlab.align.onpolicy import Prompt
from llmlab.align.reference import reference_logprobs
from llmlab.config import read_yaml
from llmlab.data.config import GenerateConfig
from llmlab.data.corpora import eval_rows
from llmlab.errors import UserError
from llmlab.eval.against_base import against_base, preferences_text, train_then_evaluate
from llmlab.model.device import pick_device
from llmlab.runs import Run, read_metrics, start_run
from llmlab.viz.alignment import preference_curves_png

# ---------------------------------------------------------------------- preference accuracy


def preference_accuracy(policy_logps: torch.Tensor, base_logps: torch.Tensor) -> dict[str, float]:
    """From (N, 2+) summed log-probs (chosen, rejected) under the policy and the base:
    {"n", "accuracy", "margin" (mean r_c - r_r), "base_accuracy"} where base_accuracy is the share
    of pairs the base alone already ranks right by raw log-prob.

    >>> preference_accuracy(torch.tensor([[-1.0, -5.0], [-2.0, -1.0]]), torch.tensor([[-2.0, -2.0], [-2.0, -2.0]]))
    {'n': 2, 'accuracy': 0.5, 'margin': 1.5, 'base_accuracy': 0.0}
    """
    r = policy_logps[:, :2] - base_logps[:, :2]
    margins = r[:, 0] - r[:, 1]
    return {"n": int(r.shape[0]), "accuracy": float((margins > 0).float().mean()), "margin": float(margins.mean()),
            "base_accuracy": float((base_logps[:, 0] > base_logps[:, 1]).float().mean())}


# ---------------------------------------------------------------------- a whole evaluation


def evaluate_run(policy: nn.Module, tok: ChatTokenizer, *, base_path: str, held_out: list[dict],
                 eval_cfg: PrefEvalConfig, max_length: int, max_prompt_length: int, device: torch.device,
                 out_dir: Path, log: Callable[[str], None], quiet: bool = True) -> dict[str, Any]:
    """Preference accuracy on `held_out` pairs and base-vs-aligned answers on task-world eval prompts."""

    base, _ = load_policy(base_path, device=device)
    base.eval().requires_grad_(False)
    policy.eval()
    prefs = None
    if held_out:
        max_length, max_prompt_length = sequence_lengths(policy, max_length, max_prompt_length)
        examples, _ = encode_pairs(held_out, tok, max_length=max_length, max_prompt_length=max_prompt_length)
        kwargs = {"device": device, "batch_size": eval_cfg.batch_size}
        prefs = preference_accuracy(reference_logprobs(policy, examples, tok.pad_id, **kwargs),
                                    reference_logprobs(base, examples, tok.pad_id, **kwargs))
    rows = eval_rows(GenerateConfig(kind="eval", n=eval_cfg.n_prompts, seed=eval_cfg.seed, tasks=eval_cfg.tasks)) \
        if eval_cfg.n_prompts else []
    prompts = [Prompt(r["prompt"], r["family"], r["answer"]) for r in rows]
    result = against_base(policy, base, tok, prompts, out_dir=out_dir, log=log, prefs=prefs,
                          max_new_tokens=eval_cfg.max_new_tokens, batch_size=eval_cfg.batch_size, seed=eval_cfg.seed,
                          device=device, quiet=quiet)
    if prefs:
        log(preferences_text(prefs))
    del base
    return result


def eval_prefs(cfg: EvalPrefsConfig, *, out: Path | None = None, quiet: bool = False) -> Path:
    """`llmlab eval-prefs`: evaluate --model against --base (default: the dpo run's starting model)."""

    base = cfg.base or _run_base(Path(cfg.model))
    if not base:
        raise UserError(f"{cfg.model}: not a dpo run folder, so --base DIR is needed (the model it started from)")
    run = start_run("eval-prefs", cfg, out=out, quiet=quiet)
    device = pick_device(cfg.device)
    policy, tok = load_policy(cfg.model, device=device)
    if cfg.data.input:
        rows, skipped = load_preference_rows(cfg.data)
        for message in skipped:
            run.log(f"skipped row: {message}")
        held = holdout_split(rows, cfg.data.eval_fraction, seed=cfg.data.seed)[1] if cfg.data.eval_fraction else rows
        held = held[: cfg.eval.n_pairs]
    else:
        held = task_world_pairs(cfg.eval.n_pairs, seed=cfg.eval.seed, tasks=cfg.eval.tasks)
    evaluate_run(policy, tok, base_path=base, held_out=held, eval_cfg=cfg.eval, max_length=cfg.max_length,
                 max_prompt_length=cfg.max_prompt_length, device=device, out_dir=run.dir, log=run.log, quiet=quiet)
    return run.dir


def _run_base(model_dir: Path) -> str:
    """The starting model recorded in a dpo run folder's config.yaml, or ""."""

    path = model_dir / "config.yaml"
    if not path.is_file():
        return ""
    data = read_yaml(path)
    return str(data.get("reference_model") or data.get("model") or "")


def command(cfg: EvalPrefsConfig, ctx: Any) -> int:
    """`llmlab eval-prefs` (ctx: the command's Context)."""
    run_dir = eval_prefs(cfg, out=ctx.out, quiet=ctx.quiet)
    print((run_dir / "eval.md").read_text(encoding="utf-8"))
    return 0


# ---------------------------------------------------------------------- llmlab dpo


def dpo_command(cfg: DPOConfig, ctx: Any) -> int:
    """`llmlab dpo`: train (align/dpo_train.py; `resume=RUN` continues a stopped run), then, in the main
    process, `finish_dpo_run`."""
    return train_then_evaluate(cfg, ctx, dpo, finish_dpo_run)


def finish_dpo_run(cfg: DPOConfig, run_dir: Path, *, quiet: bool) -> None:
    """curves.png from the run's metrics, then the evaluation of its policy against the starting model on
    the run's held-out pairs and task-world prompts (eval.md, eval.json, generations.jsonl)."""

    run = Run(run_dir, quiet=quiet)
    rows = read_metrics(run_dir / "metrics.jsonl")
    if rows:
        preference_curves_png(rows, run_dir / "curves.png", title=f"llmlab dpo ({cfg.loss}, beta {cfg.beta})")
    device = pick_device(cfg.train.device)
    policy, tok = load_policy(str(run_dir), device=device)
    evaluate_run(policy, tok, base_path=cfg.reference_model or cfg.model, held_out=preference_rows(cfg, run.log)[1],
                 eval_cfg=cfg.eval, max_length=cfg.max_length, max_prompt_length=cfg.max_prompt_length,
                 device=device, out_dir=run_dir, log=run.log, quiet=quiet)
