"""Decode speed: llmlab's Engine before and after the static decode step, HF `generate`, and the memory bound.

    .venv/bin/python benchmarks/decode_speed.py            # ~5.9M model, batch 1 and 8, 1 thread; ~3 minutes
    .venv/bin/python benchmarks/decode_speed.py --quick    # fewer tokens and rounds; under a minute

One seeded llmlab model (vocab 4096, d_model 256, 6 layers, 8 heads: 5.87M parameters, fp32) is
saved with `save_model` and exported with `export_hf`; HF loads the export as `LlamaForCausalLM`.
Correctness first, before any timing: greedy tokens of Engine(decode="static") must equal
Engine(decode="forward") (the engine as it was), the naive generator (batch 1) and HF
`generate(do_sample=False, use_cache=True)`, every token, at batch 1 and 8.

Timing runs in this one process on one torch thread (as issue 16 measured), the three decoders
interleaved round by round so that other jobs on a shared machine slow all of them alike; each
row is the median over rounds of one generate call (prompt 32, N new tokens, greedy; prefill
included, the same for all). The memory bound: decoding one token at batch B reads every fp32
weight once, so tokens/s <= B x copy bandwidth / weight bytes, with the bandwidth measured here
(best of 5 copies of a 128 MiB tensor: 2 x 128 MiB moved per copy). `--profile` adds the top ops
of one static-step decode (torch.profiler), which explains what stands between a step and the bound.

Writes benchmarks/results/decode_speed.md and .json (`decode_speed_quick.*` with --quick). Exit
status 1 when a correctness check fails. Timings on a loaded machine are noisy: the header records
the load average at the start and the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from llmlab.bench.harness import (
    describe_load,
    describe_machine,
    load_average,
    log_with_elapsed,
    machine_info,
    markdown_table,
    ratio,
    time_call,
    write_results,
)

RESULTS = Path(__file__).resolve().parent / "results"
CONFIG = {"vocab_size": 4096, "d_model": 256, "n_layers": 6, "n_heads": 8, "max_seq_len": 512}
TARGETS = {"b1_vs_hf": 2.0, "b1_of_bound": 0.70, "b8_vs_hf": 1.5}
IMPLS = ("before", "after", "hf")  # Engine(decode="forward"), Engine(decode="static"), HF generate
PROMPT = 32
MiB = 2**20


def copy_bandwidth(mib: int = 128, repeats: int = 5) -> float:
    """Bytes per second of a large tensor copy (read + write), best of `repeats` after one warm-up."""
    import torch

    src = torch.ones(mib * MiB // 4)
    dst = torch.empty_like(src)
    best = time_call(lambda: dst.copy_(src), repeats=repeats, warmup=1).min
    return 2 * src.numel() * 4 / best


def generator_fn(impl: str, model: Any, prompts: Any, new: int) -> Callable[[], list[list[int]]]:
    """A call that greedily generates `new` tokens for every row of `prompts` (B, P)."""
    import torch

    if impl == "hf":
        mask = torch.ones_like(prompts)
        return lambda: model.generate(prompts, attention_mask=mask, do_sample=False, use_cache=True,
                                      max_new_tokens=new, min_new_tokens=new, eos_token_id=None,
                                      pad_token_id=0)[:, prompts.shape[1]:].tolist()
    from llmlab.model.generate import Engine, SamplingConfig

    engine = Engine(model, decode={"before": "forward", "after": "static"}[impl])
    rows, sampling = prompts.tolist(), SamplingConfig(max_new_tokens=new, temperature=0.0)
    return lambda: engine.generate(rows, sampling)


def check(models: dict[str, Any], prompts: Any, new: int, log: Any) -> list[dict[str, Any]]:
    """Greedy tokens of every decoder against the static step's, batch 1 and 8; naive at batch 1."""
    from llmlab.model.generate import SamplingConfig, generate_naive

    checks = []
    for B in (1, 8):
        after = generator_fn("after", models["after"], prompts[:B], new)()
        others = {impl: generator_fn(impl, models[impl], prompts[:B], new)() for impl in ("before", "hf")}
        if B == 1:
            others["naive"] = generate_naive(models["after"], prompts[:1].tolist(),
                                             SamplingConfig(max_new_tokens=new, temperature=0.0))
        for impl, tokens in others.items():
            same = sum(a == b for r, s in zip(after, tokens, strict=True) for a, b in zip(r, s, strict=True))
            checks.append({"check": f"greedy tokens: after = {impl}, batch {B}", "value": f"{same}/{B * new}",
                           "ok": same == B * new})
    log("checks: " + ", ".join(f"{c['check']} {c['value']}" for c in checks))
    return checks


