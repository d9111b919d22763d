"""Hardware what-ifs: the KV cache and the roofline time of one decode step of a whole named model.

`explain.py` prices one attention layer; this prices a decode step of a full model, where every
step reads all the weights once (shared by the batch) and each sequence's whole KV cache:

    bytes read per step  = weights (every parameter but the embedding table, which is only gathered)
                           + batch * cached tokens * kv_bytes_per_token
    FLOPs per step       = batch * (2 * matmul parameters + 4 * n_layers * n_heads * head_dim * cached tokens)
    time per step        = max(bytes / HBM bandwidth, FLOPs / peak FLOP/s)       (the roofline, Williams et al.
                                                                                   2009)
    kv_bytes_per_token   = 2 (K and V) * n_layers * n_kv_heads * head_dim * dtype bytes
    cached tokens        = min(context, sliding window)

Every sequence gets one token per step, so the step time is the per-token latency and
batch / step time the throughput. The accelerators' numbers are their published dense peaks
(no 2:4 sparsity) and HBM bandwidths: real kernels reach maybe 60-80 % of either.

Left out: the writes of the new K/V (batch * kv_bytes_per_token, negligible), activations,
softmax and norm FLOPs, rotary, kernel-launch and communication overheads (a 70B model in bf16
needs two 80 GB cards: the "fits" column says so, the time assumes one ideal device), and
quantisation scales. "fp8" stores weights and cache in one byte; on a card without fp8 tensor
cores (A100) the math runs at its bf16 peak.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a Llama-style decoder that decide its cost (SwiGLU MLP, RMSNorm, untied head)."""

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    vocab_size: int
    window: int | None = None  # sliding-window attention: the cache keeps the last `window` tokens
    note: str = ""


# Published configs (config.json of each model); the MHA row is a counterfactual for comparison.
PRESETS: dict[str, ModelShape] = {
    "llama-3-8b": ModelShape(32, 4096, 32, 8, 128, 14336, 128256, note="GQA 32:8"),
    "llama-3-70b": ModelShape(80, 8192, 64, 8, 128, 28672, 128256, note="GQA 64:8"),
    "llama-3-70b-mha": ModelShape(80, 8192, 64, 64, 128, 28672, 128256,
                                  note="counterfactual: Llama-3-70B with one K/V head per query head"),
    "mistral-7b": ModelShape(32, 4096, 32, 8, 128, 14336, 32000, window=4096,
                             note="v0.1: GQA 32:8, sliding window 4096"),
}


@dataclass(frozen=True)
class Accelerator:
    """Published peak numbers: dense (no sparsity) tensor-core FLOP/s per dtype, HBM bandwidth and size."""

    hbm_bytes_per_s: float
    hbm_bytes: float
    peak_flops: dict[str, float]  # dtype -> FLOP/s; a dtype missing here runs at the bf16 peak
    note: str = ""


ACCELERATORS: dict[str, Accelerator] = {
    "h100-sxm": Accelerator(3.35e12, 80e9, {"bf16": 989.4e12, "fp8": 1978.9e12}, "NVIDIA H100 SXM5 80GB"),
    "a100-80gb": Accelerator(2.039e12, 80e9, {"bf16": 312e12}, "NVIDIA A100 SXM4 80GB (no fp8 tensor cores)"),
    "mi300x": Accelerator(5.3e12, 192e9, {"bf16": 1307.4e12, "fp8": 2614.9e12}, "AMD Instinct MI300X"),
    "l4": Accelerator(300e9, 24e9, {"bf16": 121e12, "fp8": 242.5e12}, "NVIDIA L4 24GB"),
}

DTYPE_BYTES = {"bf16": 2, "fp8": 1}


def param_counts(m: ModelShape) -> dict[str, int]:
    """Parameters by kind. Per layer: q and o are d_model x (n_heads head_dim), k and v d_model x (n_kv_heads
    head_dim), the MLP three d_model x d_ff matrices, two norm vectors; plus the embedding, the head (untied)
    and the final norm.

    Llama-3-70B: attention 2 * 8192 * 8192 + 2 * 8192 * 1024 = 150,994,944 per layer, MLP 704,643,072,
    norms 16,384 -> 855,654,400 per layer, x 80 = 68,452,352,000; embedding = head = 1,050,673,152;
    final norm 8,192 -> 70,553,706,496 in all.
    """
    attention = m.d_model * m.head_dim * (2 * m.n_heads + 2 * m.n_kv_heads) * m.n_layers
    mlp = 3 * m.d_model * m.d_ff * m.n_layers
    norms = m.d_model * (2 * m.n_layers + 1)
    embedding = head = m.vocab_size * m.d_model
    return {"attention": attention, "mlp": mlp, "norms": norms, "embedding": embedding, "head": head,
            "total": attention + mlp + norms + embedding + head}


