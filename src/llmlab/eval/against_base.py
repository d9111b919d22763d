"""A trainer's finished policy against the model it started from, on the run's held-out prompts: the
end-of-run evaluation of `llmlab dpo` (eval/prefs.py) and of `llmlab ppo | grpo | rloo` (eval/online_run.py),
and `llmlab eval-prefs`.

    answers   the base and the aligned policy answer every prompt greedily, and k times at a temperature
              where the trainer samples (policies.answer_with: the same seeded draws for both)
    tables    `llmlab eval`'s (policies.summarise): gold accuracy per family, refusal of unsafe requests,
              over-refusal of their benign look-alikes, format compliance, length, pass@1 / pass@k, each
              with a 95% interval, and the aligned policy's paired difference from the base. A prompt outside
              the task world (a user's prompt file) has refusals and lengths but no gold figures.

Writes eval.md, eval.json, generations.jsonl (every prompt and both answers) and family_scores.png.
`side_by_side` and `format_comparison` take scored answers, so the tables are testable without a model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmlab.align.models import ChatTokenizer
from llmlab.align.onpolicy import Prompt
from llmlab.eval.policies import Answered, answer_with, difference, families_md, interval, summarise, table_md
from llmlab.files import write_json_atomic, write_jsonl_atomic, write_text_atomic
from llmlab.runs import json_safe, progress
from llmlab.train.checkpoint import with_resume
from llmlab.train.distributed import process_rank
from llmlab.viz.figures import family_scores_chart


def side_by_side(prompts: Sequence[Prompt], results: dict[str, list[Answered]]) -> tuple[dict[str, Any],
                                                                                        list[dict]]:
    """(policies.summarise of the answers, the first policy against the others, per-prompt records);
    `results` holds each policy's answers to `prompts` (policies.answer_with / scored)."""
    summary = summarise(results, baseline=next(iter(results)))
    records = [{"prompt": p.text, "family": p.family, "answer": p.gold,
                **{name: answers[i].answer for name, answers in results.items()}} for i, p in enumerate(prompts)]
    return summary, records


def preferences_text(prefs: dict[str, float]) -> str:
    """One line of prefs.preference_accuracy's figures."""
    return (f"held-out preference pairs: {prefs['n']}; implicit-reward accuracy {prefs['accuracy']:.3f} (mean margin "
            f"{prefs['margin']:.3f} nats); the base ranks {prefs['base_accuracy']:.3f} right by raw log-prob")


def format_comparison(summary: dict[str, Any], prefs: dict[str, float] | None, *, title: str = "Evaluation",
                      k: int = 0, temperature: float = 1.0, in_loop: dict[str, dict] | None = None) -> str:
    """Markdown: preference accuracy (DPO), then `llmlab eval`'s tables (policies.table_md and families_md),
    then a trainer's own first and last held-out evaluation (`in_loop`: {"start", "end"} eval/* rows)."""
    lines = [f"# {title}", ""]
    if prefs:
        lines += [preferences_text(prefs), ""]
    if summary:
        sampled = f"; pass@1 and pass@{k} from {k} answers per prompt sampled at temperature {temperature:g}" if k \
            else ""
        lines += [f"Greedy answers to held-out prompts, scored by the gold scorers{sampled}; 95% intervals (Wilson "
                  "for rates, normal for means), differences paired over the same prompts.", "",
                  table_md(summary, k=k), ""]
        if any(s["families"] for s in summary.values()):
            lines += ["Gold accuracy per family:", "", families_md(summary), ""]
    if in_loop:
        start, end = in_loop["start"], in_loop["end"]
        lines += ["The trainer's own held-out evaluations (metrics.jsonl's eval/* rows: KL to the reference over the "
                  "sampled answers), first and last:", "", "| held-out | first | last |", "|---|---:|---:|",
                  *(f"| {key.removeprefix('eval/')} | {v:.3f} | {end.get(key, float('nan')):.3f} |"
                    for key, v in start.items() if key.startswith("eval/")), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def write_evaluation(out_dir: Path, summary: dict[str, Any], records: list[dict], prefs: dict[str, float] | None,
                     *, title: str = "Evaluation", k: int = 0, temperature: float = 1.0,
                     in_loop: dict[str, dict] | None = None) -> str:
    """eval.md (`format_comparison`), eval.json, generations.jsonl and family_scores.png in `out_dir`;
    returns the markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = format_comparison(summary, prefs, title=title, k=k, temperature=temperature, in_loop=in_loop)
    write_text_atomic(out_dir / "eval.md", md)
    saved = {"preferences": prefs, "generation": summary, **({"in_loop": in_loop} if in_loop else {})}
    write_json_atomic(out_dir / "eval.json", json_safe(saved))
    write_jsonl_atomic(out_dir / "generations.jsonl", records)
    if any(s["families"] for s in summary.values()):
        charts = {name: {"families": {**s["families"], "all": s["accuracy"]}} for name, s in summary.items()}
        family_scores_chart(charts, out_dir / "family_scores.png", key="mean", ylabel="gold accuracy (95% CI)",
                            title="base vs aligned on held-out prompts")
    return md


def against_base(policy: nn.Module, base: nn.Module, tok: ChatTokenizer, prompts: Sequence[Prompt], *,
                 out_dir: Path, log: Callable[[str], None], k: int = 0, temperature: float = 1.0,
                 max_new_tokens: int, batch_size: int, seed: int, device: torch.device, proxy: Any = None,
                 prefs: dict[str, float] | None = None, title: str = "Evaluation",
                 in_loop: dict[str, dict] | None = None, quiet: bool = True) -> dict[str, Any]:
    """The base and the aligned policy on `prompts` (`k` sampled answers each at `temperature` besides the
    greedy one; `proxy`: a reward model's scorer, onpolicy.rm_scorer), written by `write_evaluation`;
    returns {"preferences": prefs, "generation": the summary}."""
    summary: dict[str, Any] = {}
    records: list[dict] = []
    if prompts:
        results = {name: answer_with(model, tok, prompts, k=k, temperature=temperature, max_new_tokens=max_new_tokens,
                                     batch_size=batch_size, seed=seed, device=device, proxy=proxy)
                   for name, model in progress({"base": base, "aligned": policy}.items(), desc="answers",
                                               unit="model", quiet=quiet)}
        summary, records = side_by_side(prompts, results)
        acc = summary["aligned"]["accuracy"]
        log(f"held-out gold accuracy over {acc['n']} prompts: base {interval(summary['base']['accuracy'], 3)}, "
            f"aligned {interval(acc, 3)}, {difference(summary['aligned'].get('vs_baseline'))}")
    write_evaluation(out_dir, summary, records, prefs, title=title, k=k, temperature=temperature, in_loop=in_loop)
    log(f"evaluation: {out_dir / 'eval.md'}")
    return {"preferences": prefs, "generation": summary}


def train_then_evaluate(cfg: Any, ctx: Any, train: Callable[..., Path], finish: Callable[..., None]) -> int:
    """A trainer's command: `train(cfg, out=, quiet=)` (with `resume=RUN` the checkpoint's config, with the
    flags and overrides given now on top), then, in the main process only (torchrun's other ranks are done),
    `finish(cfg, run_dir, quiet=)`: the end-of-run evaluation."""
    cfg = with_resume(cfg, ctx)
    run_dir = train(cfg, out=ctx.out, quiet=ctx.quiet)
    if process_rank() == 0:
        finish(cfg, run_dir, quiet=ctx.quiet)
    return 0
