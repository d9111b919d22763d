"""`llmlab bench attention`: llmlab's flash backend against naive (the oracle) and PyTorch's sdpa.

The config, the run over every case and the command. In one run:

    1. matmul peak   best of 5 fp32 torch.mm of n x n (2 n^3 FLOPs): the 100% of the GFLOP/s columns
    2. correctness   at each T, before timing it: sdpa's and flash's outputs (and, up to
                     `check_grads_max_len`, the gradients; and one-token decode) against naive's
    3. prefill       each (heads, backend, T, forward | forward+backward) in a fresh process
                     forked from a server that has imported torch and the cases but run nothing,
                     so each starts in milliseconds with an unused heap and no threads
    4. decode        T=1 query against S keys, MHA and GQA calls alternating

A case measured while other processes kept the cores busy is measured again (`harness.least_disturbed`).
What each step measures is in llmlab.bench.attention_cases; the targets, table and plot in
llmlab.bench.attention_report; timing, memory and machine helpers in llmlab.bench.harness.
Leaves out: GPUs, bf16/fp16, padding and window masks, batch sweeps, chunked prefill.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from llmlab.bench.attention_cases import (
    BACKWARD_FLOPS,
    MODES,
    PRELOAD,
    Heads,
    MiB,
    attention_flops,
    check_against_naive,
    measure_prefill,
    seq_lens,
    time_decode,
)
from llmlab.bench.attention_report import err, evaluate_targets, format_table, plot_results
from llmlab.bench.config import BenchAttentionConfig
from llmlab.bench.harness import (
    least_disturbed,
    load_average,
    machine_info,
    matmul_peak,
    run_in_fresh_process,
    start_fork_server,
    write_run_outputs,
)
from llmlab.config import to_dict
from llmlab.context import Context


def run_benchmark(cfg: BenchAttentionConfig, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Checks, prefill and decode measurements, targets: everything `format_table` and `plot_results` need."""
    import torch

    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run_benchmark(cfg, log)
    finally:
        torch.set_num_threads(threads_before)


def _run_benchmark(cfg: BenchAttentionConfig, log: Callable[[str], None]) -> dict[str, Any]:
    import torch

    start, load_start = time.perf_counter(), load_average()[0]
    peak = matmul_peak(cfg.matmul_n)
    log(f"fp32 matmul peak: {peak['gflops']:.1f} GFLOP/s (torch.mm {cfg.matmul_n}x{cfg.matmul_n}, "
        f"{torch.get_num_threads()} threads)")
    start_fork_server(PRELOAD)  # its imports overlap with the first correctness checks, which are not timed
    all_heads = [Heads(cfg.heads, cfg.heads)] + ([Heads(cfg.heads, cfg.kv_heads)] if cfg.kv_heads != cfg.heads
                                                 else [])
    shape = {"batch": cfg.batch, "head_dim": cfg.head_dim, "seed": cfg.seed, "q_block": cfg.q_block,
             "k_block": cfg.k_block}
    checks: list[dict[str, Any]] = []
    prefill: list[dict[str, Any]] = []
    decode: list[dict[str, Any]] = []
    for T in seq_lens(cfg.min_len, cfg.max_len):
        if cfg.check_max_len >= T:  # correctness first, then timing at this T
            for heads in all_heads:
                rows = check_against_naive(heads=heads, T=T, S=T, backends=cfg.backends,
                                           grads=cfg.check_grads_max_len >= T, **shape)
                decoded = check_against_naive(heads=heads, T=1, S=T, backends=cfg.backends, grads=False, **shape)
                for r, d in zip(rows, decoded, strict=True):  # same backends, same order
                    r["decode_err"], r["ok"] = d["out_err"], r["ok"] and d["ok"]
                checks += rows
                for r in rows:
                    log(f"check T={T} {heads.label} {r['backend']}: max abs err out {r['out_err']:.1e}, grads "
                        f"{err(r['grad_err'])}, decode {err(r['decode_err'])}: {'ok' if r['ok'] else 'MISMATCH'}")
        for heads in all_heads:
            flops = attention_flops(batch=cfg.batch, heads=cfg.heads, q_len=T, kv_len=T, head_dim=cfg.head_dim)
            for backend in cfg.backends:
                for mode in MODES:
                    row: dict[str, Any] = {"heads": heads.label, "n_heads": heads.heads,
                                           "n_kv_heads": heads.kv_heads, "backend": backend, "T": T, "mode": mode,
                                           "flops": flops * (1 + BACKWARD_FLOPS if mode == "fwd+bwd" else 1)}
                    case = {**shape, "heads": heads.heads, "kv_heads": heads.kv_heads, "T": T, "backend": backend,
                            "mode": mode, "repeats": cfg.repeats, "threads": cfg.threads}
                    name = f"T={T} {heads.label} {backend} {mode}"
                    try:
                        row |= least_disturbed(
                            lambda case=case: run_in_fresh_process(measure_prefill, case, preload=PRELOAD), name, log)
                        row["gflops"] = row["flops"] / row["seconds"] / 1e9
                        log(f"{name}: {row['seconds'] * 1e3:.1f} ms, {row['gflops']:.1f} GFLOP/s, "
                            f"peak +{row['peak_extra_bytes'] / MiB:.1f} MiB")
                    except RuntimeError as e:
                        row["error"] = str(e)
                        log(f"T={T} {heads.label} {backend} {mode}: failed: {e}")
                    prefill.append(row)
        for backend in cfg.backends:
            def measure_decode(backend: str = backend, S: int = T) -> dict[str, Any]:
                rows = time_decode(heads=all_heads, S=S, backend=backend, calls=cfg.decode_calls, **shape)
                return {"rows": rows, "other_cores": rows[0]["other_cores"]}

            decode += least_disturbed(measure_decode, f"S={T} {backend} decode", log)["rows"]
        log(f"T={T} decode: " + ", ".join(f"{r['heads']} {r['backend']} {r['seconds'] * 1e6:.0f} us"
                                          for r in decode if r["S"] == T))
    meta = {**machine_info(), "wall_s": time.perf_counter() - start, "load_start": load_start,
            "load_end": load_average()[0]}
    results = {"meta": meta, "config": to_dict(cfg), "matmul": peak, "checks": checks, "prefill": prefill,
               "decode": decode}
    results["targets"] = evaluate_targets(results)
    return results


def bench_attention(cfg: BenchAttentionConfig, ctx: Context) -> int:
    """`llmlab bench attention`: table.md, results.json and attention.png in the run folder."""
    from llmlab.runs import start_run

    run = start_run("bench-attention", cfg, out=ctx.out, quiet=ctx.quiet)
    results = run_benchmark(cfg, log=run.log)
    write_run_outputs(run, ctx, "attention", results, format_table, plot_results)
    return 0 if all(c["ok"] for c in results["checks"]) else 1
