"""What the attention benchmark measures: its cases, the correctness check, one prefill case, decode.

Causal fp32 prefill at T = min_len, 2 min_len, ..., max_len, MHA (H:H) and GQA (H:Hkv), then
one-token decode against KV caches of the same lengths:

    correctness   at each T, before timing it: sdpa's and flash's outputs (and, up to a length,
                  the gradients of q, k, v; and one-token decode) against naive's on the same
                  inputs, max abs error (`check_against_naive`)
    prefill       one (heads, backend, T, forward | forward+backward) in a fresh process
                  (`measure_prefill`): inputs, a warm-up call at T=64 (kernels paged in, threads
                  started: not counted), `harness.mark_rss`, the op once: peak extra memory =
                  VmHWM - VmRSS before. Then `repeats` timed runs (1 when the first took over
                  SLOW_S): the median
    decode        T=1 query against S keys: median of `calls` calls, KV cache bytes (`time_decode`)

FLOPs count useful work: the forward does QK^T and PV for each visible (query, key) pair, two
matmuls of D multiply-adds at 2 FLOPs each, so causal prefill is 4 * B * H * D * T(T+1)/2. The
backward counts 2.5x the forward (FlashAttention-2's convention: dV, dP, dQ, dK and the
recomputed QK^T, 5 matmuls to the forward's 2), whatever a backend really computes (naive also
computes the masked half).

"forward" is inference (no grad). "forward+backward" makes q, k, v leaves that require grad,
runs the op and `out.backward(dout)`; its peak includes the three gradients.

Leaves out: the run over all cases (llmlab.bench.attention), tables and plots
(llmlab.bench.attention_report), GPUs, bf16/fp16, padding and window masks, batch sweeps,
chunked prefill.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmlab.bench.harness import cpu_clock, mark_rss, other_cores, time_call, time_once

if TYPE_CHECKING:
    import torch

MODES = ("fwd", "fwd+bwd")
MODE_NAMES = {"fwd": "forward", "fwd+bwd": "forward+backward"}
BACKWARD_FLOPS = 2.5  # backward FLOPs / forward FLOPs (FlashAttention-2's count)
SLOW_S = 2.0  # a case whose first run takes longer is timed once more, not `repeats` times
WARMUP_LEN = 64
OUT_TOL = 1e-4  # max abs error against naive, fp32
GRAD_TOL = 1e-3
MiB = 2**20
# what the fork server of the prefill cases imports once, so that each case starts in milliseconds.
# subtle: the first backward with an explicit gradient imports sympy (torch's symbolic shapes): 0.7 s.
PRELOAD = ("torch", "torch.fx.experimental.symbolic_shapes", "llmlab.attention.functional", __name__)


@dataclass(frozen=True)
class Heads:
    heads: int
    kv_heads: int

    @property
    def label(self) -> str:
        kind = "MHA" if self.heads == self.kv_heads else "MQA" if self.kv_heads == 1 else "GQA"
        return f"{kind} {self.heads}:{self.kv_heads}"


def seq_lens(min_len: int, max_len: int) -> list[int]:
    """Doublings: seq_lens(256, 2048) -> [256, 512, 1024, 2048]."""
    out = [min_len]
    while out[-1] * 2 <= max_len:
        out.append(out[-1] * 2)
    return out


def attention_flops(*, batch: int, heads: int, q_len: int, kv_len: int, head_dim: int, causal: bool = True) -> int:
    """Forward FLOPs of useful work: 4 * D per visible (query, key) pair and head (QK^T and PV).

    Causal, queries at the last q_len of kv_len positions: query i sees kv_len - q_len + i + 1 keys.
    Prefill T = S = 4: 1 + 2 + 3 + 4 = 10 pairs = T(T+1)/2. Decode T = 1, S = 5: 5 pairs.
    """
    pairs = q_len * (kv_len - q_len) + q_len * (q_len + 1) // 2 if causal else q_len * kv_len
    return 4 * batch * heads * head_dim * pairs


def kv_cache_bytes(*, batch: int, kv_heads: int, kv_len: int, head_dim: int, dtype_bytes: int = 4) -> int:
    """K and V: 2 * B * Hkv * S * D values."""
    return 2 * batch * kv_heads * kv_len * head_dim * dtype_bytes


# ---------------------------------------------------------------------------------------------- inputs and ops

def make_inputs(*, batch: int, heads: Heads, head_dim: int, T: int, S: int, seed: int,
                requires_grad: bool = False) -> tuple[torch.Tensor, ...]:
    """q (B, H, T, D), k, v (B, Hkv, S, D), dout (B, H, T, D): seeded standard normal, fp32."""
    import torch  # heavy: `llmlab --help` imports this package without it

    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads.heads, T, head_dim, generator=g)
    k = torch.randn(batch, heads.kv_heads, S, head_dim, generator=g)
    v = torch.randn(batch, heads.kv_heads, S, head_dim, generator=g)
    dout = torch.randn(batch, heads.heads, T, head_dim, generator=g)
    for t in (q, k, v):
        t.requires_grad_(requires_grad)
    return q, k, v, dout


def tiles(backend: str, q_block: int, k_block: int) -> dict[str, int]:
    """The tile-size arguments of `attention`: only flash takes them."""
    return {"q_block": q_block, "k_block": k_block} if backend == "flash" else {}


def prefill_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dout: torch.Tensor, *, backend: str, mode: str,
               q_block: int = 256, k_block: int = 256) -> Callable[[], None]:
    """One call of causal attention ("fwd", under no_grad) or of attention and its backward ("fwd+bwd")."""
    import torch

    from llmlab.attention import attention

    kwargs: dict[str, Any] = {"causal": True, "backend": backend, **tiles(backend, q_block, k_block)}

    def forward() -> None:
        with torch.no_grad():
            attention(q, k, v, **kwargs)

    def forward_backward() -> None:
        q.grad = k.grad = v.grad = None  # every run allocates its gradients afresh
        attention(q, k, v, **kwargs).backward(dout)

    return forward if mode == "fwd" else forward_backward


# ---------------------------------------------------------------------------------------------- correctness

def check_against_naive(*, batch: int, heads: Heads, head_dim: int, T: int, S: int, backends: tuple[str, ...],
                        grads: bool, seed: int, q_block: int = 256, k_block: int = 256) -> list[dict[str, Any]]:
    """Max abs error of each non-naive backend's output (and of dq, dk, dv) against naive's, same inputs."""
    import torch

    from llmlab.attention import attention

    q, k, v, dout = make_inputs(batch=batch, heads=heads, head_dim=head_dim, T=T, S=S, seed=seed,
                                requires_grad=grads)

    def run(backend: str) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        kwargs: dict[str, Any] = {"causal": True, "backend": backend, **tiles(backend, q_block, k_block)}
        if not grads:
            with torch.no_grad():
                return attention(q, k, v, **kwargs), ()  # type: ignore[return-value]
        out = attention(q, k, v, **kwargs)
        assert isinstance(out, torch.Tensor)
        return out.detach(), torch.autograd.grad(out, (q, k, v), dout)

    want_out, want_grads = run("naive")
    rows = []
    for backend in backends:
        if backend == "naive":
            continue
        out, got_grads = run(backend)
        out_err = float((out - want_out).abs().max())  # NaN stays NaN and fails the check
        grad_err = float(torch.stack([(g - w).abs().max() for g, w in zip(got_grads, want_grads, strict=True)])
                         .max()) if grads else None
        ok = out_err <= OUT_TOL and (grad_err is None or grad_err <= GRAD_TOL)
        rows.append({"heads": heads.label, "T": T, "S": S, "backend": backend, "out_err": out_err,
                     "grad_err": grad_err, "ok": ok})
    return rows


# ---------------------------------------------------------------------------------------------- measuring

def measure_prefill(case: dict[str, Any]) -> dict[str, Any]:
    """Peak extra memory and median time of one case; run it in a fresh process (`harness.run_in_fresh_process`).

    `case`: batch, heads, kv_heads, head_dim, T, backend, mode, repeats, seed, q_block, k_block, threads.
    """
    import torch

    if case["threads"]:
        torch.set_num_threads(case["threads"])
    heads = Heads(case["heads"], case["kv_heads"])

    def op_at(T: int) -> Callable[[], None]:
        q, k, v, dout = make_inputs(batch=case["batch"], heads=heads, head_dim=case["head_dim"], T=T, S=T,
                                    seed=case["seed"], requires_grad=case["mode"] == "fwd+bwd")
        return prefill_op(q, k, v, dout, backend=case["backend"], mode=case["mode"], q_block=case["q_block"],
                          k_block=case["k_block"])

    op_at(min(WARMUP_LEN, case["T"]))()  # kernels paged in, thread pool started: not part of the peak
    op = op_at(case["T"])
    mark = mark_rss()
    since = cpu_clock()
    first = time_once(op)
    peak_extra = mark.extra_bytes()
    timing = time_call(op, repeats=case["repeats"] if first < SLOW_S else 1)
    return {"seconds": timing.median, "times": list(timing.times), "first_s": first,
            "peak_extra_bytes": peak_extra, "peak_exact": mark.exact, "other_cores": other_cores(since)}


def time_decode(*, batch: int, heads: Sequence[Heads], head_dim: int, S: int, backend: str, calls: int, seed: int,
                q_block: int = 256, k_block: int = 256) -> list[dict[str, Any]]:
    """One query (T=1) against a KV cache of S keys, for each heads layout: median seconds per call, cache bytes.

    The layouts' calls alternate (MHA, GQA, MHA, ...), so that a slow moment of the machine falls on both.
    """
    import torch

    from llmlab.attention import attention

    kwargs: dict[str, Any] = {"causal": True, "backend": backend, **tiles(backend, q_block, k_block)}
    tensors = [make_inputs(batch=batch, heads=h, head_dim=head_dim, T=1, S=S, seed=seed)[:3] for h in heads]
    times: list[list[float]] = [[] for _ in heads]
    since = cpu_clock()
    with torch.no_grad():
        for i in range(3 + calls):  # 3 warm-up rounds
            for qkv, row in zip(tensors, times, strict=True):
                seconds = time_once(lambda qkv=qkv: attention(*qkv, **kwargs))
                if i >= 3:
                    row.append(seconds)
    busy = other_cores(since)
    return [{"heads": h.label, "n_heads": h.heads, "n_kv_heads": h.kv_heads, "backend": backend, "S": S,
             "seconds": statistics.median(t), "kv_cache_bytes": k.nbytes + v.nbytes, "other_cores": busy,
             "flops": attention_flops(batch=batch, heads=h.heads, q_len=1, kv_len=S, head_dim=head_dim)}
            for h, t, (_, k, v) in zip(heads, times, tensors, strict=True)]
