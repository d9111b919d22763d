"""Constitutional AI (Bai et al. 2022, https://arxiv.org/abs/2212.08073): `llmlab cai revise` and `llmlab cai label`.

SL-CAI (`revise`): the model answers, then critiques and revises its own answer under principles drawn
from the constitution, in one growing conversation:

    user: prompt                 -> assistant: answer
    user: principle.critique     -> assistant: critique      } `rounds` times, a principle drawn
    user: principle.revision     -> assistant: revision      } per prompt and round

The last revision becomes the SFT row {"messages": [user: prompt, assistant: revision]} (RUN/sft.jsonl,
for `llmlab sft --input`); the whole conversation is kept in RUN/trace.jsonl, rewritten atomically after
every batch of prompts, so an interrupted run started again with the same --out and config goes on
after its last finished batch (each batch samples from its own seeded generator: the result is the
same as an uninterrupted run's).

RL-CAI / RLAIF (`label`): pairs of answers (two sampled per prompt, or given pairs) are labelled by a
feedback model (`llm_judge.LLMJudge`) under a drawn principle's comparison question, in both orders.
The soft label P(a better) gives {"prompt", "chosen", "rejected", "p_chosen", "principle",
"consistent", "meta"} rows (RUN/prefs.jsonl, for `llmlab rm train` / `llmlab dpo --input`); ties and
labels below min_confidence are left out. Where the prompts are the task world's, the labels are checked
against the gold scorers (accuracy, Cohen's kappa) and the report says how consistent the judge was
under the swap.

A model too small to judge can be taught the judge's format (`judge-data`): SFT chats built from pairs
already labelled (the task world's train split by default), each asking a drawn principle's question with
the chosen response shown first or second at random, answered "The better response is (A)" or "(B)".

Left out: the paper's few-shot critique examples and chain-of-thought labelling (a 256-token model has
no room for them), and training a preference model inside this command (`llmlab rm train` does that).
"""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from llmlab.align.config import CaiJudgeDataConfig, CaiLabelConfig, CaiReviseConfig
from llmlab.align.data import _load  # subtle: the checked, located reader the other trainers use
from llmlab.align.feedback.constitution import Principle, draw_principle, load_constitution
from llmlab.align.feedback.judges import Verdict
from llmlab.align.models import Message
from llmlab.align.onpolicy import Prompt, input_prompts, task_world_prompts
from llmlab.config import to_yaml
from llmlab.data.answers import is_refusal
from llmlab.data.schemas import normalise_pair
from llmlab.data.tasks import parse_task
from llmlab.errors import DataError, UserError
from llmlab.files import write_json_atomic, write_jsonl_atomic, write_text_atomic
from llmlab.stats import cohen_kappa, wilson_interval

Chat = list[Message]
Respond = Callable[[list[Chat]], list[str]]  # conversations -> the assistant's next turn of each


class PairJudge(Protocol):
    def compare(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str], *,
                questions: Sequence[str] | None = None) -> list[Verdict]: ...


# ---------------------------------------------------------------------- SL-CAI


def critique_revise(prompts: Sequence[str], principles: list[Principle], respond: Respond, *, rounds: int,
                    seed: int, start: int = 0) -> list[dict[str, Any]]:
    """One trace per prompt: {"prompt", "answer", "steps": [{"principle", "critique", "revision"}] * rounds,
    "revision" (the last), "messages" (the whole conversation)}. Principles are drawn per (prompt index
    `start + i`, round), so a batch's draws do not depend on how the prompts were batched."""
    chats: list[Chat] = [[{"role": "user", "content": p}] for p in prompts]
    answers = respond(chats)
    for chat, answer in zip(chats, answers, strict=True):
        chat.append({"role": "assistant", "content": answer})
    steps: list[list[dict[str, str]]] = [[] for _ in prompts]
    for r in range(rounds):
        picked = [draw_principle(principles, seed, start + i, r) for i in range(len(prompts))]
        for chat, p in zip(chats, picked, strict=True):
            chat.append({"role": "user", "content": p.critique})
        critiques = respond(chats)
        for chat, critique, p in zip(chats, critiques, picked, strict=True):
            chat += [{"role": "assistant", "content": critique}, {"role": "user", "content": p.revision}]
        revisions = respond(chats)
        for i, (chat, revision) in enumerate(zip(chats, revisions, strict=True)):
            chat.append({"role": "assistant", "content": revision})
            steps[i].append({"principle": picked[i].name, "critique": critiques[i], "revision": revisions[i]})
    return [{"prompt": p, "answer": a, "steps": s, "revision": s[-1]["revision"], "messages": c}
            for p, a, s, c in zip(prompts, answers, steps, chats, strict=True)]


