"""`llmlab profile`: where the time of generation goes, by model part and by op.

One prefill of a batch of prompts and N decode steps of the KV-cache `Engine`
(model/generate.py), three times: a warm-up, a timed run (wall clock, no profiler: the
profiler's own cost would inflate short ops) and a run under `torch.profiler`. Each op the
profiler records is attributed to the model part it ran in:

    attention       Attention.forward: qkv projection, rotary, KV-cache update, attention, out projection
    mlp             MLP.forward: gate/up projection, SiLU, product, down projection
    norm            every RMSNorm (two per block and the final one)
    embedding/head  the token embedding and the output projection (the head)
    sampling        the Engine's sampler (repetition penalty, temperature, top-k/p, multinomial)
    other ops       ops outside those: the rotary tables' indexing, the Engine's bookkeeping
    python          time inside a part or a phase that no op accounts for: the interpreter between ops

The parts are marked by `record_function` scopes opened by forward hooks that exist only while
profiling, so an unprofiled model pays nothing for them. subtle: the Engine's default decode step
(`static`, model/decode.py) runs the layers' arithmetic without calling the modules, so there are no
module boundaries to label; the profiled run therefore decodes with the model's `forward` step, and the
timed run measures both steps, so the report shows what `generate` pays and what the table describes. Shares are of self CPU time (each op's
time without its children's), so they add up to the profiled total. On CUDA, CPU time is the
launch cost; the device-time column says where the GPU's time went.

Also measured: prefill time, per-step decode time, tokens/s, and peak memory (ru_maxrss of the
process on CPU, which includes loading; `torch.cuda.max_memory_allocated` on GPU). The trace
opens in https://ui.perfetto.dev or chrome://tracing.

Left out: a CUDA-graph or compiled model, per-layer breakdowns (every layer does the same work),
and FLOP counting (see `llmlab attention explain --preset` for the roofline arithmetic).
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from statistics import median
from typing import Any

import torch
from torch import nn

import llmlab.model.generate as generate_module
from llmlab.context import Context
from llmlab.errors import UserError
from llmlab.files import write_json_atomic, write_text_atomic
from llmlab.inference.config import ProfileConfig
from llmlab.model.generate import Engine, SamplingConfig
from llmlab.model.llama import MLP, Attention, RMSNorm, Transformer
from llmlab.runs import start_run

PARTS = ("attention", "mlp", "norm", "embedding/head", "sampling", "other ops", "python")
PART_LABEL = "llmlab.part:"  # record_function names: "llmlab.part:attention", ...
PHASE_LABEL = "llmlab.phase:"  # "llmlab.phase:prefill", "llmlab.phase:decode"
PHASES = ("prefill", "decode")
PART_OF_TYPE: dict[type[nn.Module], str] = {Attention: "attention", MLP: "mlp", RMSNorm: "norm",
                                            nn.Embedding: "embedding/head"}


def part_modules(model: Transformer) -> list[tuple[nn.Module, str]]:
    """(module, part) for every module whose forward is one part; the head is a plain Linear, named by place."""
    found = [(m, PART_OF_TYPE[type(m)]) for m in model.modules() if type(m) in PART_OF_TYPE]
    return [*found, (model.head, "embedding/head")]


@contextlib.contextmanager
def labelled_parts(model: Transformer) -> Iterator[None]:
    """While inside: each part's forward, and the Engine's sampler, run inside a `record_function` scope
    named after its part. Nothing is left behind on exit."""
    open_scopes: list[Any] = []

    def enter(label: str) -> Any:
        def hook(module: nn.Module, args: Any) -> None:
            scope = torch.profiler.record_function(label)
            scope.__enter__()
            open_scopes.append(scope)
        return hook

    def leave(module: nn.Module, args: Any, output: Any) -> None:
        open_scopes.pop().__exit__(None, None, None)

    handles = []
    for module, part in part_modules(model):
        handles.append(module.register_forward_pre_hook(enter(PART_LABEL + part)))
        handles.append(module.register_forward_hook(leave, always_call=True))
    # subtle: the Engine calls its sampler by its module-global name, so wrapping that name for the duration
    # labels sampling without a scope in the Engine's loop when nobody is profiling
    sampler = generate_module._next_tokens

    def labelled_sampler(*args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.profiler.record_function(PART_LABEL + "sampling"):
            return sampler(*args, **kwargs)

    generate_module._next_tokens = labelled_sampler
    try:
        yield
    finally:
        generate_module._next_tokens = sampler
        for handle in handles:
            handle.remove()


def phases(stream: Iterator[Any]) -> Iterator[tuple[str, Any]]:
    """("prefill", first tokens), then ("decode", tokens) per step: each step of the stream runs inside a
    `record_function` scope of its phase (the first step is the prefill and its sampling)."""
    phase = "prefill"
    while True:
        with torch.profiler.record_function(PHASE_LABEL + phase):
            step = next(stream, None)
        if step is None:
            return
        yield phase, step
        phase = "decode"


@dataclass(frozen=True)
class OpTime:
    """One op call's self time, and where it ran."""

    name: str
    phase: str  # prefill | decode
    part: str  # one of PARTS
    cpu_us: float  # self CPU time
    device_us: float  # self device (GPU) time; 0 on CPU


