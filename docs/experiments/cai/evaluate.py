"""Held-out evaluation of the CAI experiment's policies against the gold labels (llmlab.eval.policies, the
demo's evaluation): the same 240 eval-split prompts as the demo's report (seed 0, stream "demo-eval"),
greedy answers for accuracy, refusal and over-refusal (no sampling: pass@k is left out to save CPU), Wilson 95%
intervals, and each policy's paired difference from its baseline.

    python docs/experiments/cai/evaluate.py WORKDIR OUT.json name=DIR[:baseline] ...

Each policy's answers are kept in WORKDIR/answers-NAME.json and reused by a later call.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from llmlab.align.onpolicy import task_world_prompts
from llmlab.config import from_dict, read_yaml
from llmlab.data.config import TaskConfig
from llmlab.eval.policies import Answered, answer, families_md, summarise, table_md


def main(workdir: str, out: str, *specs: str) -> None:
    tasks = from_dict(TaskConfig, read_yaml(Path(__file__).with_name("tasks.yaml"))["tasks"])
    prompts = task_world_prompts(240, seed=0, split="eval", tasks=tasks, stream="demo-eval")
    results, baselines = {}, {}
    for spec in specs:
        name, _, rest = spec.partition("=")
        folder, _, base = rest.partition(":")
        cache = Path(workdir) / f"answers-{name}.json"  # greedy answers are deterministic: reuse them
        if cache.is_file():
            results[name] = [Answered(**r) for r in json.loads(cache.read_text(encoding="utf-8"))]
        else:
            results[name] = answer(str(Path(workdir) / folder), prompts, k=0, max_new_tokens=48, seed=0)
            cache.write_text(json.dumps([asdict(r) for r in results[name]]), encoding="utf-8")
        if base:
            baselines[name] = base
        print(f"{name}: answered", file=sys.stderr)
    summary = summarise(results, baseline=baselines)
    Path(out).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(table_md(summary, k=0))
    print()
    print(families_md(summary))
    for name, s in summary.items():
        for key in ("refusal_unsafe", "over_refusal_benign"):
            d = s.get("vs_baseline", {}).get(key)
            if d:
                print(f"{name} {key} vs {s['vs_baseline']['against']}: {d['difference']:+.3f} ± {d['se']:.3f} "
                      f"(z {d['z']:.1f})")


if __name__ == "__main__":
    main(*sys.argv[1:])