def kv_bytes_per_token(m: ModelShape, dtype_bytes: int) -> int:
    """2 (K and V) * n_layers * n_kv_heads * head_dim * dtype_bytes: Llama-3-70B in bf16: 2*80*8*128*2 = 327,680."""
    return 2 * m.n_layers * m.n_kv_heads * m.head_dim * dtype_bytes


def cached_tokens(m: ModelShape, context: int) -> int:
    """Tokens one sequence keeps in the cache at `context`: all of them, or the last `window`."""
    return context if m.window is None else min(context, m.window)


def decode_step(m: ModelShape, acc: Accelerator, *, dtype: str, context: int, batch: int) -> dict[str, Any]:
    """The roofline of one decode step of `batch` sequences at `context` tokens each (formulas: module docstring)."""
    if context < 1 or batch < 1:
        raise ValueError(f"decode_step: context and batch must be positive, got {context} and {batch}")
    b = DTYPE_BYTES[dtype]
    params = param_counts(m)
    S = cached_tokens(m, context)
    per_token = kv_bytes_per_token(m, b)
    kv_total = batch * S * per_token
    weights_read = (params["total"] - params["embedding"]) * b  # the embedding is gathered: batch rows only
    matmul = params["attention"] + params["mlp"] + params["head"]
    flops = batch * (2 * matmul + 4 * m.n_layers * m.n_heads * m.head_dim * S)
    peak = acc.peak_flops.get(dtype, acc.peak_flops["bf16"])
    memory_s, compute_s = (weights_read + kv_total) / acc.hbm_bytes_per_s, flops / peak
    step_s = max(memory_s, compute_s)
    return {"weights_bytes": params["total"] * b, "kv_bytes_per_token": per_token, "cached_tokens": S,
            "kv_cache_bytes": kv_total, "fits": params["total"] * b + kv_total <= acc.hbm_bytes,
            "bytes_read": weights_read + kv_total, "flops": flops, "memory_s": memory_s, "compute_s": compute_s,
            "bound": "memory" if memory_s >= compute_s else "compute", "step_s": step_s,
            "tokens_per_s": batch / step_s, "math": dtype if dtype in acc.peak_flops else "bf16"}


def what_if(presets: list[str], accelerators: list[str], dtypes: list[str], *, context: int,
            batch: int) -> list[dict[str, Any]]:
    """One row per (preset, dtype, accelerator): `decode_step` with the names attached."""
    return [{"model": p, "dtype": d, "accelerator": a,
             **decode_step(PRESETS[p], ACCELERATORS[a], dtype=d, context=context, batch=batch)}
            for p in presets for d in dtypes for a in accelerators]


def format_what_if(rows: list[dict[str, Any]], *, header: str = "") -> str:
    """A plain markdown table: sizes in GB (1e9) and GiB (2^30) as labelled, times in ms."""
    columns = ("model", "dtype", "accelerator", "weights GB", "KV KiB/token", "KV cache GiB", "fits",
               "GB read/step", "GFLOP/step", "memory ms", "compute ms", "bound", "ms/token", "tokens/s")
    body = [(r["model"], r["dtype"] if r["math"] == r["dtype"] else f"{r['dtype']} (bf16 math)", r["accelerator"],
             f"{r['weights_bytes'] / 1e9:,.1f}", f"{r['kv_bytes_per_token'] / 2**10:,.0f}",
             f"{r['kv_cache_bytes'] / 2**30:,.2f}", "yes" if r["fits"] else "no", f"{r['bytes_read'] / 1e9:,.1f}",
             f"{r['flops'] / 1e9:,.0f}", f"{r['memory_s'] * 1e3:,.2f}", f"{r['compute_s'] * 1e3:,.3f}", r["bound"],
             f"{r['step_s'] * 1e3:,.2f}", f"{r['tokens_per_s']:,.0f}") for r in rows]
    widths = [max(len(c), *(len(line[i]) for line in body)) for i, c in enumerate(columns)]
    text_columns = {0, 1, 2, 6, 11}

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) if i in text_columns else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ("-" if i in text_columns else ":") for i, w in enumerate(widths)) + "|"
    notes = [f"{name}: {PRESETS[name].note}" for name in dict.fromkeys(r["model"] for r in rows)]
    notes += [f"{name}: {ACCELERATORS[name].note}, {ACCELERATORS[name].hbm_bytes_per_s / 1e12:g} TB/s, "
              + ", ".join(f"{d} {f / 1e12:g} TFLOP/s" for d, f in ACCELERATORS[name].peak_flops.items())
              for name in dict.fromkeys(r["accelerator"] for r in rows)]
    lines = ([header, ""] if header else []) + [line(columns), rule, *(line(cells) for cells in body), ""]
    return "\n".join([*lines, *notes, "fits: weights + KV cache within one card's HBM; the times assume they do "
                      "(one ideal device, dense published peaks)"]) + "\n"
