"""Several policies on the same held-out task-world prompts, every figure with its n and an interval.

    answer     each policy answers every prompt greedily (accuracy, refusals, length) and k times at a
               temperature (pass@1 = share of correct samples, unbiased pass@k); the same seeded draws
               for every policy, so they differ only by the policy
    score      per prompt: gold full marks, refusal, tokens; optionally the proxy reward model's score of
               the greedy answer (the reward-hacking lesson: proxy up, gold down)
    summarise  per policy: gold accuracy with a Wilson 95% interval, per family; refusal of unsafe
               requests and over-refusal of their benign look-alikes; pass@1 and pass@k with normal 95%
               intervals; and against a baseline policy the paired difference of accuracy over the same
               prompts with its standard error and z (a stage "improves" when z > 2)

What `llmlab demo`'s evaluation stage prints; `table_md` / `families_md` are its markdown tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from llmlab.align.models import load_policy
from llmlab.align.online import sample_rollouts
from llmlab.align.onpolicy import Prompt
from llmlab.align.rl import pass_at_k
from llmlab.data.answers import is_refusal
from llmlab.data.tasks import score
from llmlab.stats import Z95, mean_se, paired_difference, wilson_interval


@dataclass(frozen=True)
class Answered:
    """One policy's answers to one prompt, scored."""

    family: str
    correct: float  # the greedy answer has full gold marks
    refused: float  # the greedy answer is a refusal
    tokens: int  # length of the greedy answer
    pass1: float  # share of the k sampled answers with full marks
    passk: float  # unbiased pass@k of those samples
    answer: str  # the greedy answer
    proxy: float = math.nan  # the proxy reward model's score of the greedy answer


@torch.no_grad()
def answer(policy_dir: str, prompts: Sequence[Prompt], *, k: int, temperature: float = 1.0, max_new_tokens: int = 48,
           batch_size: int = 64, seed: int = 0, device: str | torch.device = "cpu",
           proxy: Any = None) -> list[Answered]:
    """`policy_dir` (an llmlab or HF model folder) on every prompt; `proxy`: a scorer of (prompt, response)
    pairs (onpolicy.rm_scorer) to add the proxy reward."""
    device = torch.device(device)
    policy, tok = load_policy(policy_dir, device=device)
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
        c = sum(score(p.text, sampled.texts[i * k + j]) == 1.0 for j in range(k)) if sampled is not None else 0
        out.append(Answered(family=p.family or "-", correct=float(score(p.text, greedy.texts[i]) == 1.0),
                            refused=float(is_refusal(greedy.texts[i])), tokens=len(greedy.response_ids[i]),
                            pass1=c / k if k else math.nan, passk=pass_at_k(k, c, k) if k else math.nan,
                            answer=greedy.texts[i], proxy=float(proxies[i]) if proxies is not None else math.nan))
    return out


def _rate(xs: Sequence[float]) -> dict[str, float]:
    lo, hi = wilson_interval(sum(xs), len(xs))
    return {"n": len(xs), "mean": sum(xs) / len(xs) if xs else math.nan, "lo": lo, "hi": hi}


def _mean(xs: Sequence[float]) -> dict[str, float]:
    mean, se = mean_se(xs)
    return {"n": len(xs), "mean": mean, "lo": mean - Z95 * se, "hi": mean + Z95 * se}


