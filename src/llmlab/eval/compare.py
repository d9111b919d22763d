"""`llmlab eval --models base=DIR,sft=DIR,dpo=DIR`: any number of models on the same held-out prompts and text.

    prompts      task-world eval prompts drawn with `seed` and `tasks` (or the user's {"prompt"} / single-turn
                 chat JSONL rows; gold figures only for those that are task-world prompts)
    answers      every model answers greedily and k times at `temperature` (policies.answer_with): gold accuracy
                 per family, refusal of unsafe requests, over-refusal of their benign look-alikes, format
                 compliance, length in tokens and characters, pass@1 and pass@k
    text         held-out worked examples of eval-split tasks (or the user's text file): perplexity, nll per
                 token and bits per byte (perplexity.py)
    judge        each model's greedy answers against the first model's by a judge (win rate, ties half)

Every figure has a 95% seeded bootstrap interval and, for every model after the first, the paired
difference from the first over the same prompts (documents for bits per byte) with its SE and z.
Writes eval.md, eval.json (every figure with n and interval), answers.jsonl and one PNG per metric family.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from llmlab.align.onpolicy import Prompt
from llmlab.data.loaders import iter_jsonl
from llmlab.data.tasks import parse_task
from llmlab.errors import DataError, UserError
from llmlab.eval.config import EvalConfig
from llmlab.eval.policies import Answered, difference, families_md, interval, table_md

# what the paired-differences table shows, in order: (key in vs_baseline, column head)
DIFFERENCES = (("accuracy", "gold accuracy"), ("refusal_unsafe", "refuses unsafe"),
               ("over_refusal_benign", "refuses benign"), ("format", "follows format"), ("pass@1", "pass@1"),
               ("pass@k", "pass@k"), ("tokens", "tokens"), ("chars", "characters"), ("bits_per_byte", "bits/byte"))


# ---------------------------------------------------------------------- inputs


def chat_prompt(messages: Any, where: str) -> str:
    """The user message of a single-turn chat row (a trailing assistant answer is ignored)."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise DataError(f"{where}: \"messages\" must be a list of {{\"role\", \"content\"}} objects")
    turns = list(messages)
    while turns and turns[-1].get("role") == "assistant":
        turns.pop()
    if len(turns) != 1 or turns[0].get("role") != "user" or not isinstance(turns[0].get("content"), str) \
            or not turns[0]["content"].strip():
        raise DataError(f"{where}: llmlab eval takes single-turn chats (one non-empty user message, optionally "
                        "followed by an answer)")
    return turns[0]["content"]


def load_prompts(paths: tuple[str, ...]) -> list[Prompt]:
    """The prompts of {"prompt"} or {"messages"} JSONL rows, tagged with their task family where they are
    task-world prompts. A malformed row stops with file:line."""
    out = []
    for path in paths:
        for line, row in iter_jsonl(path):
            where = f"{path}:{line}"
            if isinstance(row, dict) and "messages" in row:
                text = chat_prompt(row["messages"], where)
            elif isinstance(row, dict) and isinstance(row.get("prompt"), str) and row["prompt"].strip():
                text = row["prompt"]
            else:
                raise DataError(f"{where}: expected {{\"prompt\": non-empty text}} or {{\"messages\": [...]}}")
            task = parse_task(text)
            out.append(Prompt(text, task.family if task else None, None))
    if not out:
        raise DataError(f"{', '.join(paths)}: no prompts")
    return out


# ---------------------------------------------------------------------- the evaluation