def attribute(events: Sequence[Any]) -> list[OpTime]:
    """Each CPU event of a profile (`prof.events()`) as an OpTime: its part is that of the innermost part
    scope around it ("other ops" outside every part), its phase that of the phase scope around it. A part or
    phase scope's own self time (interpreter time between its ops) becomes a "python" row.

    Self times partition the profiled time: summed over every event they equal the root scopes' totals.
    """
    rows = []
    for event in events:
        if event.device_type != torch.autograd.DeviceType.CPU:
            continue  # device-side copies of kernels: their time is in their CPU op's self_device_time_total
        name, part, phase = event.name, None, None
        is_scope = name.startswith((PART_LABEL, PHASE_LABEL))
        node = event
        while node is not None and (part is None or phase is None):
            if part is None and node.name.startswith(PART_LABEL):
                part = node.name.removeprefix(PART_LABEL)
            if phase is None and node.name.startswith(PHASE_LABEL):
                phase = node.name.removeprefix(PHASE_LABEL)
            node = node.cpu_parent
        if phase is None:
            continue  # recorded outside the generation (the profiler's own start and stop)
        part = "python" if is_scope else part or "other ops"
        rows.append(OpTime(name, phase, part, float(event.self_cpu_time_total),
                           float(getattr(event, "self_device_time_total", 0.0))))
    return rows


def part_table(rows: Sequence[OpTime]) -> list[dict[str, Any]]:
    """Per part: self CPU ms in prefill and in decode, its share of all profiled CPU time, and its share of
    device time. The shares of all parts add up to 1 (0 for device time on CPU)."""
    cpu: dict[tuple[str, str], float] = defaultdict(float)
    device: dict[str, float] = defaultdict(float)
    for r in rows:
        cpu[r.part, r.phase] += r.cpu_us
        device[r.part] += r.device_us
    total_cpu = sum(cpu.values()) or 1.0
    total_device = sum(device.values())
    return [{"part": part, "prefill_ms": cpu[part, "prefill"] / 1e3, "decode_ms": cpu[part, "decode"] / 1e3,
             "cpu_share": (cpu[part, "prefill"] + cpu[part, "decode"]) / total_cpu,
             "device_share": device[part] / total_device if total_device else 0.0}
            for part in PARTS]


def top_ops(rows: Sequence[OpTime], n: int) -> list[dict[str, Any]]:
    """The n (op, part) pairs with the most self CPU time (scopes' own "python" time left out)."""
    total = sum(r.cpu_us for r in rows) or 1.0
    calls: dict[tuple[str, str], int] = defaultdict(int)
    cpu: dict[tuple[str, str], float] = defaultdict(float)
    device: dict[tuple[str, str], float] = defaultdict(float)
    for r in rows:
        if r.part == "python":
            continue
        calls[r.name, r.part] += 1
        cpu[r.name, r.part] += r.cpu_us
        device[r.name, r.part] += r.device_us
    ranked = sorted(cpu, key=lambda k: -cpu[k])[:n]
    return [{"op": op, "part": part, "calls": calls[op, part], "cpu_ms": cpu[op, part] / 1e3,
             "cpu_share": cpu[op, part] / total, "device_ms": device[op, part] / 1e3} for op, part in ranked]


