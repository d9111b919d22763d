"""`llmlab sample-prefs`: preference pairs made of a policy's own answers, ranked by a scorer.

Fixed pairs (the task world's `prefs` set, or anyone's curated file) put on the rejected side
mistakes the policy may never make, and on the chosen side text it finds unlikely; DPO then
spends its updates on sequences far from its own distribution and, on a small model, lowers
the likelihood of shared prefixes for both sides. Pairs sampled from the policy itself and
ranked by a verifier put its *own* mistakes on the rejected side: the recipe of iterative /
on-policy DPO (Xiong et al. 2024, https://arxiv.org/abs/2312.11456; Pang et al. 2024,
https://arxiv.org/abs/2404.19733; Tulu 3's on-policy preference data).

    prompts  task-world train-split prompts (default; none is an eval prompt) or {"prompt"} rows
    sample   `samples` answers per prompt at `temperature` (llmlab's Engine / HF generate)
    score    gold: the task world's scorer of the prompt; rm: a reward model folder (`llmlab rm train`)
    pair     pair_from_samples: chosen = the best answer, or the gold response when no answer gets
             full marks and one is known; rejected = the worst answer (its most frequent form);
             prompts whose answers all score alike give no pair
    write    RUN/prefs.jsonl ({"prompt", "chosen", "rejected", "meta"}, for `llmlab dpo --input`),
             RUN/summary.json (how often the policy already succeeds, per family), log.txt

Empty answers (the policy closed its turn at once) are counted and left out: the preference
schema requires non-empty responses.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmlab.align.config import SamplePrefsConfig
from llmlab.align.data import _load  # subtle: the checked, located reader the other trainers use
from llmlab.align.generation import chat_responses
from llmlab.align.models import load_policy
from llmlab.align.reward_model import load_reward_model, score_texts
from llmlab.data.config import TaskConfig
from llmlab.data.tasks import FAMILIES, parse_task, sample_tasks, score
from llmlab.errors import UserError
from llmlab.files import write_json_atomic, write_jsonl_atomic
from llmlab.model.device import pick_device
from llmlab.runs import progress_bar, start_run

Scorer = Callable[[list[tuple[str, str]]], list[float]]


def pair_from_samples(samples: Sequence[str], scores: Sequence[float], *, gold: str | None = None,
                      gold_score: float = 1.0, min_gap: float = 0.0) -> dict[str, Any] | None:
    """The pair that `samples` (answers to one prompt, scored `scores`) give, or None.

    chosen: the best-scoring sample (the first of equals), unless a `gold` response is given and no
    sample reaches `gold_score`, then the gold response. rejected: the worst-scoring sample, the most
    frequent text among equals (the policy's most likely mistake). None when the gap is <= min_gap.

    >>> pair_from_samples(["7", "5", "7"], [0.0, 1.0, 0.0])["rejected"]
    '7'
    >>> pair_from_samples(["7", "8"], [0.0, 0.0], gold="5")["chosen_source"]
    'gold'
    """
    if len(samples) != len(scores) or not samples:
        raise ValueError(f"{len(samples)} samples but {len(scores)} scores")
    best = max(range(len(samples)), key=lambda i: (scores[i], -i))
    chosen, chosen_score, source = samples[best], float(scores[best]), "sample"
    if gold is not None and chosen_score < gold_score:
        chosen, chosen_score, source = gold, float(gold_score), "gold"
    worst_score = min(scores)
    counts = Counter(s for s, x in zip(samples, scores, strict=True) if x == worst_score)
    rejected = max(counts, key=lambda s: counts[s])  # Counter keeps first-seen order for equal counts
    if chosen_score - worst_score <= min_gap:
        return None
    return {"chosen": chosen, "rejected": rejected, "chosen_score": chosen_score,
            "rejected_score": float(worst_score), "chosen_source": source}


# ---------------------------------------------------------------------- prompts and scorers


@dataclass(frozen=True)
class Prompt:
    text: str
    family: str | None  # task-world family, None for a foreign prompt
    gold: str | None  # a full-marks response, when known


def task_world_prompts(n: int, *, seed: int, split: str = "train", tasks: TaskConfig = TaskConfig(),  # noqa: B008
                       stream: str = "sample-prefs") -> list[Prompt]:
    """`n` task-world prompts of `split` drawn with `tasks` (families and difficulty), the families in
    equal shares, with a gold response each."""

    rng = random.Random(f"llmlab-{stream}:{seed}")
    drawn = sample_tasks(n, seed=seed, split=split, tasks=tasks, stream=stream)
    return [Prompt(t.prompt, t.family, FAMILIES[t.family].respond(t, rng)) for t in drawn]


def input_prompts(paths: tuple[str, ...], *, gold_scorer: bool, strict: bool,
                  log: Callable[[str], None]) -> list[Prompt]:
    """The prompts of the user's rows ("eval" schema: a non-empty "prompt"); with the gold scorer each must
    be a task-world prompt (a DataError naming file:line otherwise, or a skip with strict=false)."""

    def check(row: dict[str, Any]) -> dict[str, Any] | str:
        task = parse_task(row["prompt"])
        if gold_scorer and task is None:
            return "not a task-world prompt, so the gold scorer cannot score it (use scorer=rm)"
        return {"prompt": row["prompt"], "task": task}

    rows, skipped = _load(paths, "eval", check, strict=strict)
    for message in skipped:
        log(f"skipped row: {message}")
    rng = random.Random("llmlab-sample-prefs:input")
    return [Prompt(r["prompt"], r["task"].family, FAMILIES[r["task"].family].respond(r["task"], rng))
            if r["task"] is not None else Prompt(r["prompt"], None, None) for r in rows]


def gold_scorer(pairs: list[tuple[str, str]]) -> list[float]:

    return [score(prompt, response) for prompt, response in pairs]


def rm_scorer(directory: str, device: Any, batch_size: int) -> Scorer:

    rm, tok = load_reward_model(directory, device=device)
    return lambda pairs: score_texts(rm, tok, pairs, batch_size=batch_size)


# ---------------------------------------------------------------------- the command


def sample_prefs(cfg: SamplePrefsConfig, *, out: Path | None = None, quiet: bool = False) -> Path:
    """Sample, score, pair; return the run folder (prefs.jsonl, summary.json)."""
    import torch

    run = start_run("sample-prefs", cfg, out=out, quiet=quiet)
    device = pick_device(cfg.device)
    prompts = (input_prompts(cfg.input, gold_scorer=cfg.scorer == "gold", strict=cfg.strict, log=run.log)
               if cfg.input else task_world_prompts(cfg.n, seed=cfg.seed, tasks=cfg.tasks))
    scorer = gold_scorer if cfg.scorer == "gold" else rm_scorer(cfg.reward_model, device, cfg.batch_size)
    model, tok = load_policy(cfg.model, device=device)
    torch.manual_seed(cfg.seed)
    repeated = [p.text for p in prompts for _ in range(cfg.samples)]
    bar = progress_bar(total=len(repeated), desc="sampling", unit="answer", quiet=quiet)
    answers = chat_responses(model, tok, repeated, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                             device=device, temperature=cfg.temperature, top_p=cfg.top_p if cfg.top_p < 1.0 else None,
                             progress=bar.update)
    bar.close()
    scores = scorer(list(zip(repeated, answers, strict=True)))
    rows, summary = build_pairs(prompts, answers, scores, cfg)
    write_jsonl_atomic(run.dir / "prefs.jsonl", rows)
    write_json_atomic(run.dir / "summary.json", summary)
    run.log(format_summary(summary))
    run.log(f"pairs: {run.dir / 'prefs.jsonl'} (llmlab dpo --input {run.dir / 'prefs.jsonl'})")
    if not rows:
        raise UserError(f"no pairs: every prompt's {cfg.samples} answers scored alike; raise samples or temperature")
    return run.dir


def build_pairs(prompts: Sequence[Prompt], answers: Sequence[str], scores: Sequence[float],
                cfg: SamplePrefsConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(preference rows, summary) from `cfg.samples` consecutive answers per prompt."""
    k = cfg.samples
    rows: list[dict[str, Any]] = []
    per_family: dict[str, list[float]] = defaultdict(list)
    empty = no_signal = from_gold = 0
    for i, prompt in enumerate(prompts):
        group = [(a, float(s)) for a, s in zip(answers[i * k:(i + 1) * k], scores[i * k:(i + 1) * k], strict=True)]
        per_family[prompt.family or "-"] += [s for _, s in group]
        kept = [(a, s) for a, s in group if a]
        empty += len(group) - len(kept)
        gold = prompt.gold if cfg.scorer == "gold" and cfg.gold_chosen else None
        pair = pair_from_samples([a for a, _ in kept], [s for _, s in kept], gold=gold,
                                 min_gap=cfg.min_gap) if kept else None
        if pair is None:
            no_signal += 1
            continue
        from_gold += pair["chosen_source"] == "gold"
        meta = {"family": prompt.family, "chosen_score": pair["chosen_score"],
                "rejected_score": pair["rejected_score"], "chosen_source": pair["chosen_source"],
                "sample_scores": [s for _, s in group]}
        rows.append({"prompt": prompt.text, "chosen": pair["chosen"], "rejected": pair["rejected"], "meta": meta})
    all_scores = [s for ss in per_family.values() for s in ss]
    summary = {
        "prompts": len(prompts), "samples_per_prompt": k, "pairs": len(rows), "no_pair": no_signal,
        "chosen_from_gold": from_gold, "empty_answers": empty, "scorer": cfg.scorer,
        "mean_score": sum(all_scores) / len(all_scores) if all_scores else None,
        "families": {f: {"answers": len(ss), "mean_score": sum(ss) / len(ss)} for f, ss in sorted(per_family.items())},
    }
    return rows, summary


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{summary['prompts']} prompts x {summary['samples_per_prompt']} answers, mean {summary['scorer']} score "
             f"{summary['mean_score']:.3f}; {summary['pairs']} pairs ({summary['chosen_from_gold']} with the gold "
             f"response as chosen), {summary['no_pair']} prompts without a pair, {summary['empty_answers']} empty "
             "answers left out"]
    lines += [f"  {f}: mean score {v['mean_score']:.3f} over {v['answers']} answers"
              for f, v in summary["families"].items()]
    return "\n".join(lines)


def command(cfg: SamplePrefsConfig, ctx: Any) -> int:
    """`llmlab sample-prefs` (ctx: cli.Context)."""
    sample_prefs(cfg, out=ctx.out, quiet=ctx.quiet)
    return 0
