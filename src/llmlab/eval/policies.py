"""Several policies on the same held-out prompts, every figure with its n and an interval: the core of
`llmlab eval`, of `llmlab demo`'s evaluation stage and of the end-of-run evaluation of `llmlab dpo` /
`llmlab eval-prefs`.

    answer     each policy answers every prompt greedily (accuracy, refusals, format, length) and k times at
               a temperature (pass@1 = share of correct samples, unbiased pass@k); the same seeded draws
               for every policy, so they differ only by the policy
    score      per prompt: gold full marks, refusal, format compliance (format-family prompts: the answer has
               the shape asked for, `Format.complies`), tokens and characters; optionally the proxy reward
               model's score of the greedy answer (the reward-hacking lesson: proxy up, gold down). A prompt
               outside the task world has refusals and lengths but no gold figures.
    summarise  per policy: gold accuracy, overall and per family; refusal of unsafe requests and
               over-refusal of their benign look-alikes; format compliance; pass@1 and pass@k; mean length;
               each with a 95% interval (analytic: Wilson for rates, normal for means; or the seeded
               bootstrap); and against a baseline policy the paired difference of every figure over the same
               prompts with its standard error and z (a stage "improves" when z > 2)

`table_md` / `families_md` are the markdown tables.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from llmlab.align.models import ChatTokenizer, load_policy
from llmlab.align.online import sample_rollouts
from llmlab.align.onpolicy import Prompt
from llmlab.align.rl import pass_at_k
from llmlab.data.answers import is_refusal
from llmlab.data.families.formatting import Format
from llmlab.data.tasks import parse_task
from llmlab.stats import Z95, bootstrap_interval, mean_se, paired_difference, wilson_interval


@dataclass(frozen=True)
class Answered:
    """One policy's answers to one prompt, scored. Gold figures are NaN for a prompt outside the task world."""

    family: str  # the task-world family, "-" for a foreign prompt
    correct: float  # the greedy answer has full gold marks
    refused: float  # the greedy answer is a refusal
    tokens: int  # length of the greedy answer
    pass1: float  # share of the k sampled answers with full marks
    passk: float  # unbiased pass@k of those samples
    answer: str  # the greedy answer
    proxy: float = math.nan  # the proxy reward model's score of the greedy answer
    formatted: float = math.nan  # format-family prompts: the greedy answer has the asked format (Format.complies)

    @property
    def chars(self) -> int:
        return len(self.answer)


def answer(policy_dir: str, prompts: Sequence[Prompt], *, k: int, temperature: float = 1.0, max_new_tokens: int = 48,
           batch_size: int = 64, seed: int = 0, device: str | torch.device = "cpu",
           proxy: Any = None, pass_k: int | None = None) -> list[Answered]:
    """`policy_dir` (an llmlab or HF model folder) on every prompt, greedily and `k` times sampled; `proxy`: a
    scorer of (prompt, response) pairs (onpolicy.rm_scorer) to add the proxy reward; `pass_k`: the k of
    pass@k, at most the `k` samples (default: all of them)."""
    device = torch.device(device)
    policy, tok = load_policy(policy_dir, device=device)
    return answer_with(policy, tok, prompts, k=k, temperature=temperature, max_new_tokens=max_new_tokens,
                       batch_size=batch_size, seed=seed, device=device, proxy=proxy, pass_k=pass_k)


@torch.no_grad()
def answer_with(policy: nn.Module, tok: ChatTokenizer, prompts: Sequence[Prompt], *, k: int, temperature: float = 1.0,
                max_new_tokens: int = 48, batch_size: int = 64, seed: int = 0, device: str | torch.device = "cpu",
                proxy: Any = None, pass_k: int | None = None) -> list[Answered]:
    """`answer` for a policy already in memory (a trainer's, at the end of its run)."""
    device = torch.device(device)
    policy.eval()
    prompts = list(prompts)
    kw = dict(max_new_tokens=max_new_tokens, top_p=1.0, batch_size=batch_size, device=device)
    greedy = sample_rollouts(policy, tok, prompts, samples=1, temperature=0.0,
                             generator=torch.Generator(device=device).manual_seed(seed), **kw)
    sampled = sample_rollouts(policy, tok, prompts, samples=k, temperature=temperature,
                              generator=torch.Generator(device=device).manual_seed(seed), **kw) if k else None
    proxies = proxy([(p.text, t) for p, t in zip(prompts, greedy.texts, strict=True)]) if proxy else None
    out = []
    for i, p in enumerate(prompts):
        samples = sampled.texts[i * k:(i + 1) * k] if sampled is not None else []
        out.append(scored(p.text, greedy.texts[i], samples, tokens=len(greedy.response_ids[i]),
                          proxy=float(proxies[i]) if proxies is not None else math.nan, pass_k=pass_k))
    return out