def evaluate_models(cfg: EvalConfig, *, out: Path | None = None, quiet: bool = False) -> Path:
    """Answer, score, judge, summarise; returns the run folder."""
    from llmlab.align.feedback.judges import GoldJudge, build_judge
    from llmlab.align.models import load_policy
    from llmlab.align.onpolicy import task_world_prompts
    from llmlab.data.corpora import held_out_documents
    from llmlab.data.loaders import read_text_documents
    from llmlab.eval.perplexity import bits_per_byte, document_losses, perplexity_figures
    from llmlab.eval.policies import answer_with, paired, summarise
    from llmlab.eval.winrate import judge_against, win_scores
    from llmlab.model.device import pick_device
    from llmlab.runs import progress_bar, start_run

    models = cfg.model_dirs
    for name, folder in models.items():  # every input is checked before the first model loads
        if not Path(folder).is_dir():
            raise UserError(f"--models {name}={folder}: no such model folder")
    judge = build_judge(cfg.judge)
    prompts = load_prompts(cfg.prompts) if cfg.prompts else task_world_prompts(
        cfg.n_prompts, seed=cfg.seed, split="eval", tasks=cfg.tasks, stream="llmlab-eval")
    texts = read_text_documents(cfg.text) if cfg.text else (
        held_out_documents(cfg.n_documents, seed=cfg.seed, tasks=cfg.tasks) if cfg.n_documents else [])
    run = start_run("eval", cfg, out=out, quiet=quiet)
    device = pick_device(cfg.device)
    run.log(f"{len(prompts)} prompts, {len(texts)} documents of held-out text, {len(models)} models")

    results: dict[str, list[Answered]] = {}
    losses: dict[str, list] = {}
    for name, folder in run.progress(models.items(), desc="models", unit="model", total=len(models)):
        policy, tok = load_policy(folder, device=device)
        results[name] = answer_with(policy, tok, prompts, k=cfg.samples, pass_k=cfg.k, temperature=cfg.temperature,
                                    max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, seed=cfg.seed,
                                    device=device)
        bar = progress_bar(total=None, desc=f"perplexity ({name})", unit="window", quiet=quiet)
        losses[name] = document_losses(policy, tok, texts, batch_size=cfg.batch_size, device=device,
                                       progress=bar.update)
        bar.close()
        del policy
        run.log(f"{name}: answered {len(prompts)} prompts, scored {len(texts)} documents")

    first = next(iter(models))
    summary = summarise(results, baseline=first, intervals="bootstrap", seed=cfg.seed, n_boot=cfg.n_boot)
    # the gold judge knows only task-world prompts: it judges those (any other judge judges every prompt)
    judged = [i for i, p in enumerate(prompts) if p.family is not None] if isinstance(judge, GoldJudge) \
        else list(range(len(prompts)))
    wins: dict[str, list[float]] = {}
    for name, s in summary.items():
        s.update(perplexity_figures(losses[name], seed=cfg.seed, n_boot=cfg.n_boot))
        if name == first:
            continue
        docs = [(bits_per_byte(a), bits_per_byte(b)) for a, b in zip(losses[first], losses[name], strict=True)
                if a.tokens and b.tokens]
        if docs:
            s["vs_baseline"]["bits_per_byte"] = paired([a for a, _ in docs], [b for _, b in docs])
        if judged:
            s["win_rate"], verdicts = judge_against(
                judge, [prompts[i].text for i in judged], [results[name][i].answer for i in judged],
                [results[first][i].answer for i in judged], seed=cfg.seed, n_boot=cfg.n_boot)
            wins[name] = [math.nan] * len(prompts)
            for i, w in zip(judged, win_scores(verdicts), strict=True):
                wins[name][i] = w
    meta = {"models": models, "baseline": first, "judge": cfg.judge, "judged_prompts": len(judged),
            "prompts": {"n": len(prompts), "source": list(cfg.prompts) or f"task world, eval split, seed {cfg.seed}",
                        "task_world": sum(p.family is not None for p in prompts)},
            "text": {"n": len(texts), "source": cfg.text or f"task-world worked examples, eval split, seed {cfg.seed}"},
            "intervals": f"95% percentile bootstrap, {cfg.n_boot} resamples, seed {cfg.seed}",
            "samples": cfg.samples, "temperature": cfg.temperature, "k": cfg.k}
    write_report(run.dir, meta, summary, prompts, results, wins)
    run.log(f"evaluation: {run.dir / 'eval.md'}")
    return run.dir


# ---------------------------------------------------------------------- outputs