def random_prompts(batch: int, length: int, vocab: int, *, seed: int) -> list[list[int]]:
    """`batch` prompts of `length` seeded random ids below `vocab`: the cost of a step does not depend on
    which tokens it sees."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=g).tolist()


def time_generation(engine: Engine, prompts: list[list[int]], sampling: SamplingConfig, *,
                    seed: int) -> tuple[float, list[float]]:
    """(seconds to the first tokens: prefill and its sampling, [seconds of each later step]). Each step
    ends with the tokens on the host (the Engine's `.tolist()`), so GPU work is included."""
    generator = torch.Generator(device=engine.model.embed.weight.device).manual_seed(seed)
    times, start = [], time.perf_counter()
    for _ in engine.stream(prompts, sampling, generator=generator):
        now = time.perf_counter()
        times.append(now - start)
        start = now
    return times[0], times[1:]


def profile_generation(engine: Engine, prompts: list[list[int]], sampling: SamplingConfig, *,
                       seed: int) -> Any:
    """The finished `torch.profiler.profile` of one generation, parts and phases labelled."""
    device = engine.model.embed.weight.device
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.profiler.profile(activities=activities) as prof, labelled_parts(engine.model):
        for _ in phases(engine.stream(prompts, sampling, generator=generator)):
            pass
    return prof


def peak_memory(device: torch.device) -> dict[str, Any]:
    """The peak memory of this process: GPU allocations on CUDA (since the last reset), else the largest
    resident set so far (ru_maxrss: kilobytes on Linux, bytes on macOS; it includes loading the model)."""
    if device.type == "cuda":
        return {"kind": "cuda max_memory_allocated", "bytes": torch.cuda.max_memory_allocated(device)}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"kind": "peak RSS (ru_maxrss, whole process)", "bytes": rss if sys.platform == "darwin" else rss * 1024}


def format_report(result: dict[str, Any]) -> str:
    """Markdown: the summary lines, the part table and the top-ops table."""
    t, mem = result["timing"], result["memory"]
    lines = [
        f"model {result['model']} ({result['params'] / 1e6:.2f}M parameters, {result['dtype']}) on {result['device']}, "
        f"batch {result['batch']}, prompt {result['prompt_len']} tokens, {result['new_tokens']} new tokens",
        "",
        f"- prefill (+ first sampling): {t['prefill_ms']:.2f} ms",
        f"- decode: {t['decode_ms_per_step']:.2f} ms per step (median of {t['decode_steps']}), "
        f"{t['decode_tokens_per_s']:,.0f} tokens/s over the batch, with the Engine's static step; "
        f"{t['forward_decode_ms_per_step']:.2f} ms per step with the model's forward step (the one profiled below)",
        f"- {mem['kind']}: {mem['bytes'] / 2**20:,.1f} MiB; KV cache {result['kv_cache_bytes'] / 2**20:,.2f} MiB",
        f"- under the profiler: {result['profiled_ms']:.2f} ms of self CPU time in all, against "
        f"{t['total_ms']:.2f} ms timed without it (they differ by the profiler's and the labels' cost, and by noise)",
        "",
        "| part | prefill ms | decode ms | CPU share | device share |",
        "|---|--:|--:|--:|--:|",
        *(f"| {r['part']} | {r['prefill_ms']:.2f} | {r['decode_ms']:.2f} | {r['cpu_share']:.1%} | "
          f"{r['device_share']:.1%} |" for r in result["parts"]),
        "",
        "| op | part | calls | self CPU ms | CPU share | device ms |",
        "|---|---|--:|--:|--:|--:|",
        *(f"| {r['op']} | {r['part']} | {r['calls']} | {r['cpu_ms']:.2f} | {r['cpu_share']:.1%} | "
          f"{r['device_ms']:.2f} |" for r in result["top_ops"]),
        "",
        "self CPU time under torch.profiler (inflated by the profiler itself; the timings above are without it)",
    ]
    return "\n".join(lines) + "\n"


