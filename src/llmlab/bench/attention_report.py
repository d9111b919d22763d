"""The attention benchmark's report: the issue's targets judged, the markdown table, the plot.

    evaluate_targets   rows {target, measured, met}: flash's memory linear in T and <= 1/50 of
                       naive's at T=8192; forward within 2x of sdpa from T=2048 and faster than
                       naive from 1024; forward+backward within 3x of sdpa; GQA's KV cache
                       Hkv/H of MHA's and its decode not slower
    format_table       run header, correctness, prefill per heads layout, decode, targets, method
    plot_results       time and peak extra memory vs T, log-log, a line per backend and mode

It reads the results dict of `llmlab.bench.attention.run_benchmark` and measures nothing.
Leaves out: comparisons between runs or machines, and any statistics beyond the medians measured.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Any

from llmlab.bench.attention_cases import BACKWARD_FLOPS, GRAD_TOL, MODE_NAMES, MODES, OUT_TOL, SLOW_S, MiB
from llmlab.bench.harness import (
    BUSY_CORES,
    RETRIES,
    describe_load,
    describe_machine,
    markdown_table,
    num,
    ratio,
)

# targets (from the issue)
MEMORY_VS_NAIVE, MEMORY_AT = 50, 8192  # flash's peak extra memory <= naive's / 50 at T = 8192
LINEAR_EXPONENT = 1.2  # "linear in T": peak(2T) / peak(T) <= 2^1.2 at the two largest T
FWD_VS_SDPA, FWD_VS_SDPA_FROM = 2.0, 2048
FWD_VS_NAIVE_FROM = 1024
FWD_BWD_VS_SDPA = 3.0
DECODE_NOISE = 1.05  # "GQA decode not slower than MHA" allows 5% of timing noise


# ---------------------------------------------------------------------------------------------- targets

def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets as rows {target, measured, met}; met is None where the run did not measure it."""
    rows: list[dict[str, Any]] = []

    def add(target: str, measured: str, met: bool | None) -> None:
        rows.append({"target": target, "measured": measured, "met": met})

    prefill = {(r["heads"], r["backend"], r["T"], r["mode"]): r for r in results["prefill"] if "error" not in r}
    lens = sorted({r["T"] for r in results["prefill"]})
    for label in dict.fromkeys(r["heads"] for r in results["prefill"]):
        def get(backend: str, T: int, mode: str, key: str, label: str = label) -> float | None:
            r = prefill.get((label, backend, T, mode))
            return None if r is None else r[key]

        top = lens[-1]
        for mode in MODES:
            f, n = get("flash", top, mode, "peak_extra_bytes"), get("naive", top, mode, "peak_extra_bytes")
            measured = "not measured" if f is None or n is None else \
                f"{f / MiB:.1f} vs {n / MiB:,.0f} MiB = 1/{n / max(f, 1):,.0f} at T={top}"
            ok = None if f is None or n is None or top < MEMORY_AT else f * MEMORY_VS_NAIVE <= n
            if top < MEMORY_AT and ok is None and f is not None:
                measured += f" (T={MEMORY_AT} not run)"
            add(f"{label}: flash {MODE_NAMES[mode]} peak extra memory <= 1/{MEMORY_VS_NAIVE} of naive's at "
                f"T={MEMORY_AT}", measured, ok)
        for mode in MODES:
            pair = [get("flash", T, mode, "peak_extra_bytes") for T in lens[-2:]]
            if len(lens) < 2 or None in pair or min(pair) <= 0:  # type: ignore[type-var]
                add(f"{label}: flash {MODE_NAMES[mode]} peak extra memory linear in T", "not measured", None)
                continue
            e = math.log(pair[1] / pair[0]) / math.log(lens[-1] / lens[-2])  # type: ignore[operator]
            add(f"{label}: flash {MODE_NAMES[mode]} peak extra memory linear in T (grows as T^e from "
                f"T={lens[-2]} to {lens[-1]}, e <= {LINEAR_EXPONENT})",
                f"e = {e:.2f} ({pair[0] / MiB:.1f} -> {pair[1] / MiB:.1f} MiB)",  # type: ignore[operator]
                e <= LINEAR_EXPONENT)

        def worst(other: str, mode: str, from_len: int) -> tuple[float, int] | None:
            ratios = [(f / o, T) for T in lens if from_len <= T
                      if (f := get("flash", T, mode, "seconds")) and (o := get(other, T, mode, "seconds"))]
            return max(ratios) if ratios else None

        for target, other, mode, from_len, limit in (
            (f"flash forward within {FWD_VS_SDPA:.0f}x of sdpa at T >= {FWD_VS_SDPA_FROM}", "sdpa", "fwd",
             FWD_VS_SDPA_FROM, FWD_VS_SDPA),
            (f"flash forward faster than naive at T >= {FWD_VS_NAIVE_FROM}", "naive", "fwd", FWD_VS_NAIVE_FROM, 1.0),
            (f"flash forward+backward within {FWD_BWD_VS_SDPA:.0f}x of sdpa (every T)", "sdpa", "fwd+bwd", 0,
             FWD_BWD_VS_SDPA),
        ):
            w = worst(other, mode, from_len)
            add(f"{label}: {target}", "not measured" if w is None else f"{w[0]:.2f}x {other}'s time (worst: T={w[1]})",
                None if w is None else (w[0] < limit if limit == 1.0 else w[0] <= limit))

    decode = {(r["n_kv_heads"], r["backend"], r["S"]): r for r in results["decode"]}
    kv_counts = sorted({r["n_kv_heads"] for r in results["decode"]}, reverse=True)
    if len(kv_counts) >= 2:
        mha, gqa = kv_counts[0], kv_counts[-1]
        label = next(r["heads"] for r in results["decode"] if r["n_kv_heads"] == gqa)
        pairs = [(decode[(mha, b, S)], decode[(gqa, b, S)]) for (kv, b, S) in decode if kv == mha
                 and (gqa, b, S) in decode]
        fractions = {g["kv_cache_bytes"] / m["kv_cache_bytes"] for m, g in pairs}
        add(f"{label}: KV cache bytes {Fraction(gqa, mha)} of MHA's", "GQA/MHA = " + ", ".join(f"{x:.3f}" for x in
            sorted(fractions)) + " at every S", fractions == {gqa / mha})
        for backend in dict.fromkeys(r["backend"] for r in results["decode"]):
            ratios = [(g["seconds"] / m["seconds"], m["S"]) for m, g in pairs if m["backend"] == backend]
            r, S = max(ratios)
            add(f"{label}: {backend} decode not slower than MHA (every S, {DECODE_NOISE - 1:.0%} noise allowed)",
                f"GQA/MHA time {r:.2f}x (worst: S={S})", r <= DECODE_NOISE)
    return rows


