"""`llmlab demo`: the stages in order into one run folder, a progress line per stage, `--resume`, and
the report card (report.md and its self-contained twin report.html).

stages.json records each finished stage's report section and seconds, so `--resume RUN` skips them and
continues the interrupted one (a training stage from its last checkpoint: checkpoint.run_or_resume). The
report is rewritten after every stage, so an interrupted demo still leaves what it finished readable.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

from llmlab.demo.alignment import stage_dpo, stage_grpo, stage_onpolicy, stage_proxy
from llmlab.demo.basics import stage_attention, stage_baselines, stage_data, stage_tokenizer
from llmlab.demo.config import DemoConfig
from llmlab.demo.evaluation import stage_evaluation, verdict_lines
from llmlab.demo.training import stage_pretrain, stage_sft
from llmlab.files import write_json_atomic
from llmlab.runs import Run, start_run
from llmlab.viz.report import write_report

Stage = Callable[[DemoConfig, Run], str]

# (name, function, share of a default run's time: measured, seed 0, 2 CPU cores, 16 min in all; the
# progress line's estimate scales the time so far by these)
STAGES: tuple[tuple[str, Stage, float], ...] = (
    ("data", stage_data, 0.0061),
    ("tokenizer", stage_tokenizer, 0.0007),
    ("attention", stage_attention, 0.0042),
    ("baselines", stage_baselines, 0.0006),
    ("pretrain", stage_pretrain, 0.1265),
    ("sft", stage_sft, 0.51),
    ("onpolicy", stage_onpolicy, 0.0161),
    ("dpo", stage_dpo, 0.0469),
    ("grpo", stage_grpo, 0.0511),
    ("ppo-proxy", stage_proxy, 0.1886),
    ("evaluation", stage_evaluation, 0.0491),
)


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


def progress_line(i: int, name: str, elapsed: float, done_share: float) -> str:
    """"[demo 5/11] pretrain · 0:42 elapsed · about 6 min left" (the estimate scales the time so far by
    the share of a default run the finished stages take; none while that share is 0)."""
    line = f"[demo {i}/{len(STAGES)}] {name} · {_clock(elapsed)} elapsed"
    if done_share > 0 and elapsed > 0:
        left = elapsed / done_share * (1 - done_share)
        line += f" · about {max(1, round(left / 60))} min left"
    return line


def demo(cfg: DemoConfig, *, out: Any = None, quiet: bool = False) -> Run:
    from llmlab.model.device import pick_device

    pick_device(cfg.device)  # `--device cuda` without CUDA fails now, not after the data stages
    run = start_run("demo", cfg, out=cfg.resume or out, quiet=quiet, resume=bool(cfg.resume))
    record = run.dir / "stages.json"
    done: dict[str, dict[str, Any]] = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}
    elapsed = sum(d["seconds"] for d in done.values())
    for i, (name, stage, _) in enumerate(STAGES, 1):
        if name in done:
            run.log(f"stage {name}: finished before, kept")
            continue
        # the shares were measured on the default preset: no estimate for other sizes
        share = sum(s for n, _, s in STAGES if n in done) if cfg.preset == "default" else 0.0
        message = progress_line(i, name, elapsed, share)
        if quiet:
            run.log(message)
        else:
            print(message, file=sys.stderr, flush=True)
        start = time.perf_counter()
        section = stage(cfg, run)
        done[name] = {"section": section, "seconds": round(time.perf_counter() - start, 1)}
        elapsed += done[name]["seconds"]
        write_json_atomic(record, done)
        _report(cfg, run, done)
    run.log(f"demo finished in {_clock(elapsed)} (stages: "
            + ", ".join(f"{n} {d['seconds']:.0f} s" for n, d in done.items()) + ")")
    return run


def _report(cfg: DemoConfig, run: Run, done: dict[str, dict[str, Any]]) -> None:
    verdicts = verdict_lines(run.dir)
    seconds = sum(d["seconds"] for d in done.values())
    head = ["# llmlab demo: report card", "",
            f"Run folder `{run.dir}`, config `config.yaml` (preset `{cfg.preset}`, seed {cfg.seed}); "
            f"{len(done)} of {len(STAGES)} stages finished in {_clock(seconds)}.", "",
            f"Task world, the same for every stage: {cfg.tasks.describe()}.", ""]
    if verdicts:
        head += ["## Does each stage do its job? (held-out, this seed)", "", *verdicts, ""]
    body = [done[name]["section"] for name, _, _ in STAGES if name in done]
    times = ["## Time per stage", "", "| stage | seconds |", "|---|---:|",
             *(f"| {n} | {d['seconds']:.0f} |" for n, d in done.items()), ""]
    write_report("\n".join(head + body + times), run.dir, name="report", title="llmlab demo")


def command(cfg: DemoConfig, ctx: Any) -> int:
    """`llmlab demo` (ctx: cli.Context). With --resume, the run's own config.yaml with the flags and
    overrides given now on top."""
    from llmlab.train.checkpoint import lab_config

    run = demo(lab_config(cfg, ctx, kind="demo"), out=ctx.out, quiet=ctx.quiet)
    print(f"demo finished: report at {run.dir / 'report.md'} and {run.dir / 'report.html'}", file=sys.stdout)
    return 0