def profile(cfg: ProfileConfig, ctx: Context) -> int:
    from llmlab.model.device import pick_device
    from llmlab.model.io import load_model

    device = pick_device(cfg.device)
    model, tokenizer = load_model(cfg.model, device=device, dtype=torch.bfloat16 if device.type == "cuda" else None)
    # ids the tokenizer can produce (a model's table may be padded wider), and never past the table
    vocab = min(tokenizer.id_count, model.cfg.vocab_size) if tokenizer is not None else model.cfg.vocab_size
    if cfg.prompt_len + cfg.new_tokens > model.cfg.max_seq_len:
        raise UserError(f"prompt_len {cfg.prompt_len} + new_tokens {cfg.new_tokens} is longer than the model's "
                        f"max_seq_len {model.cfg.max_seq_len}")
    run = start_run("profile", cfg, out=ctx.out, quiet=ctx.quiet)
    engine, labelled = Engine(model), Engine(model, decode="forward")  # what generate runs; what is labelled
    prompts = random_prompts(cfg.batch, cfg.prompt_len, vocab, seed=cfg.seed)
    sampling = SamplingConfig(max_new_tokens=cfg.new_tokens, temperature=cfg.temperature, top_k=cfg.top_k,
                              top_p=cfg.top_p, vocab_limit=vocab)
    time_generation(engine, prompts, sampling, seed=cfg.seed)  # warm-up: allocator, kernels, caches
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    prefill_s, steps_s = time_generation(engine, prompts, sampling, seed=cfg.seed)
    memory = peak_memory(device)
    forward_steps_s = time_generation(labelled, prompts, sampling, seed=cfg.seed)[1]
    run.log(f"timed: prefill {prefill_s * 1e3:.2f} ms, decode {median(steps_s) * 1e3:.2f} ms per step; profiling")
    prof = profile_generation(labelled, prompts, sampling, seed=cfg.seed)
    rows = attribute(prof.events())
    trace = run.path("trace.json")
    partial = run.path("trace.json.partial")
    prof.export_chrome_trace(str(partial))
    os.replace(partial, trace)  # atomic: a reader never sees half a trace
    if device.type == "cuda":
        write_text_atomic(run.path("memory_summary.txt"), torch.cuda.memory_summary(device))
    step = median(steps_s)
    mc = model.cfg
    result = {
        "model": cfg.model, "device": str(device), "dtype": str(model.embed.weight.dtype).removeprefix("torch."),
        "params": sum(p.numel() for p in model.parameters()), "batch": cfg.batch, "prompt_len": cfg.prompt_len,
        "new_tokens": cfg.new_tokens,
        "timing": {"prefill_ms": prefill_s * 1e3, "decode_ms_per_step": step * 1e3, "decode_steps": len(steps_s),
                   "decode_tokens_per_s": cfg.batch / step, "decode_step_ms": [s * 1e3 for s in steps_s],
                   "forward_decode_ms_per_step": median(forward_steps_s) * 1e3,
                   "total_ms": (prefill_s + sum(steps_s)) * 1e3},
        "profiled_ms": sum(r.cpu_us for r in rows) / 1e3,
        "memory": memory,
        # 2 (K and V) * layers * batch * kv heads * positions * head_dim * bytes: what model.new_cache allocates
        "kv_cache_bytes": 2 * mc.n_layers * cfg.batch * mc.kv_heads * (cfg.prompt_len + cfg.new_tokens)
        * mc.head_dim * model.embed.weight.element_size(),
        "parts": part_table(rows), "top_ops": top_ops(rows, cfg.top_ops), "trace": str(trace),
    }
    text = format_report(result)
    write_json_atomic(run.path("profile.json"), result)
    write_text_atomic(run.path("profile.md"), text)
    run.log(f"wrote {run.dir}: profile.md, profile.json, trace.json (open it in https://ui.perfetto.dev)")
    sys.stdout.write(text)
    return 0