# ---------------------------------------------------------------------------------------------- report

def err(x: float | None) -> str:
    """A max abs error as a cell: 1.2e-05, or - where it was not checked."""
    return "-" if x is None else f"{x:.1e}"


def _busy(row: dict[str, Any]) -> str:
    return "†" if row.get("other_cores", 0.0) > BUSY_CORES else ""


def _ok(met: bool | None) -> str:
    return "not measured" if met is None else "met" if met else "**not met**"


def format_table(results: dict[str, Any], *, command: str) -> str:
    """The results as markdown: run, correctness, prefill (per heads layout), decode, targets."""
    m, cfg, peak = results["meta"], results["config"], results["matmul"]
    lines = [
        "# Attention benchmark: naive vs sdpa vs flash", "",
        f"`{command}` on {m['date']}: {describe_machine(m)}; whole run {m['wall_s']:.0f} s; "
        f"{describe_load(m['load_start'], m['load_end'])} (which counts this run's own {m['threads']} threads). "
        "Other work on these cores makes timings noisier, and much slower with several threads: rerun on a "
        "quiet machine before comparing numbers.", "",
        f"Causal attention, fp32, B={cfg['batch']}, H={cfg['heads']}, D={cfg['head_dim']}; flash tiles "
        f"{cfg['q_block']}x{cfg['k_block']}. fp32 matmul peak, measured in this run (best of 5 torch.mm "
        f"{peak['n']}x{peak['n']}, 2n^3 FLOPs): **{peak['gflops']:.1f} GFLOP/s**; \"% peak\" below is against it.",
        "", "## Correctness (checked at each T before timing it)", "",
        f"Max abs error against naive on the same fp32 inputs; outputs within {OUT_TOL:g}, gradients of q, k, v "
        f"within {GRAD_TOL:g} (checked up to T={cfg['check_grads_max_len']}). Decode: one query against a KV "
        "cache of T keys.", "",
    ]
    checks = [[c["heads"], c["T"], c["backend"], f"{c['out_err']:.1e}", err(c["grad_err"]), err(c["decode_err"]),
               "ok" if c["ok"] else "**MISMATCH**"] for c in results["checks"]]
    lines.append(markdown_table(["heads", "T", "backend", "output", "gradients", "decode output", ""],
                                checks or [["-"] * 6 + ["not checked"]], align="lrlrrrl"))

    rows = {(r["heads"], r["backend"], r["T"], r["mode"]): r for r in results["prefill"]}
    for label in dict.fromkeys(r["heads"] for r in results["prefill"]):
        lines += ["", f"## Prefill, {label}", "",
                  "Time: median of the timed runs; GFLOP/s: useful FLOPs / time (backward = 2.5x forward); "
                  "x sdpa: time / sdpa's time. Peak: extra resident memory of the call in a fresh process; "
                  "x naive: peak / naive's peak.", ""]
        table = []
        for (lab, backend, T, mode), r in rows.items():
            if lab != label or mode != "fwd":
                continue
            cells: list[str] = [str(T), backend]
            mems, vs_naive = [], []
            for mode_ in MODES:
                r = rows[(label, backend, T, mode_)]
                mem = r.get("peak_extra_bytes")
                naive = rows.get((label, "naive", T, mode_), {}).get("peak_extra_bytes")
                mems.append("-" if mem is None else num(mem / MiB))
                vs_naive.append(ratio(mem, naive, fmt=".3f", suffix=""))
                if "error" in r:
                    cells += ["failed", "-", "-"]
                    continue
                sdpa = rows.get((label, "sdpa", T, mode_), {}).get("seconds")
                cells += [num(r["seconds"] * 1e3) + _busy(r),
                          f"{num(r['gflops'])} ({r['gflops'] / peak['gflops']:.0%})", ratio(r["seconds"], sdpa)]
            table.append([*cells, " / ".join(mems), " / ".join(vs_naive)])
        lines.append(markdown_table(["T", "backend", "fwd ms", "fwd GFLOP/s (% peak)", "fwd x sdpa", "fwd+bwd ms",
                                     "fwd+bwd GFLOP/s (% peak)", "fwd+bwd x sdpa", "peak MiB fwd / fwd+bwd",
                                     "x naive fwd / fwd+bwd"], table, align="rlrrrrrrrr"))
        errors = [f"{r['backend']} {r['mode']} T={r['T']}: `{r['error']}`" for r in results["prefill"]
                  if r["heads"] == label and "error" in r]
        lines += ["", *[f"Failed: {e}" for e in errors]] if errors else []

    decode = results["decode"]
    kv_counts = sorted({r["n_kv_heads"] for r in decode}, reverse=True)
    labels = {r["n_kv_heads"]: r["heads"] for r in decode}
    both = len(kv_counts) > 1  # MHA and GQA: the ratio columns
    lines += ["", "## Decode: one query against a KV cache of S keys", "",
              "Median of the calls, in microseconds; KV cache = K and V in fp32, 2 * Hkv * S * D * 4 bytes.", ""]
    by_key = {(r["n_kv_heads"], r["backend"], r["S"]): r for r in decode}
    table = []
    for r0 in (r for r in decode if r["n_kv_heads"] == kv_counts[0]):
        same = [by_key[(kv, r0["backend"], r0["S"])] for kv in kv_counts]
        table.append([r0["S"], r0["backend"], *[num(r["seconds"] * 1e6) + _busy(r) for r in same],
                      *[ratio(same[-1]["seconds"], same[0]["seconds"])] * both,
                      *[num(r["kv_cache_bytes"] / MiB) for r in same],
                      *[ratio(same[-1]["kv_cache_bytes"], same[0]["kv_cache_bytes"], fmt=".3f", suffix="")] * both])
    columns = ["S", "backend", *[f"{labels[kv]} us/token" for kv in kv_counts], *["GQA / MHA time"] * both,
               *[f"KV cache {labels[kv]} MiB" for kv in kv_counts], *["GQA / MHA bytes"] * both]
    lines.append(markdown_table(columns, table, align="rl" + "r" * (len(columns) - 2)))

    disturbed = [r for r in (*results["prefill"], *decode) if _busy(r)]
    if disturbed:
        lines += ["", f"† measured while other processes kept more than {BUSY_CORES} cores busy on average, even "
                  f"after {RETRIES} more tries ({len(disturbed)} rows): slower than on a quiet machine."]
    lines += ["", "## Targets", "", markdown_table(["target", "measured", ""], [
        [t["target"], t["measured"], _ok(t["met"])] for t in results["targets"]])]
    lines += ["", "## How this was measured", "",
              "- Each prefill case runs in its own process, forked from a server that has imported torch and "
              "llmlab and run nothing. It makes its inputs, calls the op once at T=64 (kernels paged in, "
              "threads started), reads VmRSS, resets VmHWM (`/proc/self/clear_refs`), and runs the op once: "
              "peak extra memory = VmHWM - VmRSS before. That includes the output and, for forward+backward, "
              "the gradients of q, k, v; not the inputs.",
              f"- Then it times {cfg['repeats']} more runs (1 when the first took over {SLOW_S:g} s) and keeps "
              "the median. Forward runs under `no_grad`; forward+backward is `attention(...).backward(dout)`.",
              f"- Other processes' CPU use is read from /proc/stat around each case: one measured while they kept "
              f"more than {BUSY_CORES} cores busy is measured again (up to {RETRIES} times), the calmest attempt kept.",
              "- FLOPs: causal forward = 4 * B * H * D * T(T+1)/2 (QK^T and PV over the visible pairs); "
              f"backward = {BACKWARD_FLOPS}x forward (FlashAttention-2's count, recomputed QK^T included). "
              "Naive computes the masked half too, which these counts leave out.",
              "- sdpa is `torch.nn.functional.scaled_dot_product_attention(is_causal=True, enable_gqa=...)`; "
              "for decode (T=1 < S) llmlab passes a boolean mask.", ""]
    failed = [c for c in results["checks"] if not c["ok"]]
    if failed:
        lines += [f"**Correctness checks failed** for {len(failed)} cases: the timings above are of wrong "
                  "outputs.", ""]
    return "\n".join(lines)