def report_md(meta: dict[str, Any], summary: dict[str, Any]) -> str:
    """The whole eval.md."""
    first, k = meta["baseline"], meta["k"]
    lines = ["# llmlab eval", "",
             f"{len(summary)} models on {meta['prompts']['n']} prompts ({meta['prompts']['source']}; "
             f"{meta['prompts']['task_world']} with gold labels) and {meta['text']['n']} documents of held-out "
             f"text ({meta['text']['source']}). Intervals: {meta['intervals']}. Differences are paired over the "
             f"same prompts against the first model, **{first}** (± SE, z). Answers are greedy; pass@1 and "
             f"pass@{k} come from {meta['samples']} samples per prompt at temperature {meta['temperature']} "
             "(unbiased estimator); format compliance is over the format-family prompts.", "",
             "| model | folder |", "|---|---|", *(f"| {n} | `{d}` |" for n, d in meta["models"].items()), "",
             "## Helpfulness, harmlessness, format, pass@k", "", table_md(summary, k=k), "",
             "## Gold accuracy per family", "", families_md(summary), "",
             f"## Length, perplexity and win rate against {first}", "",
             f"Win rate by the `{meta['judge']}` judge over {meta['judged_prompts']} prompts: 1 per win, "
             "0.5 per tie; position consistency where the judge compares in both orders.", "",
             "| model | tokens | characters | perplexity | bits/byte | win rate | wins/ties/losses | "
             "position consistency |", "|---|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        w = s.get("win_rate")
        consistency = w["position_consistency"] if w else math.nan
        counts = f"{w['wins']}/{w['ties']}/{w['losses']}" if w else "-"
        lines.append(f"| {name} | {interval(s['tokens'], 1)} | {interval(s['chars'], 1)} | "
                     f"{interval(s['perplexity'], 3)} | {interval(s['bits_per_byte'], 3)} | "
                     f"{interval(w) if w else '-'} | {counts} | "
                     f"{'-' if math.isnan(consistency) else f'{consistency:.3f}'} |")
    lines += ["", f"## Paired differences against {first}", "",
              "| model | " + " | ".join(head.replace("pass@k", f"pass@{k}") for _, head in DIFFERENCES) + " |",
              "|---|" + "---|" * len(DIFFERENCES)]
    for name, s in summary.items():
        if name == first:
            continue
        d = s["vs_baseline"]
        cells = [difference({"difference": d["difference"], "se": d["se"], "z": d["z"]}) if key == "accuracy"
                 else difference(d.get(key), 4 if key == "bits_per_byte" else 3) for key, _ in DIFFERENCES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(out_dir: Path, meta: dict[str, Any], summary: dict[str, Any], prompts: list[Prompt],
                 results: dict[str, list[Answered]], wins: dict[str, list[float]]) -> None:
    """eval.md, eval.json, answers.jsonl and the charts, each written atomically."""
    from llmlab.files import write_json_atomic, write_jsonl_atomic, write_text_atomic
    from llmlab.runs import json_safe

    write_text_atomic(out_dir / "eval.md", report_md(meta, summary))
    write_json_atomic(out_dir / "eval.json", json_safe({**meta, "summary": summary}))
    write_jsonl_atomic(out_dir / "answers.jsonl", (json_safe({
        "model": name, "prompt": p.text, "family": r.family, "answer": r.answer, "correct": r.correct,
        "refused": r.refused, "formatted": r.formatted, "tokens": r.tokens, "chars": r.chars, "pass@1": r.pass1,
        "pass@k": r.passk, "win": wins[name][i] if name in wins else None})
        for name, rows in results.items() for i, (p, r) in enumerate(zip(prompts, rows, strict=True))))
    charts(out_dir, summary, k=meta["k"], first=meta["baseline"])


def charts(out_dir: Path, summary: dict[str, Any], *, k: int, first: str) -> None:
    """One bar chart with 95% error bars per metric family: accuracy per family, the rates, length, perplexity."""
    from llmlab.viz.figures import family_scores_chart

    def bars(keys: dict[str, str]) -> dict[str, dict[str, Any]]:
        return {name: {"families": {label: s[key] for key, label in keys.items() if key in s and s[key]["n"]}}
                for name, s in summary.items()}

    accuracy = {name: {"families": {**s["families"], "all": s["accuracy"]}} for name, s in summary.items()}
    groups = [
        ("accuracy.png", accuracy, "gold accuracy per family", 1.05),
        ("rates.png", bars({"refusal_unsafe": "refuses unsafe", "over_refusal_benign": "refuses benign",
                            "format": "follows format", "pass@1": "pass@1", "pass@k": f"pass@{k}",
                            "win_rate": f"win rate vs {first}"}), "safety, format, pass@k and win rate", 1.05),
        ("length.png", bars({"tokens": "tokens", "chars": "characters"}), "mean answer length", None),
        ("perplexity.png", bars({"nll_per_token": "nll per token (nats)", "bits_per_byte": "bits per byte"}),
         "held-out text", None),
    ]
    for filename, reports, title, ylim in groups:
        if any(r["families"] for r in reports.values()):
            family_scores_chart(reports, out_dir / filename, key="mean", ylabel="mean (95% CI)", ylim=ylim,
                                title=title)


def command(cfg: EvalConfig, ctx: Any) -> int:
    """`llmlab eval` (ctx: the command's Context): prints eval.md."""
    run_dir = evaluate_models(cfg, out=ctx.out, quiet=ctx.quiet)
    print((run_dir / "eval.md").read_text(encoding="utf-8"), end="")
    return 0