def ops_per_step(model: Any, prompts: Any, decode: str) -> float:
    """aten calls (torch.profiler events, nested ones included) per decode step at batch 1: a count that,
    unlike time, does not depend on what else the machine runs. Two generate calls, 33 and 1 new tokens:
    the difference is 32 steps."""
    from torch.profiler import ProfilerActivity, profile

    from llmlab.model.generate import Engine, SamplingConfig

    def events(new: int) -> int:
        run = partial(Engine(model, decode=decode).generate, prompts[:1].tolist(),
                      SamplingConfig(max_new_tokens=new, temperature=0.0))
        run()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
        return sum(e.count for e in prof.key_averages())

    return (events(33) - events(1)) / 32


def profile_static_step(model: Any, prompts: Any, new: int, rows: int = 18) -> str:
    """torch.profiler's top ops (by self CPU time) of one batch-1 generate with the static step."""
    from torch.profiler import ProfilerActivity, profile

    run = generator_fn("after", model, prompts[:1], new)
    run()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=48)


def run_benchmark(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    import torch
    import transformers

    from llmlab.model.config import ModelConfig
    from llmlab.model.hf_io import export_hf
    from llmlab.model.llama import Transformer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = ModelConfig(**CONFIG)
    model = Transformer(cfg).eval()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())  # the tied head counts once
    results: dict[str, Any] = {
        "machine": {**machine_info(packages=("torch", "transformers")), "load_start": load_average()[0]},
        "config": CONFIG, "num_params": cfg.num_params(), "weight_bytes": weight_bytes,
        "settings": {"prompt": PROMPT, "new_tokens": args.new_tokens, "rounds": args.rounds}}
    with tempfile.TemporaryDirectory() as tmp:
        hf = transformers.AutoModelForCausalLM.from_pretrained(export_hf(model, Path(tmp)),
                                                               dtype=torch.float32).eval()
    models = {"before": model, "after": model, "hf": hf}
    prompts = torch.randint(0, cfg.vocab_size, (8, PROMPT), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        results["checks"] = check(models, prompts, min(args.new_tokens, 32), log)
        bandwidth = copy_bandwidth()
        results["copy_bandwidth"] = bandwidth
        results["ops_per_step"] = {impl: ops_per_step(model, prompts, decode)
                                   for impl, decode in (("before", "forward"), ("after", "static"))}
        log(f"copy bandwidth {bandwidth / 1e9:.2f} GB/s; fp32 weights {weight_bytes / MiB:.1f} MiB")
        rows = []
        for B in (1, 8):
            calls = {impl: generator_fn(impl, models[impl], prompts[:B], args.new_tokens) for impl in IMPLS}
            for call in calls.values():
                call()  # warm-up: allocator, kernels, HF's generation config
            times: dict[str, list[float]] = {impl: [] for impl in IMPLS}
            for _ in range(args.rounds):
                for impl, call in calls.items():
                    times[impl] += time_call(call).times
            for impl in IMPLS:
                rows.append({"batch": B, "impl": impl, "times": times[impl],
                             "tokens_per_s": B * args.new_tokens / statistics.median(times[impl])})
            log(f"batch {B}: " + ", ".join(f"{r['impl']} {r['tokens_per_s']:.1f} tokens/s" for r in rows[-3:]))
            rows.append({"batch": B, "impl": "bound", "tokens_per_s": B * bandwidth / weight_bytes})
        results["rows"] = rows
        if args.profile:
            results["profile"] = profile_static_step(model, prompts, args.new_tokens)
    results["machine"]["load_end"] = load_average()[0]
    results["targets"] = evaluate_targets(rows)
    return results


def _tps(rows: list[dict[str, Any]], B: int, impl: str) -> float:
    return next(r["tokens_per_s"] for r in rows if r["batch"] == B and r["impl"] == impl)


def evaluate_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    measured = {"b1_vs_hf": _tps(rows, 1, "after") / _tps(rows, 1, "hf"),
                "b1_of_bound": _tps(rows, 1, "after") / _tps(rows, 1, "bound"),
                "b8_vs_hf": _tps(rows, 8, "after") / _tps(rows, 8, "hf")}
    names = {"b1_vs_hf": f"batch 1 >= {TARGETS['b1_vs_hf']}x HF generate",
             "b1_of_bound": f"batch 1 >= {TARGETS['b1_of_bound']:.0%} of the bandwidth bound",
             "b8_vs_hf": f"batch 8 >= {TARGETS['b8_vs_hf']}x HF generate"}
    return [{"target": names[k], "measured": v, "met": v >= TARGETS[k]} for k, v in measured.items()]


LABELS = {"before": "llmlab before (Engine, decode=forward)", "after": "llmlab after (Engine, decode=static)",
          "hf": "HF generate (use_cache=True)", "bound": "bandwidth bound"}


def format_table(results: dict[str, Any], *, command: str) -> str:
    m, s, rows = results["machine"], results["settings"], results["rows"]
    lines = [
        "# Decode speed: llmlab Engine before / after, HF generate, bandwidth bound", "",
        f"`{command}` on {m['date']}: {describe_machine(m)}; {describe_load(m['load_start'], m['load_end'])}. "
        "The machine is shared with other jobs: timings are noisy.", "",
        f"Model: {results['num_params'] / 1e6:.2f}M parameters ({', '.join(f'{k} {v}' for k, v in CONFIG.items())}), "
        f"fp32 weights {results['weight_bytes'] / MiB:.1f} MiB; copy bandwidth measured in this run "
        f"{results['copy_bandwidth'] / 1e9:.2f} GB/s.", "",
        "## Correctness (before timing)", "",
        markdown_table(["check", "value", ""], [[c["check"], c["value"], "ok" if c["ok"] else "FAILED"]
                                                for c in results["checks"]], align="lr"),
        "", f"## Decode (prompt {s['prompt']}, {s['new_tokens']} new tokens, greedy; median of {s['rounds']} "
        "interleaved rounds)", ""]
    table = []
    for r in rows:
        B = r["batch"]
        median = f"{statistics.median(r['times']):.3f}" if "times" in r else "-"
        table.append([B, LABELS[r["impl"]], median, f"{r['tokens_per_s']:.1f}",
                      ratio(r["tokens_per_s"], _tps(rows, B, "hf")), ratio(r["tokens_per_s"], _tps(rows, B, "before")),
                      f"{r['tokens_per_s'] / _tps(rows, B, 'bound'):.0%}"])
    lines += [markdown_table(["batch", "decoder", "s / run", "tokens/s", "x HF", "x before", "of bound"], table,
                             align="rlrrrrr")]
    ops = results["ops_per_step"]
    lines += ["", f"aten calls per decode step at batch 1 (torch.profiler events, nested included; independent of "
              f"the load): before {ops['before']:.0f}, after {ops['after']:.0f}."]
    lines += ["", "## Targets", "", markdown_table(
        ["target", "measured", ""],
        [[t["target"], f"{t['measured']:.2f}" + ("" if "bound" in t["target"] else "x"),
          "met" if t["met"] else "not met"] for t in results["targets"]], align="lr")]
    if "profile" in results:
        lines += ["", "## Profile of the static step (batch 1, one generate, top ops by self CPU time)", "",
                  "```", results["profile"].rstrip(), "```"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 new tokens, 3 rounds")
    parser.add_argument("--new-tokens", type=int, default=None, help="new tokens per run (default 128, quick 32)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (default 7, quick 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as issue 16 measured)")
    parser.add_argument("--profile", action="store_true", help="add a torch.profiler table of the static step")
    parser.add_argument("--out", type=Path, default=None, help="markdown file; .json goes beside it")
    args = parser.parse_args(argv)
    args.new_tokens = args.new_tokens or (32 if args.quick else 128)
    args.rounds = args.rounds or (3 if args.quick else 7)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = args.out or RESULTS / ("decode_speed_quick.md" if args.quick else "decode_speed.md")
    log = log_with_elapsed()
    results = run_benchmark(args, log)
    table = format_table(results, command=" ".join(["benchmarks/decode_speed.py", *argv]))
    write_results(out, table, results)
    print(table)
    log(f"wrote {out} and {out.with_suffix('.json').name}")
    return 0 if all(c["ok"] for c in results["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
