"""The demo's alignment stages, each an ordinary run folder started from the SFT model:

    onpolicy/   the SFT model's own answers to train prompts, best paired with worst by the gold scorers
    dpo/        DPO (+ RPO's NLL term) on those pairs
    grpo/       GRPO on the gold reward (a verifiable reward: right answers, refusals of unsafe requests)
    prefs/, rm/, ppo-proxy/
                the reward-hacking lesson with `llmlab hacking`'s parts: a proxy reward model trained on
                pairs whose chosen answer is the longer one, and PPO against it alone

Their effect on held-out prompts is measured once, for every model alike, by the evaluation stage
(demo/evaluation.py); these sections show what each stage trained on and its training curves.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from llmlab.align.config import HackingConfig, OnlineEvalConfig, RewardConfig
from llmlab.demo.config import DemoConfig
from llmlab.demo.training import stage
from llmlab.runs import Run, read_metrics
from llmlab.viz.alignment import preference_curves_png, rl_curves_png


def stage_onpolicy(cfg: DemoConfig, run: Run) -> str:
    from llmlab.align.config import SamplePrefsConfig
    from llmlab.align.onpolicy import sample_prefs

    if not cfg.n_onpolicy:
        return "## On-policy preference pairs\n\nSkipped (n_onpolicy=0): DPO trains on the fixed pairs of `data/prefs.jsonl`.\n"
    scfg = SamplePrefsConfig(model=str(run.dir / "sft"), n=cfg.n_onpolicy, seed=cfg.seed, tasks=cfg.tasks,
                             samples=cfg.samples, temperature=cfg.onpolicy_temperature,
                             max_new_tokens=cfg.max_new_tokens, device=cfg.device)
    folder = stage(run, "onpolicy", scfg, sample_prefs)
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    run.metrics(0, stage="onpolicy", pairs=summary["pairs"], mean_score=summary["mean_score"])
    return "\n".join([
        "## On-policy preference pairs", "",
        f"The SFT model answered {summary['prompts']} train-split prompts {cfg.samples} times each (temperature "
        f"{cfg.onpolicy_temperature}); the gold scorers ranked the answers and the best was paired with the worst: "
        f"{summary['pairs']} pairs in `onpolicy/prefs.jsonl`, {summary['chosen_from_gold']} of them with the gold "
        f"response as chosen (no sampled answer was right), {summary['no_pair']} prompts without a pair (all answers scored alike).", "",
        "| family | mean gold score of the sampled answers |", "|---|---:|",
        *(f"| {name} | {v['mean_score']:.3f} |" for name, v in summary["families"].items()), "",
    ])


def dpo_pairs(cfg: DemoConfig, run: Run) -> Path:
    return run.dir / ("onpolicy/prefs.jsonl" if cfg.n_onpolicy else "data/prefs.jsonl")


def stage_dpo(cfg: DemoConfig, run: Run) -> str:
    from llmlab.align.config import DPOConfig, PairDataConfig
    from llmlab.align.dpo_train import dpo

    max_length = cfg.model.max_seq_len
    pairs = dpo_pairs(cfg, run)
    dcfg = DPOConfig(model=str(run.dir / "sft"), beta=cfg.beta, rpo_alpha=cfg.rpo_alpha, max_length=max_length,
                     max_prompt_length=max_length * 3 // 4, reference="precompute",
                     train=replace(cfg.dpo, seed=cfg.seed, device=cfg.device),
                     data=PairDataConfig(input=(str(pairs),), seed=cfg.seed, tasks=cfg.tasks))
    folder = stage(run, "dpo", dcfg, dpo)
    rows = read_metrics(folder / "metrics.jsonl")
    preference_curves_png(rows, run.path("dpo/curves.png"), title=f"DPO (beta {cfg.beta}, rpo_alpha {cfg.rpo_alpha})")
    logged = [r for r in rows if "accuracy" in r and "margin" in r]
    first, last = logged[0], logged[-1]
    return "\n".join([
        "## Preference optimisation (DPO)", "",
        f"The SFT model aligned with DPO (sigmoid loss, beta {cfg.beta}, plus {cfg.rpo_alpha} x the chosen "
        f"responses' NLL; {dcfg.train.max_steps} steps of {dcfg.train.batch_size} pairs; the SFT model as the "
        f"frozen reference, precomputed) on `{pairs.relative_to(run.dir)}`, into `dpo/`. On its training batches the "
        f"implicit reward ranked chosen over rejected {first['accuracy']:.2f} of the time at step {first['step']} and "
        f"{last['accuracy']:.2f} at step {last['step']} (margin {first['margin']:.2f} -> {last['margin']:.2f}); "
        "its effect on held-out prompts is in the evaluation below.", "",
        "![DPO curves](dpo/curves.png)", "",
    ])


def _hacking(cfg: DemoConfig, run: Run, *, steps: int, lr: float, algo: str) -> HackingConfig:
    """The demo's RL settings as `llmlab hacking`'s config, whose parts (the proxy, the online runs) we use."""
    return HackingConfig(model=str(run.dir / "sft"), algo=algo, tasks=cfg.tasks, n_prefs=cfg.n_prefs,  # type: ignore[arg-type]
                         length_bias=cfg.length_bias, rm_steps=cfg.rm_steps, steps=steps,
                         batch_size=cfg.rl_batch_size, samples=cfg.rl_samples, lr=lr,
                         max_new_tokens=cfg.max_new_tokens, kl_coef=cfg.ppo_kl_coef, seed=cfg.seed, device=cfg.device)


def _rl_summary(folder: Path) -> tuple[list[dict], dict, dict]:
    rows = [r for r in read_metrics(folder / "metrics.jsonl") if "reward" in r]
    window = max(1, len(rows) // 5)  # the first and last fifth of the run, smoothed

    def mean(part: list[dict]) -> dict:
        keys = ("reward", "gold", "proxy", "kl", "response_len")
        return {k: sum(r[k] for r in part) / len(part) for k in keys if all(k in r for r in part)}

    return rows, mean(rows[:window]), mean(rows[-window:])


def stage_grpo(cfg: DemoConfig, run: Run) -> str:
    from llmlab.align.hacking import online_base
    from llmlab.align.online import online

    hcfg = replace(_hacking(cfg, run, steps=cfg.grpo_steps, lr=cfg.grpo_lr, algo="grpo"),
                   batch_size=cfg.grpo_batch_size, samples=cfg.grpo_samples)
    base = online_base(hcfg, reward=RewardConfig(gold=1.0), kl_coef=cfg.grpo_kl_coef, algo="grpo")
    ocfg = replace(base, eval=OnlineEvalConfig(n_prompts=0),
                   rollout=replace(base.rollout, temperature=cfg.grpo_temperature))
    folder = stage(run, "grpo", ocfg, online, note=f"grpo: the gold reward, kl_coef {cfg.grpo_kl_coef}")
    rows, first, last = _rl_summary(folder)
    rl_curves_png(rows, run.path("grpo/curves.png"), title="GRPO on the gold reward")
    return "\n".join([
        "## GRPO on the gold reward", "",
        f"The SFT model trained with GRPO (Shao et al. 2024) for {cfg.grpo_steps} steps of {cfg.grpo_batch_size} "
        f"train prompts x {cfg.grpo_samples} answers sampled at temperature {cfg.grpo_temperature}, the reward being "
        f"the gold scorers' verdict (1 for a right answer or a refusal of an unsafe request), advantages relative to "
        f"each prompt's group, kl_coef {cfg.grpo_kl_coef} (k3, in the loss), lr {cfg.grpo_lr}; into `grpo/`. Mean gold reward of its "
        f"rollouts: {first['gold']:.3f} over the first fifth of the steps, {last['gold']:.3f} over the last "
        f"(KL to the SFT model {last['kl']:.2f} nats per answer).", "",
        "![GRPO curves](grpo/curves.png)", "",
    ])


def stage_proxy(cfg: DemoConfig, run: Run) -> str:
    from llmlab.align.hacking import online_base, proxy_reward_model
    from llmlab.align.online import online

    hcfg = _hacking(cfg, run, steps=cfg.ppo_steps, lr=cfg.ppo_lr, algo="ppo")
    rm_dir = proxy_reward_model(hcfg, run)
    reward = RewardConfig(gold=0.0, rm=1.0, reward_model=str(rm_dir))
    ocfg = replace(online_base(hcfg, reward=reward, kl_coef=cfg.ppo_kl_coef, algo="ppo"),
                   eval=OnlineEvalConfig(n_prompts=0))
    folder = stage(run, "ppo-proxy", ocfg, online, note=f"ppo-proxy: the proxy reward alone, kl_coef {cfg.ppo_kl_coef}")
    rows, first, last = _rl_summary(folder)
    rl_curves_png(rows, run.path("ppo-proxy/curves.png"), title="PPO against the length-biased proxy")
    fired = next((r["step"] for r in rows if r.get("hacking")), None)
    rm_eval = [r for r in read_metrics(rm_dir / "metrics.jsonl") if "eval_accuracy" in r]
    warning = (f"**The divergence detector fired at step {fired}**: over its window the proxy reward rose while the "
               "gold score of the same answers fell (`ppo-proxy/log.txt` has the warning)." if fired is not None else
               "The divergence detector did not fire in this run: the proxy did not rise while gold fell over any "
               f"{ocfg.hacking.window}-step window it watched.")
    return "\n".join([
        "## PPO against a length-biased proxy (reward hacking)", "",
        f"A reward model trained on {cfg.n_prefs} task-world pairs whose chosen answer is the longer one in "
        f"{cfg.length_bias:.0%} of them (`prefs/`, `rm/`"
        + (f"; held-out pair accuracy {rm_eval[-1]['eval_accuracy']:.2f}" if rm_eval else "")
        + f") stands in for a learned reward that picked up a bias. PPO (Ziegler et al. 2019) optimises the SFT "
        f"model against it alone for {cfg.ppo_steps} steps, kl_coef {cfg.ppo_kl_coef} (`ppo-proxy/`). Over the "
        f"run the proxy reward of its rollouts went {first.get('proxy', float('nan')):.2f} -> "
        f"{last.get('proxy', float('nan')):.2f} while their gold score went {first['gold']:.3f} -> "
        f"{last['gold']:.3f} and their length {first['response_len']:.1f} -> {last['response_len']:.1f} tokens.", "",
        warning, "",
        "![PPO against the proxy](ppo-proxy/curves.png)", "",
    ])