def summarise(results: dict[str, list[Answered]], *,
              baseline: str | Mapping[str, str] | None = None) -> dict[str, Any]:
    """{policy: {"accuracy", "families", "refusal_unsafe", "over_refusal_benign", "pass@1", "pass@k",
    "tokens", "proxy", "vs_baseline"}}; each figure {"n", "mean", "lo", "hi"} (95%), "vs_baseline"
    {"against", "difference", "se", "z"} of accuracy paired over the same prompts, with "refusal_unsafe",
    "over_refusal_benign" and "proxy" the same for those figures where they were measured. `baseline`: one policy for all, or {policy: its baseline}
    (SFT against the pretrained model, DPO against SFT, ...); a policy without one has no "vs_baseline"."""
    against = baseline if isinstance(baseline, Mapping) else {n: baseline for n in results if baseline is not None}
    out: dict[str, Any] = {}
    for name, rows in results.items():
        fams: dict[str, list[float]] = {}
        for r in rows:
            fams.setdefault(r.family, []).append(r.correct)
        s: dict[str, Any] = {
            "accuracy": _rate([r.correct for r in rows]),
            "families": {f: _rate(v) for f, v in sorted(fams.items())},
            "refusal_unsafe": _rate([r.refused for r in rows if r.family == "unsafe"]),
            "over_refusal_benign": _rate([r.refused for r in rows if r.family == "benign"]),
            "pass@1": _mean([r.pass1 for r in rows if not math.isnan(r.pass1)]),
            "pass@k": _mean([r.passk for r in rows if not math.isnan(r.passk)]),
            "tokens": _mean([float(r.tokens) for r in rows]),
            "proxy": _mean([r.proxy for r in rows if not math.isnan(r.proxy)]),
        }
        base = against.get(name)
        if base is not None and base != name:
            s["vs_baseline"] = {"against": base, **_paired([r.correct for r in results[base]],
                                                           [r.correct for r in rows])}
            for key, family in (("refusal_unsafe", "unsafe"), ("over_refusal_benign", "benign")):
                if s[key]["n"]:
                    s["vs_baseline"][key] = _paired([r.refused for r in results[base] if r.family == family],
                                                    [r.refused for r in rows if r.family == family])
            if not math.isnan(s["proxy"]["mean"]) and s["proxy"]["n"] == len(results[base]):
                s["vs_baseline"]["proxy"] = _paired([r.proxy for r in results[base]], [r.proxy for r in rows])
        out[name] = s
    return out


def _paired(before: Sequence[float], after: Sequence[float]) -> dict[str, float]:
    diff, se = paired_difference(before, after)
    return {"difference": diff, "se": se, "z": diff / se if se > 0 else math.nan}


def interval(x: dict[str, float], digits: int = 2) -> str:
    """"0.52 [0.46, 0.58]"; "-" where there is no data."""
    if not x["n"] or math.isnan(x["mean"]):
        return "-"
    return f"{x['mean']:.{digits}f} [{x['lo']:.{digits}f}, {x['hi']:.{digits}f}]"


def difference(d: dict[str, Any] | None) -> str:
    """"+0.08 ± 0.03 (z 2.7) vs sft"; "-" for a policy without a baseline."""
    if d is None:
        return "-"
    where = f" vs {d['against']}" if "against" in d else ""
    if math.isnan(d["se"]):
        return f"{d['difference']:+.3f}{where}"
    return f"{d['difference']:+.3f} ± {d['se']:.3f} (z {d['z']:.1f}){where}"


def table_md(summary: dict[str, Any], *, k: int) -> str:
    """One row per policy: accuracy, its paired difference from the baseline, pass@1, pass@k, refusal,
    over-refusal, length (and the proxy's score where it was measured)."""
    proxy = any(s["proxy"]["n"] for s in summary.values())
    head = ["policy", "n", "gold accuracy [95% CI]", "vs baseline (paired ± SE)", "pass@1", f"pass@{k}",
            "refuses unsafe", "refuses benign", "tokens"] + (["proxy reward"] if proxy else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in summary.items():
        cells = [name, str(s["accuracy"]["n"]), interval(s["accuracy"]), difference(s.get("vs_baseline")),
                 interval(s["pass@1"]), interval(s["pass@k"]), interval(s["refusal_unsafe"]),
                 interval(s["over_refusal_benign"]), interval(s["tokens"], 1)]
        lines.append("| " + " | ".join(cells + ([interval(s["proxy"])] if proxy else [])) + " |")
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
