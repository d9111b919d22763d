"""Continuous batching with a paged KV cache against static batching, at the same KV memory budget.

    .venv/bin/python benchmarks/continuous_batching.py --quick   # 48 requests; about a minute on one thread
    .venv/bin/python benchmarks/continuous_batching.py           # 128 requests; a few minutes

The model is the ~5M config of bench_model.py with random weights (vocab 8192, d_model 256, 4
layers, 8 heads, max_seq_len 512, fp32, seeded). The trace is seeded: prompt and output lengths are
lognormal (long-tailed: most requests short, a few long), capped so prompt + output <= max_seq_len;
every request arrives at time 0 (an offline queue), in order. Output lengths are max_new_tokens
(no stop tokens), greedy.

    static       llmlab's `Engine` on fixed batches of --static-batch requests in arrival order: each
                 batch is left-padded to its longest prompt and decodes until its longest output is
                 done; a request's tokens past its own max_new_tokens are cut off (and not counted)
    continuous   `ContinuousBatcher`: requests join and leave at every step

KV budget: a static batch of B rows reserves up to B x max_seq_len positions (its KV cache is
B x (longest prompt + longest output)); the continuous batcher gets a pool of the same B x max_seq_len
positions in blocks of --block-size, and up to --max-batch running requests.

Correctness first: every request's greedy tokens from both must be equal, before anything is timed.
Then each is timed once on the whole trace: throughput = generated tokens (each request's own) per
second; a request's latency = from time 0 to its last token (static: its batch's end).
The exit status is 1 when the outputs differ. The table records the load: rerun on a quiet machine.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from llmlab.bench.harness import (
    describe_load,
    describe_machine,
    load_average,
    machine_info,
    markdown_table,
    percentile,
    ratio,
    write_results,
)
from llmlab.inference.batching import ContinuousBatcher
from llmlab.model.config import ModelConfig
from llmlab.model.generate import Engine, SamplingConfig
from llmlab.model.llama import Transformer

RESULTS = Path(__file__).resolve().parent / "results"
CONFIG = ModelConfig(vocab_size=8192, d_model=256, n_layers=4, n_heads=8, max_seq_len=512)
TARGET = 2.0  # continuous throughput / static throughput
SEED = 0


@dataclass(frozen=True)
class Request:
    prompt: list[int]
    max_new_tokens: int


def make_trace(n: int, *, max_seq_len: int, vocab: int, seed: int) -> list[Request]:
    """Lognormal lengths: prompts median 32 tokens, outputs median 24, both sigma 1 (the 95th percentile is
    ~5x the median), capped so that prompt + output fits max_seq_len."""
    rng = random.Random(seed)
    trace = []
    for _ in range(n):
        prompt_len = min(max(1, round(rng.lognormvariate(mu=3.47, sigma=1.0))), max_seq_len // 2)
        new = min(max(1, round(rng.lognormvariate(mu=3.18, sigma=1.0))), max_seq_len - prompt_len)
        trace.append(Request([rng.randrange(vocab) for _ in range(prompt_len)], new))
    return trace


def run_static(model: Transformer, trace: list[Request], batch: int) -> tuple[list[list[int]], list[float]]:
    """Fixed batches in arrival order through `Engine`; each request's tokens and finish time."""
    engine, outputs, finish = Engine(model), [], []
    start = time.perf_counter()
    for i in range(0, len(trace), batch):
        rows = trace[i:i + batch]
        longest = max(r.max_new_tokens for r in rows)
        out = engine.generate([r.prompt for r in rows], SamplingConfig(max_new_tokens=longest, temperature=0.0))
        done = time.perf_counter() - start
        outputs += [o[:r.max_new_tokens] for o, r in zip(out, rows, strict=True)]
        finish += [done] * len(rows)
    return outputs, finish


def run_continuous(model: Transformer, trace: list[Request], *, block_size: int, num_blocks: int,
                   max_batch: int) -> tuple[list[list[int]], list[float], dict[str, Any]]:
    """Everything queued at time 0, then `step()` until done; each request's tokens, finish time, stats."""
    batcher = ContinuousBatcher(model, block_size=block_size, num_blocks=num_blocks, max_batch=max_batch)
    greedy = SamplingConfig(temperature=0.0)
    start = time.perf_counter()
    ids = [batcher.add(r.prompt, replace(greedy, max_new_tokens=r.max_new_tokens)) for r in trace]
    tokens: dict[int, list[int]] = {i: [] for i in ids}
    finish: dict[int, float] = {}
    steps, running = 0, 0
    while batcher.has_work():
        for e in batcher.step():
            tokens[e.request_id].append(e.token)
            if e.finished:
                finish[e.request_id] = time.perf_counter() - start
        steps += 1
        running += len(batcher.running)
    stats = {"steps": steps, "preemptions": batcher.preemptions, "mean_running": running / steps,
             "blocks_free_at_end": batcher.pool.num_free, "num_blocks": num_blocks}
    return [tokens[i] for i in ids], [finish[i] for i in ids], stats


