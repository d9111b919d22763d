"""`llmlab hacking`: the reward-hacking lab. One command runs the experiment and writes its report.

    prefs/        task-world preference pairs whose chosen response is the longer one (prefs.length_bias)
    rm/           the proxy: a reward model trained on them (`llmlab rm train`); it learns that longer wins
    best-of-n     n answers of the SFT policy per held-out prompt, the proxy's favourite kept; its KL to the
                  policy is log n - (n - 1)/n (Stiennon et al. 2020)
    proxy/        the policy optimised against the proxy alone (GRPO or PPO, kl_coef as given: 0 by default)
    mitigate-kl/  the same with a KL penalty (mitigation_kl_coef)
    mitigate-stop/  the same, stopped when the divergence detector fires (hacking.stop=true)
    mitigate-gold/  the same with the gold score mixed into the reward (gold_mix)
    frontier/     GRPO and PPO on the gold reward and DPO on gold-labelled pairs, at several KL strengths:
                  gold score against KL to the SFT policy, the DPO paper's Figure 2 on the task world
    report.md, summary.json, overoptimisation.png, frontier.png

overoptimisation.png is Gao et al. 2022's figure (https://arxiv.org/abs/2210.10760): gold and proxy
reward against d = sqrt(KL) for RL and for best-of-n, with their functional forms fitted to the gold
gains (RL: d (alpha - beta log d); best-of-n: d (alpha - beta d)). Each run is an ordinary run folder,
so any of them can be inspected, resumed or rerun on its own with the command its config.yaml records.
`--resume LAB` finishes an interrupted lab: stages whose folder says "finished" (and best-of-n's bon.json)
are kept, the others run again from the start.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from llmlab.align.config import (
    DPOConfig,
    GRPOConfig,
    HackingConfig,
    HackingWatchConfig,
    OnlineConfig,
    OnlineEvalConfig,
    PairDataConfig,
    PPOConfig,
    PromptDataConfig,
    RewardConfig,
    RewardModelConfig,
    RolloutConfig,
    _dpo_train,
    _online_train,
    _rm_train,
)
from llmlab.align.overopt import bon_kl, correlation, fit_gao, frontier_png, overoptimisation_png
from llmlab.data.config import GenerateConfig, PrefsConfig
from llmlab.data.corpora import pref_rows
from llmlab.files import write_json_atomic, write_jsonl_atomic, write_text_atomic
from llmlab.runs import Run, read_metrics, start_run


def hacking(cfg: HackingConfig, *, out: Path | None = None, quiet: bool = False) -> Path:
    """Run the lab (or, with cfg.resume, finish one); return its folder."""
    run = start_run("hacking", cfg, out=cfg.resume or out, quiet=quiet, resume=bool(cfg.resume))
    lab = run.dir
    run.log(f"lab: {lab}; SFT policy {cfg.model}; tasks {cfg.tasks.describe()}")
    rm_dir = proxy_reward_model(cfg, run)
    if (lab / "bon.json").is_file():
        bon = json.loads((lab / "bon.json").read_text(encoding="utf-8"))
    else:
        bon = best_of_n(cfg, rm_dir, run)
        write_json_atomic(lab / "bon.json", bon)
    runs = {name: _rl(cfg, name, override, rm_dir, run) for name, override in _experiments(cfg).items()}
    series = {name: _series(folder) for name, folder in runs.items()}
    frontier = _frontier(cfg, run) if cfg.frontier else {}
    summary = _summarise(cfg, bon, series, frontier, run)
    write_json_atomic(lab / "summary.json", summary)
    write_text_atomic(lab / "report.md", report(cfg, summary))
    run.log(f"report: {lab / 'report.md'}")
    return lab


def _stage(folder: Path, run: Run, cfg: Any, train: Callable[..., Path], note: str = "") -> Path:
    """One run of the lab (checkpoint.run_or_resume), logging `note` when it runs."""
    from llmlab.train.checkpoint import run_or_resume

    return run_or_resume(folder, cfg, train, log=run.log, quiet=run.quiet, note=note)


# ---------------------------------------------------------------------- the proxy


def proxy_reward_model(cfg: HackingConfig, run: Run) -> Path:
    """Train the proxy on pairs whose chosen side is the longer one in `length_bias` of them."""
    from llmlab.align.rm_train import train_reward_model

    prefs = run.path("prefs/prefs.jsonl")
    if not prefs.is_file():
        gen = GenerateConfig(kind="prefs", n=cfg.n_prefs, seed=cfg.seed, tasks=cfg.tasks,
                             prefs=PrefsConfig(length_bias=cfg.length_bias))
        rows = list(pref_rows(gen))
        write_jsonl_atomic(prefs, rows)
        longer = sum(r["meta"]["chosen_longer"] for r in rows) / len(rows)
        run.log(f"prefs: {len(rows)} pairs, chosen longer in {longer:.0%}")
    rm_cfg = RewardModelConfig(model=cfg.model, data=PairDataConfig(input=(str(prefs),)),
                               train=replace(_rm_train(), max_steps=cfg.rm_steps, seed=cfg.seed, device=cfg.device,
                                             checkpoint_every=0))
    return _stage(run.dir / "rm", run, rm_cfg, train_reward_model)


def online_base(cfg: HackingConfig, *, reward: RewardConfig, kl_coef: float, algo: str | None = None,
                 hacking: HackingWatchConfig | None = None) -> OnlineConfig:
    cls = PPOConfig if (algo or cfg.algo) == "ppo" else GRPOConfig
    return cls(model=cfg.model, kl_coef=kl_coef, reward=reward, hacking=hacking or HackingWatchConfig(),
               rollout=RolloutConfig(samples=cfg.samples, max_new_tokens=cfg.max_new_tokens),
               data=PromptDataConfig(seed=cfg.seed, tasks=cfg.tasks),
               eval=OnlineEvalConfig(n_prompts=cfg.n_prompts, k=4),
               train=replace(_online_train(), max_steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                             seed=cfg.seed, device=cfg.device, eval_every=max(1, cfg.steps // 4),
                             checkpoint_every=0))


def _experiments(cfg: HackingConfig) -> dict[str, dict[str, Any]]:
    """The unmitigated run and the three mitigations, as changes to the proxy run."""
    return {
        "proxy": {},
        "mitigate-kl": {"kl_coef": cfg.mitigation_kl_coef},
        "mitigate-stop": {"hacking": HackingWatchConfig(stop=True)},
        "mitigate-gold": {"gold": cfg.gold_mix},
    }


def _rl(cfg: HackingConfig, name: str, override: dict[str, Any], rm_dir: Path, run: Run) -> Path:
    from llmlab.align.online import online

    reward = RewardConfig(gold=override.get("gold", 0.0), rm=1.0, reward_model=str(rm_dir))
    online_cfg = online_base(cfg, reward=reward, kl_coef=override.get("kl_coef", cfg.kl_coef),
                              hacking=override.get("hacking"))
    return _stage(run.dir / name, run, online_cfg, online,
                  note=f"{name}: {cfg.algo} against the proxy (reward {reward.rm} x rm + {reward.gold} x gold, kl_coef "
                       f"{online_cfg.kl_coef})")


def _series(folder: Path) -> dict[str, Any]:
    """A run's per-step (kl, proxy, gold, length) and its evaluations, from metrics.jsonl."""
    rows = read_metrics(folder / "metrics.jsonl")
    steps = [r for r in rows if "reward" in r]
    evals = [r for r in rows if "eval/accuracy" in r]
    return {
        "folder": str(folder), "step": [r["step"] for r in steps], "kl": [r["kl"] for r in steps],
        "proxy": [r.get("proxy", math.nan) for r in steps], "gold": [r.get("gold", math.nan) for r in steps],
        "length": [r["response_len"] for r in steps],
        "fired_at": next((r["step"] for r in steps if r.get("hacking")), None),
        "evals": evals,
    }


