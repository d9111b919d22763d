"""`llmlab bench inference`: every attention backend on one loaded model, timed and gated on quality.

    llmlab bench inference --model runs/pt --attention naive,sdpa,flash,triton --out runs/bench-inf

The model is loaded once, as saved: that is the original, with its own attention backend. Then,
per backend, the loaded model's config is swapped (`set_attention`: the weights stay) and

    speed     the KV-cache `Engine` (model/generate.py), greedy: time to first token (prefill + first
              sample), per-token latency p50 / p95 (gaps between the engine's steps), tokens/s at each
              batch size (new tokens / the whole call), over `repeats` calls after a warm-up
    memory    peak extra resident memory during that backend's runs (VmHWM reset to VmRSS; CUDA:
              max_memory_allocated) and the KV cache's bytes at the largest batch
    quality   against the original on held-out text: max |logit difference| over every position,
              the perplexity delta, and greedy agreement (the share of generated tokens identical to
              the original's, position by position) -- each against a tolerance (ToleranceConfig)

Writes table.md, results.json and inference.png (tokens/s per backend and batch) into the run
folder. A backend outside a tolerance fails the run: exit 1 with one line naming it and the number.
triton runs only on CUDA (its CPU interpreter is for tests, not timings); elsewhere it is skipped
with a line that says so. The held-out text is `text=FILE`, else task-world documents from a seed
the pretraining corpus does not use by default, else (a model without a tokenizer) seeded random ids.

Left out: GPU kernels beyond the attention backend (the rest of the model is the same for all),
quantisation, and speculative decoding.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from llmlab.bench.config import BenchInferenceConfig
from llmlab.bench.harness import (
    describe_load,
    describe_machine,
    load_average,
    machine_info,
    mark_rss,
    markdown_table,
    percentile,
    ratio,
    write_run_outputs,
)
from llmlab.context import Context
from llmlab.errors import UserError
from llmlab.model.generate import Engine, SamplingConfig
from llmlab.model.llama import Transformer
from llmlab.plotting import new_figure, save_figure

MiB = 2**20
HELD_OUT_SEED = 1_000_003  # task-world documents from a stream the default pretraining corpus (seed 0) never draws


def set_attention(model: Transformer, backend: str) -> None:
    """Swap the attention backend of a loaded model in place; weights and everything else stay."""
    cfg = replace(model.cfg, attention=backend)
    model.cfg = cfg
    for block in model.blocks:
        block.attn.cfg = cfg


def held_out_ids(cfg: BenchInferenceConfig, tokenizer: Any, vocab_size: int) -> tuple[torch.Tensor, str]:
    """(ids (n,), where they come from): `cfg.eval_tokens` tokens of held-out text."""
    if cfg.text:
        path = Path(cfg.text)
        if not path.is_file():
            raise UserError(f"text={cfg.text}: no such file")
        if tokenizer is None:
            raise UserError(f"text={cfg.text} needs the model's tokenizer, and {cfg.model} has no tokenizer.json")
        ids, source = tokenizer.encode_ordinary(path.read_text(encoding="utf-8")), f"{path.name}"
    elif tokenizer is not None:
        from llmlab.data.config import GenerateConfig
        from llmlab.data.corpora import pretrain_documents

        docs = pretrain_documents(GenerateConfig(kind="pretrain", n=200, seed=HELD_OUT_SEED))
        ids, source = tokenizer.encode_ordinary("\n\n".join(docs)), f"task-world documents, seed {HELD_OUT_SEED}"
    else:
        g = torch.Generator().manual_seed(cfg.seed)
        return torch.randint(0, vocab_size, (cfg.eval_tokens,), generator=g), "random ids (no tokenizer)"
    if len(ids) < 2:
        raise UserError(f"the held-out text ({source}) has fewer than 2 tokens")
    return torch.tensor(ids[:cfg.eval_tokens]), source


def windows(ids: torch.Tensor, seq_len: int) -> torch.Tensor:
    """(N, seq_len + 1) rows of consecutive ids (inputs and next-token targets); N >= 1."""
    T = min(seq_len + 1, len(ids))
    n = max(1, len(ids) // T)
    return ids[:n * T].view(n, T)  # (N, T)


def prompts_from(ids: torch.Tensor, rows: int, length: int) -> list[list[int]]:
    """`rows` prompts of `length` consecutive held-out ids, wrapping around short texts."""
    return [[int(ids[(r * length + i) % len(ids)]) for i in range(length)] for r in range(rows)]


@torch.inference_mode()
def forward_logits(model: Transformer, rows: torch.Tensor) -> torch.Tensor:
    """Logits (N, T - 1, V) of every held-out window, in float32."""
    return torch.cat([model(row[None, :-1]).logits.float() for row in rows])


def perplexity(logits: torch.Tensor, rows: torch.Tensor) -> float:
    """exp(mean next-token cross-entropy) of logits (N, T - 1, V) for windows (N, T)."""
    targets = rows[:, 1:].to(logits.device)
    return math.exp(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)).item())


def agreement(ours: list[list[int]], theirs: list[list[int]]) -> float:
    """Share of positions where two greedy continuations hold the same token: [[1, 2, 3]] vs [[1, 5, 3]] -> 2/3."""
    pairs = [(a, b) for r, s in zip(ours, theirs, strict=True) for a, b in zip(r, s, strict=True)]
    return sum(a == b for a, b in pairs) / max(1, len(pairs))


def kv_cache_bytes(model: Transformer, batch: int, length: int) -> int:
    """K and V for every layer: 2 x n_layers x batch x n_kv_heads x length x head_dim x bytes per value."""
    c = model.cfg
    return 2 * c.n_layers * batch * c.kv_heads * length * c.head_dim * model.embed.weight.element_size()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_stream(engine: Engine, prompts: list[list[int]], sampling: SamplingConfig,
                device: torch.device) -> tuple[float, list[float], float]:
    """(time to first token, gaps between later tokens, total seconds) of one greedy call."""
    stamps = []
    start = time.perf_counter()
    for _ in engine.stream(prompts, sampling):
        _sync(device)
        stamps.append(time.perf_counter())
    total = time.perf_counter() - start
    return stamps[0] - start, [b - a for a, b in itertools.pairwise(stamps)], total


def measure_speed(model: Transformer, prompts: list[list[int]], cfg: BenchInferenceConfig,
                  device: torch.device) -> dict[str, Any]:
    """Per batch size: TTFT, per-token p50 / p95 and tokens/s over `cfg.repeats` calls (after a warm-up)."""
    engine = Engine(model, decode=cfg.decode)
    sampling = SamplingConfig(max_new_tokens=cfg.new_tokens, temperature=0.0)
    out: dict[str, Any] = {}
    for B in cfg.batches:
        rows = prompts[:B]
        time_stream(engine, rows, replace(sampling, max_new_tokens=min(4, cfg.new_tokens)), device)  # warm-up
        ttft, gaps, totals = [], [], []
        for _ in range(cfg.repeats):
            first, later, total = time_stream(engine, rows, sampling, device)
            ttft.append(first)
            gaps += later
            totals.append(total)
        out[str(B)] = {"ttft_ms": 1e3 * percentile(ttft, 50),
                       "token_p50_ms": 1e3 * percentile(gaps, 50) if gaps else None,
                       "token_p95_ms": 1e3 * percentile(gaps, 95) if gaps else None,
                       "tokens_per_s": B * cfg.new_tokens / percentile(totals, 50)}
    return out


def measure(model: Transformer, rows: torch.Tensor, prompts: list[list[int]], cfg: BenchInferenceConfig,
            device: torch.device) -> dict[str, Any]:
    """One backend (the model's current one): logits, perplexity, greedy tokens, speed, peak memory."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    mark = mark_rss()
    logits = forward_logits(model, rows.to(device))
    greedy = Engine(model, decode=cfg.decode).generate(
        prompts[:max(cfg.batches)], SamplingConfig(max_new_tokens=cfg.new_tokens, temperature=0.0))
    speed = measure_speed(model, prompts, cfg, device)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else mark.extra_bytes()
    return {"logits": logits, "perplexity": perplexity(logits, rows), "greedy": greedy, "speed": speed,
            "peak_mib": peak / MiB, "peak_kind": "CUDA max allocated" if device.type == "cuda" else "extra RSS",
            "kv_cache_mib": kv_cache_bytes(model, max(cfg.batches), cfg.prompt_len + cfg.new_tokens) / MiB}


def load(cfg: BenchInferenceConfig) -> tuple[Transformer, torch.Tensor, str, torch.device]:
    """(model as saved, held-out ids, their source, device): the inputs, checked before a run folder exists."""
    from llmlab.model.device import pick_device
    from llmlab.model.io import load_model

    device = pick_device(cfg.device)
    model, tokenizer = load_model(cfg.model, device=device)
    ids, source = held_out_ids(cfg, tokenizer, model.cfg.vocab_size)
    return model, ids, source, device


def run_benchmark(cfg: BenchInferenceConfig, model: Transformer, ids: torch.Tensor, source: str,
                  device: torch.device, log: Any) -> dict[str, Any]:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    original = model.cfg.attention
    rows = windows(ids, min(cfg.seq_len, model.cfg.max_seq_len - 1))
    prompts = prompts_from(ids, max(cfg.batches), cfg.prompt_len)
    results: dict[str, Any] = {
        "machine": {**machine_info(), "load_start": load_average()[0], "device": str(device)},
        "model": cfg.model, "original_attention": original, "held_out": {"source": source, "tokens": int(rows.numel()),
                                                                         "windows": list(rows.shape)},
        "settings": {k: getattr(cfg, k) for k in ("prompt_len", "new_tokens", "batches", "repeats", "decode")},
        "tolerance": vars(cfg.tolerance), "rows": [], "skipped": []}
    log(f"original ({original}): held-out {source}, {rows.shape[0]} x {rows.shape[1]} tokens")
    ref = measure(model, rows, prompts, cfg, device)
    results["rows"].append(_row("original", original, ref, ref))
    for backend in cfg.attention:
        if backend == "triton" and device.type != "cuda":
            line = f"triton: skipped (needs CUDA; this run is on {device.type})"
            log(line)
            results["skipped"].append(line)
            continue
        set_attention(model, backend)
        try:
            r = measure(model, rows, prompts, cfg, device)
        finally:
            set_attention(model, original)
        row = _row(backend, backend, r, ref)
        row["tolerance_logits"] = getattr(cfg.tolerance, backend)
        row["failures"] = gate(row, cfg)
        results["rows"].append(row)
        log(f"{backend}: max |logit diff| {row['max_logit_diff']:.2e}, ppl delta {row['ppl_delta']:+.2e}, "
            f"agreement {row['agreement']:.3f}, b{cfg.batches[0]} {row['speed'][str(cfg.batches[0])]['tokens_per_s']:.1f}"
            " tokens/s")
    results["machine"]["load_end"] = load_average()[0]
    return results


def _row(name: str, backend: str, r: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "backend": backend, "speed": r["speed"], "peak_mib": r["peak_mib"],
            "peak_kind": r["peak_kind"], "kv_cache_mib": r["kv_cache_mib"], "perplexity": r["perplexity"],
            "max_logit_diff": (r["logits"] - ref["logits"]).abs().max().item(),
            "ppl_delta": r["perplexity"] - ref["perplexity"], "agreement": agreement(r["greedy"], ref["greedy"]),
            "failures": []}


def gate(row: dict[str, Any], cfg: BenchInferenceConfig) -> list[str]:
    """One message per tolerance the backend exceeds (empty: it passes)."""
    t, b = cfg.tolerance, row["backend"]
    fails = []
    if not row["max_logit_diff"] <= row["tolerance_logits"]:  # subtle: `not <=` also catches NaN
        fails.append(f"{b}: max |logit diff| {row['max_logit_diff']:.3g} > tolerance.{b} {row['tolerance_logits']:g}")
    ref_ppl = row["perplexity"] - row["ppl_delta"]
    if not abs(row["ppl_delta"]) <= t.perplexity * ref_ppl:
        fails.append(f"{b}: perplexity delta {row['ppl_delta']:+.3g} ({abs(row['ppl_delta']) / ref_ppl:.3g} relative) "
                     f"> tolerance.perplexity {t.perplexity:g}")
    if not row["agreement"] >= t.agreement:
        fails.append(f"{b}: greedy agreement {row['agreement']:.3f} < tolerance.agreement {t.agreement:g}")
    return fails


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def format_table(results: dict[str, Any], *, command: str) -> str:
    m, s = results["machine"], results["settings"]
    batches = [str(b) for b in s["batches"]]
    b0, rows = batches[0], results["rows"]
    orig = rows[0]
    table = []
    for r in rows:
        sp = r["speed"]
        gate_cell = "reference" if r["name"] == "original" else ("ok" if not r["failures"] else "FAILED")
        table.append([f"{r['name']} ({r['backend']})" if r["name"] == "original" else r["name"],
                      f"{sp[b0]['ttft_ms']:.1f}", _ms(sp[b0]["token_p50_ms"]), _ms(sp[b0]["token_p95_ms"]),
                      *[f"{sp[b]['tokens_per_s']:.1f}" for b in batches],
                      ratio(sp[b0]["tokens_per_s"], orig["speed"][b0]["tokens_per_s"]),
                      f"{r['peak_mib']:.1f}", f"{r['kv_cache_mib']:.2f}", f"{r['max_logit_diff']:.2e}",
                      f"{r['ppl_delta']:+.2e}", f"{r['agreement']:.3f}", gate_cell])
    columns = ["attention", f"TTFT ms (b{b0})", f"ms/token p50 (b{b0})", f"ms/token p95 (b{b0})",
               *[f"tokens/s b{b}" for b in batches], f"x original (b{b0})", f"peak MiB ({orig['peak_kind']})",
               f"KV cache MiB (b{batches[-1]})", "max abs logit diff", "ppl delta", "greedy agreement", "gate"]
    held, tol = results["held_out"], results["tolerance"]
    lines = ["# Inference benchmark: attention backends on one model", "",
             f"`{command}` on {m['date']}: {describe_machine(m)}, device {m['device']}; "
             f"{describe_load(m['load_start'], m['load_end'])}. Timings on a shared machine are noisy.", "",
             f"Model `{results['model']}`, saved with attention `{results['original_attention']}` (the original: "
             f"the before row). Engine decode step `{s['decode']}`; prompt {s['prompt_len']} tokens, "
             f"{s['new_tokens']} new tokens, greedy, median of {s['repeats']} calls. Quality on held-out "
             f"{held['source']}: {held['windows'][0]} windows of {held['windows'][1]} tokens.", "",
             markdown_table(columns, table, align="l" + "r" * (len(columns) - 1)), "",
             "Tolerances: max |logit diff| " + ", ".join(f"{b} {tol[b]:g}" for b in ("naive", "sdpa", "flash", "triton"))
             + f"; |perplexity delta| <= {tol['perplexity']:g} x the original's; greedy agreement >= "
             f"{tol['agreement']:g}."]
    lines += [f"- {line}" for line in results["skipped"]]
    lines += [f"- FAILED {f}" for r in rows for f in r["failures"]]
    return "\n".join(lines) + "\n"


def plot_results(results: dict[str, Any], path: Path) -> None:
    """Grouped bars: tokens/s of each backend (original first) at each batch size."""
    rows, batches = results["rows"], [str(b) for b in results["settings"]["batches"]]
    fig, ax = new_figure(width=8.0, height=4.0)
    width = 0.8 / len(batches)
    for j, b in enumerate(batches):
        xs = [i + (j - (len(batches) - 1) / 2) * width for i in range(len(rows))]
        ax.bar(xs, [r["speed"][b]["tokens_per_s"] for r in rows], width, label=f"batch {b}")
    ax.set_xticks(range(len(rows)), [f"original\n({r['backend']})" if r["name"] == "original" else r["name"]
                                     for r in rows])
    ax.set_ylabel("new tokens / s")
    ax.set_title(f"Engine decode, greedy ({results['machine']['device']})")
    ax.legend()
    save_figure(fig, path)


def bench_inference(cfg: BenchInferenceConfig, ctx: Context) -> int:
    """`llmlab bench inference`: table.md, results.json and inference.png in the run folder."""
    from llmlab.runs import start_run

    inputs = load(cfg)  # a folder that is not a model fails here, before the run folder is made
    run = start_run("bench-inference", cfg, out=ctx.out, quiet=ctx.quiet)
    results = run_benchmark(cfg, *inputs, log=run.log)
    write_run_outputs(run, ctx, "inference", results, format_table, plot_results)
    failures = [f for r in results["rows"] for f in r["failures"]]
    if failures:
        sys.stderr.write(f"error: quality gate failed: {'; '.join(failures)}\n")
        return 1
    return 0