def scored(prompt: str, greedy: str, samples: Sequence[str], *, tokens: int, proxy: float = math.nan,
           pass_k: int | None = None) -> Answered:
    """One prompt's greedy answer and n samples, scored by the gold scorers where the prompt is a task-world
    one: pass@1 = c / n for c correct samples, pass@k the unbiased 1 - C(n - c, k) / C(n, k) (k = n by default,
    when it is 1 if any sample is correct)."""
    task = parse_task(prompt)
    n = len(samples)
    k = pass_k or n
    if task is None:
        return Answered("-", math.nan, float(is_refusal(greedy)), tokens, math.nan, math.nan, greedy, proxy)
    c = sum(task.score(s) == 1.0 for s in samples)
    formatted = float(task.scorer.complies(task, greedy)) if isinstance(task.scorer, Format) else math.nan
    return Answered(task.family, float(task.score(greedy) == 1.0), float(is_refusal(greedy)), tokens,
                    c / n if n else math.nan, pass_at_k(n, c, k) if n else math.nan, greedy, proxy, formatted)


# ---------------------------------------------------------------------- summaries

# per-prompt values of each figure (NaN: the figure does not apply to that prompt) and its kind: a rate of
# 0/1 outcomes or a mean
FIGURES: dict[str, tuple[str, Callable[[Answered], float]]] = {
    "accuracy": ("rate", lambda r: r.correct),
    "refusal_unsafe": ("rate", lambda r: r.refused if r.family == "unsafe" else math.nan),
    "over_refusal_benign": ("rate", lambda r: r.refused if r.family == "benign" else math.nan),
    "format": ("rate", lambda r: r.formatted),
    "pass@1": ("mean", lambda r: r.pass1),
    "pass@k": ("mean", lambda r: r.passk),
    "tokens": ("mean", lambda r: float(r.tokens)),
    "chars": ("mean", lambda r: float(r.chars)),
    "proxy": ("mean", lambda r: r.proxy),
}


def figure(xs: Sequence[float], kind: str = "mean", *, intervals: str = "analytic", seed: int = 0,
           n_boot: int = 2000) -> dict[str, float]:
    """{"n", "mean", "lo", "hi"}: the mean of `xs` with a 95% interval. intervals="analytic": Wilson's for
    a rate, mean ± 1.96 SE for a mean; "bootstrap": the seeded percentile bootstrap for either."""
    n = len(xs)
    mean = sum(xs) / n if n else math.nan
    if intervals == "bootstrap":
        lo, hi = bootstrap_interval(xs, n_boot=n_boot, seed=seed)
    elif kind == "rate":
        lo, hi = wilson_interval(sum(xs), n)
    else:
        _, se = mean_se(xs)
        lo, hi = mean - Z95 * se, mean + Z95 * se
    return {"n": n, "mean": mean, "lo": lo, "hi": hi}


def _values(rows: Sequence[Answered], name: str) -> list[float]:
    return [x for r in rows if not math.isnan(x := FIGURES[name][1](r))]