# ---------------------------------------------------------------------- best-of-n


def best_of_n(cfg: HackingConfig, rm_dir: Path, run: Run) -> dict[str, Any]:
    """For each n: the mean gold and proxy score of the proxy's favourite among n samples of the SFT
    policy, over held-out prompts, estimated from max(bon_n) samples per prompt split into disjoint
    groups of n; and the proxy-length correlation over every sample."""
    import torch

    from llmlab.align.models import load_policy
    from llmlab.align.online import prompt_sets, sample_rollouts
    from llmlab.align.rewards import Rewards
    from llmlab.model.device import pick_device

    device = pick_device(cfg.device)
    base = online_base(cfg, reward=RewardConfig(gold=0.0, rm=1.0, reward_model=str(rm_dir)), kl_coef=0.0)
    held = prompt_sets(base, run.log)[1]
    policy, tok = load_policy(cfg.model, device=device)
    N = max(cfg.bon_n)
    r = sample_rollouts(policy, tok, held, samples=N, max_new_tokens=cfg.max_new_tokens, temperature=1.0, top_p=1.0,
                        batch_size=64, device=device, generator=torch.Generator(device=device).manual_seed(cfg.seed))
    scored = Rewards(base.reward, device=device, batch_size=64)(r.prompts, r.texts, r.closed,
                                                               [len(x) for x in r.response_ids])
    out: dict[str, Any] = {"n": [], "kl": [], "gold": [], "proxy": []}
    for n in sorted(cfg.bon_n):
        golds, proxies = [], []
        for i in range(len(held)):
            rows = list(range(i * N, (i + 1) * N))
            for g in range(N // n):
                group = rows[g * n:(g + 1) * n]
                best = max(group, key=lambda j: scored.proxy[j])
                golds.append(scored.gold[best])
                proxies.append(scored.proxy[best])
        out["n"].append(n)
        out["kl"].append(bon_kl(n))
        out["gold"].append(sum(golds) / len(golds))
        out["proxy"].append(sum(proxies) / len(proxies))
    out["proxy_length_r"] = correlation(scored.proxy, [float(len(t)) for t in r.texts])
    out["gold_length_r"] = correlation(scored.gold, [float(len(t)) for t in r.texts])
    run.log(f"best-of-n: gold {', '.join(f'{g:.3f}' for g in out['gold'])} for n = {out['n']}; proxy-length correlation "
            f"{out['proxy_length_r']:.2f} over {len(r)} samples")
    return out


# ---------------------------------------------------------------------- the frontier


def _frontier(cfg: HackingConfig, run: Run) -> dict[str, list[tuple[float, float]]]:
    """(KL, gold score) points, one series per GRPO / PPO run on the gold reward (its evaluations, from the
    SFT policy's at KL 0) and one for DPO on gold-labelled pairs (the SFT policy, then each beta's final
    policy), all from the same SFT policy and held-out prompts."""
    from llmlab.align.dpo_train import dpo
    from llmlab.align.online import evaluate_policy, online

    gold = RewardConfig(gold=1.0)
    points: dict[str, list[tuple[float, float]]] = {}
    for algo in ("grpo", "ppo"):
        for c in cfg.frontier_kl_coefs:
            folder = _stage(run.dir / "frontier" / f"{algo}-kl{c:g}", run,
                            online_base(cfg, reward=gold, kl_coef=c, algo=algo), online)
            points[f"{algo}, kl_coef {c:g}"] = [(r["eval/kl"], r["eval/score"]) for r in _series(folder)["evals"]]
    if not run.path("frontier/prefs.jsonl").is_file():
        pairs = list(pref_rows(GenerateConfig(kind="prefs", n=cfg.n_prefs, seed=cfg.seed, tasks=cfg.tasks)))
        write_jsonl_atomic(run.path("frontier/prefs.jsonl"), pairs)
    probe = online_base(cfg, reward=gold, kl_coef=0.0)
    dpo_points = points[f"dpo, beta {', '.join(f'{b:g}' for b in cfg.frontier_dpo_betas)}"] = []
    dpo_points.append((0.0, evaluate_policy(probe, cfg.model)["eval/score"]))
    for beta in cfg.frontier_dpo_betas:
        dcfg = DPOConfig(model=cfg.model, beta=beta, data=PairDataConfig(input=(str(run.path("frontier/prefs.jsonl")),)),
                         train=replace(_dpo_train(), max_steps=cfg.steps, seed=cfg.seed, device=cfg.device,
                                       checkpoint_every=0, eval_every=0))
        folder = _stage(run.dir / "frontier" / f"dpo-beta{beta:g}", run, dcfg, dpo)
        row = evaluate_policy(probe, str(folder))
        dpo_points.append((row["eval/kl"], row["eval/score"]))
    return points


# ---------------------------------------------------------------------- the report


def _summarise(cfg: HackingConfig, bon: dict[str, Any], series: dict[str, dict[str, Any]],
               frontier: dict[str, list[tuple[float, float]]], run: Run) -> dict[str, Any]:
    # per-step values are one batch's estimates: curves and fits use trailing means over ~1/12 of a run
    smooth = {name: {k: _smooth(s[k], max(1, len(s[k]) // 12)) for k in ("kl", "proxy", "gold")}
              for name, s in series.items()}
    proxy = smooth["proxy"]
    gold0 = _mean(series["proxy"]["gold"][:3])
    d = [math.sqrt(max(k, 0.0)) for k in proxy["kl"]]
    fits: dict[str, Any] = {}
    try:
        fits["proxy"] = fit_gao(d, [g - gold0 for g in proxy["gold"]], "rl")
    except ValueError as e:
        run.log(f"no RL fit: {e}")
    try:
        fits["best-of-n"] = fit_gao([math.sqrt(k) for k in bon["kl"]], [g - bon["gold"][0] for g in bon["gold"]], "bon")
    except ValueError as e:
        run.log(f"no best-of-n fit: {e}")
    overoptimisation_png(run.path("overoptimisation.png"),
                         rl={name: (s["kl"], s["proxy"], s["gold"]) for name, s in smooth.items()},
                         bon=(bon["kl"], bon["proxy"], bon["gold"]), fits=fits,
                         title=f"{cfg.algo} against a length-biased proxy reward model (RL: training batches, "
                               "smoothed; best-of-n: held-out prompts)")
    if frontier:
        frontier_png(run.path("frontier.png"), {k: ([p[0] for p in v], [p[1] for p in v]) for k, v in frontier.items()},
                     title="gold score vs KL to the SFT policy")
    runs = {}
    for name, s in series.items():
        first, last = s["evals"][0], s["evals"][-1]
        runs[name] = {"steps": s["step"][-1] if s["step"] else 0, "fired_at": s["fired_at"],
                      "proxy_length_r": correlation(s["proxy"], s["length"]),
                      "start": _eval_summary(first), "end": _eval_summary(last),
                      "train": {k: (_mean(s[k][:5]), _mean(s[k][-5:])) for k in ("proxy", "gold", "kl", "length")}}
    return {"tasks": cfg.tasks.describe(), "bon": bon, "runs": runs,
            "fits": {k: {"alpha": f.alpha, "beta": f.beta, "r2": f.r2, "peak_sqrt_kl": f.peak()} for k, f in fits.items()},
            "frontier": frontier}


def _eval_summary(row: dict[str, Any]) -> dict[str, float]:
    return {k.removeprefix("eval/"): v for k, v in row.items() if k.startswith("eval/")}


def _smooth(xs: list[float], window: int) -> list[float]:
    """Trailing means over `window` values (nan values left out)."""
    return [_mean(xs[max(0, i + 1 - window): i + 1]) for i in range(len(xs))]


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan


def report(cfg: HackingConfig, summary: dict[str, Any]) -> str:
    """report.md: what happened, in numbers."""
    def f(x: Any) -> str:
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"

    bon = summary["bon"]
    lines = [
        "# Reward hacking: optimising a length-biased proxy reward model", "",
        f"SFT policy `{cfg.model}`; tasks: {summary['tasks']}. The proxy is a reward model trained on "
        f"{cfg.n_prefs} task-world pairs whose chosen response is the longer one in {cfg.length_bias:.0%} of them; "
        f"the gold score is the task world's scorer, which the policy never sees in the proxy runs. Every run "
        f"optimises with {cfg.algo} for {cfg.steps} steps of {cfg.batch_size} prompts x {cfg.samples} responses.", "",
        "![over-optimisation](overoptimisation.png)", "",
        "## Runs (held-out prompts, start -> end)", "",
        "| run | steps | detector fired at | gold accuracy | gold score | proxy | KL | length (tokens) | "
        "corr(proxy, length) over steps |", "|---|---:|---:|---|---|---|---:|---|---:|",
    ]
    for name, r in summary["runs"].items():
        a, b = r["start"], r["end"]
        lines.append(f"| {name} | {r['steps']} | {r['fired_at'] or '-'} | {f(a.get('accuracy'))} -> "
                     f"{f(b.get('accuracy'))} | {f(a.get('score'))} -> {f(b.get('score'))} | {f(a.get('proxy'))} -> "
                     f"{f(b.get('proxy'))} | {f(b.get('kl'))} | {f(a.get('response_len'))} -> "
                     f"{f(b.get('response_len'))} | {f(r['proxy_length_r'])} |")
    lines += ["", "## Best-of-n against the same proxy", "", "| n | KL = log n - (n-1)/n | gold | proxy |",
              "|---:|---:|---:|---:|",
              *(f"| {n} | {k:.3f} | {g:.3f} | {p:.3f} |" for n, k, g, p in zip(bon["n"], bon["kl"], bon["gold"],
                                                                              bon["proxy"], strict=True)),
              "", f"Over the SFT policy's samples, the proxy's correlation with response length is "
              f"{bon['proxy_length_r']:.2f} (the gold score's: {f(bon['gold_length_r'])}).", ""]
    if summary["fits"]:
        lines += ["## Gao et al. functional forms (gold gain against d = sqrt(KL))", "", "| series | form | alpha | beta | "
                  "R^2 | d at the peak |", "|---|---|---:|---:|---:|---:|"]
        for name, fit in summary["fits"].items():
            form = "d (alpha - beta log d)" if name != "best-of-n" else "d (alpha - beta d)"
            lines.append(f"| {name} | {form} | {fit['alpha']:.3f} | {fit['beta']:.3f} | {fit['r2']:.2f} | "
                         f"{f(fit['peak_sqrt_kl'])} |")
        lines.append("")
    if summary["frontier"]:
        se = math.sqrt(0.25 / cfg.n_prompts)
        lines += ["## Reward-vs-KL frontier on the gold signal", "", "![frontier](frontier.png)", "",
                  f"Each point: {cfg.n_prompts} held-out prompts, greedy; a score's standard error is at most {se:.3f}.",
                  "", "| run | (KL, gold score) points |", "|---|---|"]
        for method, pts in summary["frontier"].items():
            lines.append(f"| {method} | " + ", ".join(f"({k:.2f}, {g:.3f})" for k, g in pts) + " |")
        lines.append("")
    return "\n".join(lines)


def command(cfg: HackingConfig, ctx: Any) -> int:
    """`llmlab hacking` (ctx: cli.Context). With --resume, the lab's own config.yaml with the flags and
    overrides given now on top."""
    from llmlab.train.checkpoint import lab_config

    hacking(lab_config(cfg, ctx, kind="hacking"), out=ctx.out, quiet=ctx.quiet)
    return 0