def summarise(name: str, trace: list[Request], finish: list[float]) -> dict[str, Any]:
    generated = sum(r.max_new_tokens for r in trace)
    wall = max(finish)
    return {"name": name, "seconds": wall, "tokens": generated, "tokens_per_s": generated / wall,
            "p50_latency_s": percentile(finish, 50), "p95_latency_s": percentile(finish, 95)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="48 requests instead of 128")
    ap.add_argument("--requests", type=int, default=None)
    ap.add_argument("--static-batch", type=int, default=8, help="static batch size; sets the KV budget")
    ap.add_argument("--max-batch", type=int, default=48, help="continuous batcher's running requests at most")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    n = args.requests or (48 if args.quick else 128)
    out = args.out or RESULTS / ("continuous_batching_quick.md" if args.quick else "continuous_batching.md")
    load_start = load_average()[0]

    torch.manual_seed(SEED)
    model = Transformer(CONFIG).eval()
    trace = make_trace(n, max_seq_len=CONFIG.max_seq_len, vocab=CONFIG.vocab_size, seed=SEED)
    budget = args.static_batch * CONFIG.max_seq_len  # KV positions
    num_blocks = budget // args.block_size
    prompts = [len(r.prompt) for r in trace]
    news = [r.max_new_tokens for r in trace]

    # correctness first (and a warm-up): every request's greedy tokens, both ways
    static_out, _ = run_static(model, trace, args.static_batch)
    cont_out, _, _ = run_continuous(model, trace, block_size=args.block_size, num_blocks=num_blocks,
                                    max_batch=args.max_batch)
    same = sum(a == b for a, b in zip(static_out, cont_out, strict=True))
    print(f"greedy outputs identical for {same} / {n} requests")
    if same != n:
        return 1

    _, static_finish = run_static(model, trace, args.static_batch)
    _, cont_finish, stats = run_continuous(model, trace, block_size=args.block_size, num_blocks=num_blocks,
                                           max_batch=args.max_batch)
    static, cont = summarise("static", trace, static_finish), summarise("continuous", trace, cont_finish)
    load_end = load_average()[0]

    rows = [
        [f"static: Engine, batches of {args.static_batch}", f"{static['tokens_per_s']:.0f}",
         f"{static['p50_latency_s']:.2f}", f"{static['p95_latency_s']:.2f}", f"{static['seconds']:.2f}", "1.00x"],
        [f"continuous: max_batch {args.max_batch}, {num_blocks} blocks of {args.block_size}",
         f"{cont['tokens_per_s']:.0f}", f"{cont['p50_latency_s']:.2f}", f"{cont['p95_latency_s']:.2f}",
         f"{cont['seconds']:.2f}", ratio(cont["tokens_per_s"], static["tokens_per_s"])],
    ]
    speedup = cont["tokens_per_s"] / static["tokens_per_s"]
    info = machine_info()
    info["threads"] = torch.get_num_threads()
    table = "\n".join([
        f"# Continuous batching vs static batching ({n} requests, KV budget {budget} positions)",
        "",
        f"Machine: {describe_machine(info)}; {describe_load(load_start, load_end)}.",
        f"Model: random-init {CONFIG.d_model}-wide, {CONFIG.n_layers} layers, {CONFIG.n_heads} heads, vocab "
        f"{CONFIG.vocab_size}, max_seq_len {CONFIG.max_seq_len}, fp32, greedy; all requests queued at t=0.",
        f"Trace (seed {SEED}): prompt tokens p50 {percentile(prompts, 50):.0f} / p95 {percentile(prompts, 95):.0f}"
        f" / max {max(prompts)}; new tokens p50 {percentile(news, 50):.0f} / p95 {percentile(news, 95):.0f} / "
        f"max {max(news)}; {sum(news)} generated tokens in all.",
        f"Greedy outputs identical for {same} / {n} requests. Continuous: {stats['steps']} steps, "
        f"{stats['mean_running']:.1f} requests running on average, {stats['preemptions']} preemptions, "
        f"{stats['blocks_free_at_end']} / {num_blocks} blocks free at the end.",
        "",
        markdown_table(["", "tokens/s", "p50 latency (s)", "p95 latency (s)", "total (s)", "throughput ratio"],
                       rows, align="lrrrrr"),
        "",
        f"Target: continuous >= {TARGET:.1f}x static throughput: {'met' if speedup >= TARGET else 'not met'} "
        f"({speedup:.2f}x).",
        "",
    ])
    print(table)
    write_results(out, table, {"machine": info, "static": static, "continuous": cont, "stats": stats,
                               "requests": n, "budget_positions": budget, "args": vars(args) | {"out": str(out)}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