def plot_results(results: dict[str, Any], path: str | Path) -> None:
    """Two log-log panels for the first heads layout: time and peak extra memory vs T, a line per backend."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from llmlab.plotting import save_figure

    colours = {"naive": "tab:red", "sdpa": "tab:blue", "flash": "tab:green"}
    styles = {"fwd": "-", "fwd+bwd": "--"}
    label = results["prefill"][0]["heads"]
    ok = [r for r in results["prefill"] if r["heads"] == label and "error" not in r]
    lens = sorted({r["T"] for r in results["prefill"]})
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    positive = {ax_time: False, ax_mem: False}  # a log axis with no positive value cannot be drawn
    for backend in dict.fromkeys(r["backend"] for r in ok):
        for mode in MODES:
            pts = sorted((r["T"], r["seconds"] * 1e3, r["peak_extra_bytes"] / MiB) for r in ok
                         if r["backend"] == backend and r["mode"] == mode)
            kw = {"color": colours.get(backend), "linestyle": styles[mode], "marker": "o" if mode == "fwd" else "s",
                  "markersize": 4, "label": f"{backend}, {MODE_NAMES[mode]}"}
            ax_time.plot([p[0] for p in pts], [p[1] for p in pts], **kw)
            mem = [p for p in pts if p[2] > 0]  # a log axis cannot show 0 (tiny cases can read as 0)
            ax_mem.plot([p[0] for p in mem], [p[2] for p in mem], **kw)
            positive[ax_time] |= any(p[1] > 0 for p in pts)
            positive[ax_mem] |= bool(mem)
    for ax, title, ylabel in ((ax_time, "time per call (median)", "milliseconds"),
                              (ax_mem, "peak extra memory (fresh process, VmHWM - VmRSS)", "MiB")):
        ax.set_xscale("log", base=2)
        if positive[ax]:
            ax.set_yscale("log")
        ax.set_xticks(lens, [str(T) for T in lens])
        ax.set_xlabel("sequence length T (causal prefill)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="major", alpha=0.3)
    ax_time.legend(fontsize="small")
    m, cfg = results["meta"], results["config"]
    fig.suptitle(f"Causal attention, fp32, B={cfg['batch']}, {label}, D={cfg['head_dim']}: {m['threads']} torch "
                 f"threads on {m['cores']} cores ({m['cpu']}), torch {m['versions']['torch']}")
    save_figure(fig, path)