def sft_rows(traces: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The SFT chats: each prompt with its final revision (empty revisions teach nothing: left out)."""
    return [{"messages": [{"role": "user", "content": t["prompt"]}, {"role": "assistant", "content": t["revision"]}],
             "meta": {"principles": [s["principle"] for s in t["steps"]]}}
            for t in traces if t["revision"].strip()]


def _model_responder(model: Any, tok: Any, cfg: CaiReviseConfig, device: Any, generator: Any) -> Respond:
    from llmlab.align.generation import chat_responses

    def respond(chats: list[Chat]) -> list[str]:
        return chat_responses(model, tok, chats, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                              device=device, temperature=cfg.temperature,
                              top_p=cfg.top_p if cfg.top_p < 1.0 else None, generator=generator)
    return respond


def _prompts(paths: tuple[str, ...], n: int, seed: int, tasks: Any, strict: bool, stream: str,
             log: Callable[[str], None]) -> list[Prompt]:
    if paths:
        return input_prompts(paths, gold_scorer=False, strict=strict, log=log)
    return task_world_prompts(n, seed=seed, tasks=tasks, stream=stream)


def _resumed_traces(run_dir: Path, same_config: bool, prompts: Sequence[str]) -> list[dict[str, Any]]:
    """The traces an interrupted run of the same config left in run_dir ([] otherwise)."""
    trace = run_dir / "trace.jsonl"
    if not same_config or not trace.is_file():
        return []
    done = [json.loads(line) for line in trace.read_text(encoding="utf-8").splitlines() if line.strip()]
    if [t["prompt"] for t in done] != list(prompts[: len(done)]):
        return []
    return done


def revise(cfg: CaiReviseConfig, *, out: Path | None = None, quiet: bool = False) -> Path:
    """SL-CAI; returns the run folder (sft.jsonl, trace.jsonl, summary.json, report.md)."""
    import torch

    from llmlab.align.models import load_policy
    from llmlab.model.device import pick_device
    from llmlab.runs import progress_bar, start_run

    principles = load_constitution(cfg.constitution)  # a typo fails before any model is loaded
    old_config = Path(out) / "config.yaml" if out is not None else None
    same_config = old_config is not None and old_config.is_file() and old_config.read_text(encoding="utf-8") == to_yaml(cfg)
    run = start_run("cai revise", cfg, out=out, quiet=quiet)  # refuses a finished run's folder
    prompts = [p.text for p in _prompts(cfg.input, cfg.n, cfg.seed, cfg.tasks, cfg.strict, "cai-revise", run.log)]
    traces = _resumed_traces(run.dir, same_config, prompts)
    if traces:
        run.log(f"resuming: {len(traces)} of {len(prompts)} prompts already revised")
    device = pick_device(cfg.device)
    model, tok = load_policy(cfg.model, device=device)
    model.eval()
    bar = progress_bar(total=len(prompts), desc="critique and revise", unit="prompt", quiet=quiet)
    bar.update(len(traces))
    for start in range(len(traces), len(prompts), cfg.batch_size):
        generator = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + start)
        respond = _model_responder(model, tok, cfg, device, generator)
        traces += critique_revise(prompts[start: start + cfg.batch_size], principles, respond, rounds=cfg.rounds,
                                  seed=cfg.seed, start=start)
        write_jsonl_atomic(run.dir / "trace.jsonl", traces)
        bar.update(min(cfg.batch_size, len(prompts) - start))
    bar.close()
    rows = sft_rows(traces)
    if not rows:
        raise UserError(f"every final revision of {cfg.model} was empty: no SFT rows")
    write_jsonl_atomic(run.dir / "sft.jsonl", rows)
    summary = revision_summary(traces)
    write_json_atomic(run.dir / "summary.json", summary)
    write_text_atomic(run.dir / "report.md", revision_report(summary, traces, cfg.examples))
    run.log(f"{len(rows)} SFT rows: {run.dir / 'sft.jsonl'} (llmlab sft --input {run.dir / 'sft.jsonl'})")
    return run.dir


def _gold(prompt: str, response: str) -> float | None:
    task = parse_task(prompt)
    return None if task is None else task.score(response)


def revision_summary(traces: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What revising did: how often the text changed, and, on task-world prompts, the gold score and refusal
    rate of the answers before and after, per family (where refusing is right: unsafe; wrong: the rest)."""
    families: dict[str, dict[str, list[float]]] = {}
    for t in traces:
        task = parse_task(t["prompt"])
        if task is None:
            continue
        f = families.setdefault(task.family, {"before": [], "after": [], "refused_before": [], "refused_after": []})
        f["before"].append(task.score(t["answer"]))
        f["after"].append(task.score(t["revision"]))
        f["refused_before"].append(float(is_refusal(t["answer"])))
        f["refused_after"].append(float(is_refusal(t["revision"])))
    principles = Counter(s["principle"] for t in traces for s in t["steps"])
    return {
        "prompts": len(traces),
        "changed": sum(t["revision"] != t["answer"] for t in traces),
        "empty_revisions": sum(not t["revision"].strip() for t in traces),
        "principles": dict(sorted(principles.items())),
        "families": {name: {k: _rate(v) for k, v in f.items()} for name, f in sorted(families.items())},
    }


def _rate(xs: Sequence[float]) -> dict[str, float]:
    lo, hi = wilson_interval(sum(xs), len(xs))
    return {"n": len(xs), "mean": sum(xs) / len(xs) if xs else float("nan"), "lo": lo, "hi": hi}


def _fmt(x: dict[str, float]) -> str:
    return "-" if not x["n"] else f"{x['mean']:.2f} [{x['lo']:.2f}, {x['hi']:.2f}]"


def _quote(text: str) -> str:
    return "\n".join("    " + line for line in (text or "(empty)").splitlines()) or "    (empty)"


def revision_report(summary: dict[str, Any], traces: Sequence[dict[str, Any]], examples: int) -> str:
    lines = ["# SL-CAI: critique and revision", "",
             f"{summary['prompts']} prompts; the final revision differs from the first answer for {summary['changed']}; "
             f"{summary['empty_revisions']} revisions are empty (left out of sft.jsonl).", "",
             "Principles drawn: " + ", ".join(f"{k} {v}" for k, v in summary["principles"].items()), ""]
    if summary["families"]:
        lines += ["Gold score and refusal rate of the first answer and of the final revision (Wilson 95%):", "",
                  "| family | n | gold before | gold after | refused before | refused after |",
                  "|---|---:|---|---|---|---|"]
        for name, f in summary["families"].items():
            lines.append(f"| {name} | {f['before']['n']} | {_fmt(f['before'])} | {_fmt(f['after'])} | "
                         f"{_fmt(f['refused_before'])} | {_fmt(f['refused_after'])} |")
        lines.append("")
    for t in traces[:examples]:
        lines += ["---", "", "**prompt**", "", _quote(t["prompt"]), "", "**answer**", "", _quote(t["answer"]), ""]
        for s in t["steps"]:
            lines += [f"**critique** ({s['principle']})", "", _quote(s["critique"]), "", "**revision**", "",
                      _quote(s["revision"]), ""]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- RL-CAI


def label_pairs(judge: PairJudge, prompts: Sequence[str], a: Sequence[str], b: Sequence[str],
                principles: list[Principle], *, seed: int, rubric: str = "", start: int = 0) -> list[dict[str, Any]]:
    """One record per pair: {"prompt", "a", "b", "principle", "p_a", "consistent", "rationale"}; the
    principle's comparison question (or `rubric` for all) is the judge's question. Pair i of the batch
    draws its principle from (seed, start + i), its index in the whole run, so the draws do not depend
    on how the run is cut into batches."""
    picked = [draw_principle(principles, seed, "label", start + i) for i in range(len(prompts))]
    questions = [rubric or p.comparison for p in picked]
    verdicts = judge.compare(prompts, a, b, questions=questions)
    return [{"prompt": pr, "a": x, "b": y, "principle": "rubric" if rubric else p.name, "p_a": v.p_a,
             "consistent": v.consistent, "rationale": v.rationale}
            for pr, x, y, p, v in zip(prompts, a, b, picked, verdicts, strict=True)]


def preference_rows(labels: Sequence[dict[str, Any]], *, min_confidence: float = 0.5) -> list[dict[str, Any]]:
    """{"prompt", "chosen", "rejected", "p_chosen" = P(chosen better), "principle", "consistent", "meta"}
    for every label with P(chosen better) > min_confidence (ties never pass)."""
    rows = []
    for r in labels:
        p = max(r["p_a"], 1 - r["p_a"])
        if p <= min_confidence:
            continue
        chosen, rejected = (r["a"], r["b"]) if r["p_a"] > 0.5 else (r["b"], r["a"])
        rows.append({"prompt": r["prompt"], "chosen": chosen, "rejected": rejected, "p_chosen": p,
                     "principle": r["principle"], "consistent": r["consistent"],
                     "meta": {k: r[k] for k in ("p_a", "given", "gold") if k in r}})
    return rows


def gold_labels(labels: list[dict[str, Any]]) -> None:
    """Add "gold" ("a", "b" or "tie"; None for a foreign prompt) to each label: which response the task
    world's scorer prefers."""
    for r in labels:
        sa, sb = _gold(r["prompt"], r["a"]), _gold(r["prompt"], r["b"])
        r["gold"] = None if sa is None or sb is None else "a" if sa > sb else "b" if sb > sa else "tie"


def label_summary(labels: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Label statistics, position consistency, and agreement with the gold and with the given labels."""
    hard = ["a" if r["p_a"] > 0.5 else "b" if r["p_a"] < 0.5 else "tie" for r in labels]
    soft = [max(r["p_a"], 1 - r["p_a"]) for r in labels]
    bins = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    hist = {f"{lo:.1f}-{hi:.1f}": sum(lo <= s < hi or (hi == 1.0 and s == 1.0) for s in soft)
            for lo, hi in itertools.pairwise(bins)}
    out: dict[str, Any] = {
        "pairs": len(labels), "kept": len(rows), "ties": hard.count("tie"),
        "chose_a": hard.count("a"), "mean_p_chosen": sum(soft) / len(soft) if soft else float("nan"),
        "p_chosen_histogram": hist,
        "position_consistency": _rate([float(bool(r["consistent"])) for r in labels if r["consistent"] is not None]),
        "principles": dict(sorted(Counter(r["principle"] for r in labels).items())),
    }
    for key in ("gold", "given"):
        decided = [(h, r[key]) for h, r in zip(hard, labels, strict=True) if r.get(key) in ("a", "b")]
        if decided:
            out[f"vs_{key}"] = {"accuracy": _rate([float(h == g) for h, g in decided]),
                                "kappa": cohen_kappa([h for h, _ in decided], [g for _, g in decided]),
                                "gold_ties": sum(r.get(key) == "tie" for r in labels)}
    return out


def label_report(summary: dict[str, Any], rows: Sequence[dict[str, Any]], examples: int, judge: str) -> str:
    s = summary
    lines = ["# RL-CAI: AI preference labels", "",
             f"Feedback model `{judge}`; {s['pairs']} pairs judged in both orders; {s['kept']} kept as preference "
             f"rows, {s['ties']} exact ties; the first response was preferred in {s['chose_a']}.", "",
             f"Position consistency (the choice survived swapping the order): {_fmt(s['position_consistency'])} "
             f"(n {s['position_consistency']['n']}).", "",
             f"Mean soft label p_chosen = P(chosen better): {s['mean_p_chosen']:.3f}; histogram: "
             + ", ".join(f"{k}: {v}" for k, v in s["p_chosen_histogram"].items()), "",
             "Principles drawn: " + ", ".join(f"{k} {v}" for k, v in s["principles"].items()), ""]
    for key, what in (("gold", "the task world's gold scorers"), ("given", "the input file's chosen/rejected")):
        if f"vs_{key}" in s:
            v = s[f"vs_{key}"]
            lines += [f"Agreement with {what}, on {v['accuracy']['n']} pairs they decide: accuracy "
                      f"{_fmt(v['accuracy'])}, Cohen's kappa {v['kappa']:.3f} (0 is chance); exact ties of the "
                      f"reference left out: {v['gold_ties']}.", ""]
    for r in rows[:examples]:
        lines += ["---", "", f"**prompt** (principle {r['principle']}, p_chosen {r['p_chosen']:.3f}, "
                  f"consistent {r['consistent']})", "", _quote(r["prompt"]), "", "**chosen**", "", _quote(r["chosen"]),
                  "", "**rejected**", "", _quote(r["rejected"]), ""]
    return "\n".join(lines) + "\n"


def _input_pairs(paths: tuple[str, ...], strict: bool, log: Callable[[str], None]) -> list[dict[str, Any]]:
    rows, skipped = _load(paths, "prefs", normalise_pair, strict=strict)
    for message in skipped:
        log(f"skipped row: {message}")
    if any(not isinstance(r["prompt"], str) for r in rows):
        raise DataError(f"{', '.join(paths)}: the judge needs string prompts, not message lists")
    return [{"prompt": r["prompt"], "a": r["chosen"], "b": r["rejected"], "given": "a"} for r in rows]


def label(cfg: CaiLabelConfig, *, out: Path | None = None, quiet: bool = False) -> Path:
    """RL-CAI labelling; returns the run folder (prefs.jsonl, labels.jsonl, summary.json, report.md)."""
    import torch

    from llmlab.align.feedback.llm_judge import LLMJudge
    from llmlab.align.generation import chat_responses
    from llmlab.align.models import load_policy
    from llmlab.model.device import pick_device
    from llmlab.runs import progress_bar, start_run

    principles = load_constitution(cfg.constitution)
    run = start_run("cai label", cfg, out=out, quiet=quiet)
    device = pick_device(cfg.device)
    if cfg.input:
        pairs = _input_pairs(cfg.input, cfg.strict, run.log)
    else:
        prompts = [p.text for p in _prompts(cfg.prompts, cfg.n, cfg.seed, cfg.tasks, cfg.strict, "cai-label", run.log)]
        model, tok = load_policy(cfg.model, device=device)
        repeated = [p for p in prompts for _ in range(2)]
        bar = progress_bar(total=len(repeated), desc="sampling", unit="answer", quiet=quiet)
        answers = chat_responses(model, tok, repeated, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                                 device=device, temperature=cfg.temperature,
                                 top_p=cfg.top_p if cfg.top_p < 1.0 else None, progress=bar.update,
                                 generator=torch.Generator(device=device).manual_seed(cfg.seed))
        bar.close()
        pairs = [{"prompt": p, "a": answers[2 * i], "b": answers[2 * i + 1]} for i, p in enumerate(prompts)
                 if answers[2 * i].strip() and answers[2 * i + 1].strip() and answers[2 * i] != answers[2 * i + 1]]
        run.log(f"{len(pairs)} of {len(prompts)} prompts gave two different non-empty answers")
        del model
    if not pairs:
        raise UserError("no pairs to label: every prompt's two answers were equal or empty; raise temperature")
    judge = LLMJudge.load(cfg.judge or cfg.model, device=device, batch_size=cfg.batch_size,
                          rationale_tokens=cfg.rationale_tokens)
    labels: list[dict[str, Any]] = []
    bar = progress_bar(total=len(pairs), desc="labelling", unit="pair", quiet=quiet)
    for start in range(0, len(pairs), cfg.batch_size):
        chunk = pairs[start: start + cfg.batch_size]
        done = label_pairs(judge, [c["prompt"] for c in chunk], [c["a"] for c in chunk], [c["b"] for c in chunk],
                           principles, seed=cfg.seed, rubric=cfg.rubric, start=start)
        labels += [{**d, **({"given": c["given"]} if "given" in c else {})} for d, c in zip(done, chunk, strict=True)]
        bar.update(len(chunk))
    bar.close()
    gold_labels(labels)
    rows = preference_rows(labels, min_confidence=cfg.min_confidence)
    write_jsonl_atomic(run.dir / "labels.jsonl", labels)
    write_jsonl_atomic(run.dir / "prefs.jsonl", rows)
    summary = label_summary(labels, rows)
    write_json_atomic(run.dir / "summary.json", summary)
    write_text_atomic(run.dir / "report.md", label_report(summary, rows, cfg.examples, cfg.judge or cfg.model))
    run.log(f"position consistency {_fmt(summary['position_consistency'])}"
            + (f"; vs gold: accuracy {_fmt(summary['vs_gold']['accuracy'])}, kappa {summary['vs_gold']['kappa']:.3f}"
               if "vs_gold" in summary else ""))
    run.log(f"{len(rows)} pairs: {run.dir / 'prefs.jsonl'} (llmlab dpo --input {run.dir / 'prefs.jsonl'})")
    if not rows:
        raise UserError(f"no pair passed min_confidence={cfg.min_confidence}: every label was a tie or too unsure")
    return run.dir


# ---------------------------------------------------------------------- teaching a feedback model


def judge_chats(pairs: Sequence[dict[str, Any]], principles: list[Principle], *, seed: int,
                rubric: str = "") -> list[dict[str, Any]]:
    """One `llm_judge.judgment_chat` per pair: a drawn principle's comparison question (or `rubric`), the
    chosen response first for half of the pairs (a seeded shuffle of an alternating order), so the judge
    cannot learn a position."""
    from llmlab.align.feedback.llm_judge import judgment_chat

    order = [i % 2 == 0 for i in range(len(pairs))]
    random.Random(f"llmlab-cai-judge:{seed}").shuffle(order)
    out = []
    for i, (r, first) in enumerate(zip(pairs, order, strict=True)):
        question = rubric or draw_principle(principles, seed, "judge", i).comparison
        chat = judgment_chat(r["prompt"], r["chosen"], r["rejected"], question, chosen_first=first)
        out.append({**chat, "meta": {"chosen_first": first}})
    return out


def judge_data(cfg: CaiJudgeDataConfig, *, out: Path | None = None, quiet: bool = False) -> Path:
    """RUN/judge_sft.jsonl (for `llmlab sft --input`); returns the run folder."""
    from llmlab.align.config import PairDataConfig
    from llmlab.align.data import load_preference_rows
    from llmlab.runs import start_run

    principles = load_constitution(cfg.constitution)
    run = start_run("cai judge-data", cfg, out=out, quiet=quiet)
    rows, skipped = load_preference_rows(PairDataConfig(input=cfg.input, n=cfg.n, seed=cfg.seed, tasks=cfg.tasks,
                                                        strict=cfg.strict))
    for message in skipped:
        run.log(f"skipped row: {message}")
    if any(not isinstance(r["prompt"], str) for r in rows):
        raise DataError(f"{', '.join(cfg.input)}: the judge needs string prompts, not message lists")
    chats = judge_chats(rows, principles, seed=cfg.seed, rubric=cfg.rubric)
    write_jsonl_atomic(run.dir / "judge_sft.jsonl", chats)
    run.log(f"{len(chats)} judgment chats: {run.dir / 'judge_sft.jsonl'} (llmlab sft --input "
            f"{run.dir / 'judge_sft.jsonl'})")
    return run.dir


def judge_data_command(cfg: CaiJudgeDataConfig, ctx: Any) -> int:
    """`llmlab cai judge-data` (ctx: cli.Context)."""
    judge_data(cfg, out=ctx.out, quiet=ctx.quiet)
    return 0


def revise_command(cfg: CaiReviseConfig, ctx: Any) -> int:
    """`llmlab cai revise` (ctx: cli.Context)."""
    revise(cfg, out=ctx.out, quiet=ctx.quiet)
    return 0


def label_command(cfg: CaiLabelConfig, ctx: Any) -> int:
    """`llmlab cai label` (ctx: cli.Context)."""
    label(cfg, out=ctx.out, quiet=ctx.quiet)
    return 0