def summarise(results: dict[str, list[Answered]], *, baseline: str | Mapping[str, str] | None = None,
              intervals: str = "analytic", seed: int = 0, n_boot: int = 2000) -> dict[str, Any]:
    """{policy: {"accuracy", "families", "refusal_unsafe", "over_refusal_benign", "format", "pass@1", "pass@k",
    "tokens", "chars", "proxy", "vs_baseline"}}; each figure {"n", "mean", "lo", "hi"} (95%, see `figure`),
    over the prompts it applies to. "vs_baseline": {"against", "difference", "se", "z"} of accuracy paired over
    the same prompts, and the same under each other figure's name where both policies measured it (refusals
    over the unsafe prompts, ...). `baseline`: one policy for all, or {policy: its baseline} (SFT against the
    pretrained model, DPO against SFT, ...); a policy without one has no "vs_baseline"."""
    against = baseline if isinstance(baseline, Mapping) else {n: baseline for n in results if baseline is not None}
    kw = {"intervals": intervals, "seed": seed, "n_boot": n_boot}
    out: dict[str, Any] = {}
    for name, rows in results.items():
        fams: dict[str, list[float]] = {}
        for r in rows:
            if not math.isnan(r.correct):
                fams.setdefault(r.family, []).append(r.correct)
        s: dict[str, Any] = {key: figure(_values(rows, key), kind, **kw) for key, (kind, _) in FIGURES.items()}
        s["families"] = {f: figure(v, "rate", **kw) for f, v in sorted(fams.items())}
        base = against.get(name)
        if base is not None and base != name:
            d: dict[str, Any] = {"against": base}
            for key, (_, value) in FIGURES.items():
                pairs = [(x, y) for a, b in zip(results[base], rows, strict=True)
                         if not math.isnan(x := value(a)) and not math.isnan(y := value(b))]
                if not pairs:
                    continue
                diff = paired([x for x, _ in pairs], [y for _, y in pairs])
                if key == "accuracy":  # the headline difference sits at the top (what the verdicts read)
                    d.update(diff)
                else:
                    d[key] = diff
            s["vs_baseline"] = d
        out[name] = s
    return out


def paired(before: Sequence[float], after: Sequence[float]) -> dict[str, float]:
    """{"n", "difference" (mean of after - before), "se", "z"} over the same prompts (or documents)."""
    diff, se = paired_difference(before, after)
    return {"n": len(before), "difference": diff, "se": se, "z": diff / se if se > 0 else math.nan}


def interval(x: dict[str, float], digits: int = 2) -> str:
    """"0.52 [0.46, 0.58]"; "-" where there is no data."""
    if not x["n"] or math.isnan(x["mean"]):
        return "-"
    return f"{x['mean']:.{digits}f} [{x['lo']:.{digits}f}, {x['hi']:.{digits}f}]"


def difference(d: dict[str, Any] | None, digits: int = 3) -> str:
    """"+0.08 ± 0.03 (z 2.7) vs sft"; "-" for a policy without a baseline."""
    if d is None:
        return "-"
    where = f" vs {d['against']}" if "against" in d else ""
    if math.isnan(d["se"]):
        return f"{d['difference']:+.{digits}f}{where}"
    if math.isnan(d["z"]):  # no spread: every prompt moved by the same amount (often 0)
        return f"{d['difference']:+.{digits}f} ± {d['se']:.{digits}f}{where}"
    return f"{d['difference']:+.{digits}f} ± {d['se']:.{digits}f} (z {d['z']:.1f}){where}"


def table_md(summary: dict[str, Any], *, k: int) -> str:
    """One row per policy: accuracy, its paired difference from the baseline, refusal, over-refusal, length,
    and pass@1, pass@k, format compliance and the proxy's score where they were measured."""
    measured = {key: any(s[key]["n"] for s in summary.values()) for key in ("pass@1", "format", "proxy")}
    head = ["policy", "n", "gold accuracy [95% CI]", "vs baseline (paired ± SE)"] + (
        ["pass@1", f"pass@{k}"] if measured["pass@1"] else []) + [
        "refuses unsafe", "refuses benign", "tokens"] + (["follows format"] if measured["format"] else []) + (
        ["proxy reward"] if measured["proxy"] else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in summary.items():
        cells = [name, str(s["accuracy"]["n"]), interval(s["accuracy"]), difference(s.get("vs_baseline"))]
        cells += [interval(s["pass@1"]), interval(s["pass@k"])] if measured["pass@1"] else []
        cells += [interval(s["refusal_unsafe"]), interval(s["over_refusal_benign"]), interval(s["tokens"], 1)]
        cells += ([interval(s["format"])] if measured["format"] else []) + (
            [interval(s["proxy"])] if measured["proxy"] else [])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def families_md(summary: dict[str, Any]) -> str:
    """Gold accuracy per family (rows) and policy (columns), with n and Wilson 95% intervals."""
    names = list(summary)
    families = list(dict.fromkeys(f for s in summary.values() for f in s["families"]))
    lines = ["| family | n | " + " | ".join(names) + " |", "|---|---:|" + "---|" * len(names)]
    for f in families:
        n = next(s["families"][f]["n"] for s in summary.values() if f in s["families"])
        cells = [interval(s["families"][f]) if f in s["families"] else "-" for s in summary.values()]
        lines.append(f"| {f} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
