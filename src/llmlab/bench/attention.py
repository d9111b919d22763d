"""Attention benchmark: llmlab's flash backend against naive (the oracle) and PyTorch's sdpa.

Causal fp32 prefill at T = min_len, 2 min_len, ..., max_len, MHA (H:H) and GQA (H:Hkv), then
one-token decode against KV caches of the same lengths. In one run:

    1. matmul peak   best of 5 fp32 torch.mm of n x n (2 n^3 FLOPs): the 100% of the GFLOP/s columns
    2. correctness   at each T, before timing it: sdpa's and flash's outputs (and, up to
                     `check_grads_max_len`, the gradients of q, k, v; and one-token decode) against
                     naive's on the same inputs, max abs error
    3. prefill       each (heads, backend, T, forward | forward+backward) in a fresh process:
                     inputs, a warm-up call at T=64 (kernels paged in, threads started: not
                     counted), VmRSS read, peak reset (VmHWM, via /proc/self/clear_refs), the op
                     once: peak extra memory = VmHWM - VmRSS before. Then `repeats` timed runs
                     (1 when the first took over SLOW_S): the median
    4. decode        T=1 query against S keys: median of `decode_calls` calls, KV cache bytes

The fresh processes are forked from a multiprocessing fork server that has imported torch and
this module but run nothing, so each starts in milliseconds with an unused heap and no threads.

FLOPs count useful work: the forward does QK^T and PV for each visible (query, key) pair, two
matmuls of D multiply-adds at 2 FLOPs each, so causal prefill is 4 * B * H * D * T(T+1)/2. The
backward counts 2.5x the forward (FlashAttention-2's convention: dV, dP, dQ, dK and the
recomputed QK^T, 5 matmuls to the forward's 2), whatever a backend really computes (naive also
computes the masked half).

"forward" is inference (no grad). "forward+backward" makes q, k, v leaves that require grad,
runs the op and `out.backward(dout)`; its peak includes the three gradients.

Leaves out: GPUs, bf16/fp16, padding and window masks, batch sweeps, chunked prefill.
"""

from __future__ import annotations

import gc
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from llmlab.cli import Context
from llmlab.config import check, to_dict

if TYPE_CHECKING:
    import torch

MODES = ("fwd", "fwd+bwd")
MODE_NAMES = {"fwd": "forward", "fwd+bwd": "forward+backward"}
BACKWARD_FLOPS = 2.5  # backward FLOPs / forward FLOPs (FlashAttention-2's count)
SLOW_S = 2.0  # a case whose first run takes longer is timed once more, not `repeats` times
WARMUP_LEN = 64
OUT_TOL = 1e-4  # max abs error against naive, fp32
GRAD_TOL = 1e-3
DECODE_NOISE = 1.05  # "GQA decode not slower than MHA" allows 5% of timing noise
BUSY_CORES = 0.25  # a case measured while other processes kept more cores busy is measured again...
RETRIES = 2  # ...up to this many times (the least disturbed attempt is kept, and marked if still busy)
MiB = 2**20

# targets (from the issue)
MEMORY_VS_NAIVE, MEMORY_AT = 50, 8192  # flash's peak extra memory <= naive's / 50 at T = 8192
LINEAR_EXPONENT = 1.2  # "linear in T": peak(2T) / peak(T) <= 2^1.2 at the two largest T
FWD_VS_SDPA, FWD_VS_SDPA_FROM = 2.0, 2048
FWD_VS_NAIVE_FROM = 1024
FWD_BWD_VS_SDPA = 3.0


@dataclass(frozen=True)
class BenchAttentionConfig:
    """`llmlab bench attention`."""

    min_len: int = 256  # prefill lengths: min_len, 2 min_len, ... up to max_len
    max_len: int = 4096
    batch: int = 1
    heads: int = 8  # query heads; the MHA rows have as many key/value heads
    kv_heads: int = 2  # key/value heads of the GQA rows (= heads: MHA rows only)
    head_dim: int = 64
    backends: tuple[Literal["naive", "sdpa", "flash"], ...] = ("naive", "sdpa", "flash")
    repeats: int = 3  # timed runs per case after the first (memory) run; 1 when that took > 2 s
    decode_calls: int = 31  # decode: median of this many calls
    check_max_len: int = 8192  # outputs checked against naive at every T up to this
    check_grads_max_len: int = 1024  # gradients too, up to this T
    q_block: int = 256  # flash's tiles
    k_block: int = 256
    matmul_n: int = 2048  # the matmul peak: torch.mm of n x n
    threads: int = 0  # torch threads; 0: torch's default (one per core)
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.min_len >= 1, f"min_len must be at least 1, got {self.min_len}")
        check(self.max_len >= self.min_len, f"max_len ({self.max_len}) is below min_len ({self.min_len})")
        for name in ("batch", "heads", "kv_heads", "head_dim", "repeats", "decode_calls", "q_block", "k_block",
                     "matmul_n"):
            check(getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}")
        check(self.heads % self.kv_heads == 0, f"heads ({self.heads}) must be a multiple of kv_heads "
              f"({self.kv_heads})")
        check(self.threads >= 0, f"threads must be >= 0 (0: torch's default), got {self.threads}")
        check(len(self.backends) > 0, "backends is empty")
        check(len(set(self.backends)) == len(self.backends), f"a backend is given twice: {self.backends}")


# ---------------------------------------------------------------------------------------------- arithmetic

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


def matmul_peak(n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """The machine's fp32 matmul rate: best of `repeats` torch.mm of n x n after one warm-up."""
    import torch

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return {"n": n, "seconds": best, "gflops": 2 * n**3 / best / 1e9}


# ---------------------------------------------------------------------------------------------- inputs and ops

def make_inputs(*, batch: int, heads: Heads, head_dim: int, T: int, S: int, seed: int,
                requires_grad: bool = False) -> tuple[torch.Tensor, ...]:
    """q (B, H, T, D), k, v (B, Hkv, S, D), dout (B, H, T, D): seeded standard normal, fp32."""
    import torch

    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads.heads, T, head_dim, generator=g)
    k = torch.randn(batch, heads.kv_heads, S, head_dim, generator=g)
    v = torch.randn(batch, heads.kv_heads, S, head_dim, generator=g)
    dout = torch.randn(batch, heads.heads, T, head_dim, generator=g)
    for t in (q, k, v):
        t.requires_grad_(requires_grad)
    return q, k, v, dout


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


def tiles(backend: str, q_block: int, k_block: int) -> dict[str, int]:
    """The tile-size arguments of `attention`: only flash takes them."""
    return {"q_block": q_block, "k_block": k_block} if backend == "flash" else {}


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


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

def _proc_status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS: resident now; VmHWM: the peak since start or reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status (peak memory needs Linux)")


def cpu_clock() -> tuple[float, float, float]:
    """(wall seconds, CPU seconds used by all processes, CPU seconds used by this one) now; for `other_cores`."""
    ticks = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]  # "cpu  user nice system idle ..."
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, ticks)
    own = os.times()
    return (time.perf_counter(), (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"),
            own.user + own.system)


def other_cores(since: tuple[float, float, float]) -> float:
    """Cores that other processes kept busy on average since `since` (from `cpu_clock`).

    /proc/stat counts in clock ticks (10 ms), so two ticks of rounding are forgiven: over a 20 ms
    window the estimate is 0 unless others used more than that.
    """
    wall, machine, own = cpu_clock()
    others = (machine - since[1]) - (own - since[2]) - 2 / os.sysconf("SC_CLK_TCK")
    return max(0.0, others / max(wall - since[0], 1e-9))


def _reset_peak_rss() -> bool:
    """Set VmHWM to the current VmRSS (Linux >= 4.0); False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure_prefill(case: dict[str, Any]) -> dict[str, Any]:
    """Peak extra memory and median time of one case; run it in a fresh process (`run_in_fresh_process`).

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
    gc.collect()
    before_kb = _proc_status_kb("VmRSS")
    exact = _reset_peak_rss()  # subtle: otherwise VmHWM could be an earlier, larger peak (imports, warm-up)
    since = cpu_clock()
    first = _timed(op)
    peak_kb = _proc_status_kb("VmHWM")
    times = [_timed(op) for _ in range(case["repeats"] if first < SLOW_S else 1)]
    return {"seconds": statistics.median(times), "times": times, "first_s": first,
            "peak_extra_bytes": (peak_kb - before_kb) * 1024, "peak_exact": exact,
            "other_cores": other_cores(since)}


def _child(fn: Callable[[Any], Any], arg: Any, conn: Any) -> None:
    try:
        conn.send(("ok", fn(arg)))
    except BaseException as e:  # a MemoryError, say: the result of this case, not the end of the run
        conn.send(("error", f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"))
    finally:
        conn.close()


def _fresh_process_context() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    # the server imports these once, when it starts (the first call); each child has them for free.
    # subtle: the first backward with an explicit gradient imports sympy (torch's symbolic shapes): 0.7 s.
    ctx.set_forkserver_preload(["torch", "torch.fx.experimental.symbolic_shapes", "llmlab.attention.functional",
                                __name__])
    return ctx


def start_fork_server() -> None:
    """Start the server now, so that its imports (seconds) overlap with the caller's work."""
    from multiprocessing import forkserver

    _fresh_process_context()
    forkserver.ensure_running()


def run_in_fresh_process(fn: Callable[[Any], Any], arg: Any) -> Any:
    """fn(arg) in a new process forked from a server that has imported torch and llmlab, and run nothing.

    Forking this process would inherit its heap, its threads' state and its peak RSS; spawning
    costs seconds of imports per case. Raises RuntimeError if fn raised or the process died.
    As with any multiprocessing start method but fork, the calling script needs the
    `if __name__ == "__main__":` guard: the server's children import the main module.
    """
    ctx = _fresh_process_context()
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(fn, arg, send))
    proc.start()
    send.close()
    try:
        status, value = recv.recv()
    except EOFError:  # killed: by the OOM killer, say
        proc.join()
        raise RuntimeError(f"the measuring process died (exit code {proc.exitcode})") from None
    except BaseException:  # Ctrl-C while waiting: do not leave a naive T=8192 running
        proc.kill()
        proc.join()
        raise
    proc.join()
    if status != "ok":
        raise RuntimeError(value)
    return value


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
                seconds = _timed(lambda qkv=qkv: attention(*qkv, **kwargs))
                if i >= 3:
                    row.append(seconds)
    busy = other_cores(since)
    return [{"heads": h.label, "n_heads": h.heads, "n_kv_heads": h.kv_heads, "backend": backend, "S": S,
             "seconds": statistics.median(t), "kv_cache_bytes": k.nbytes + v.nbytes, "other_cores": busy,
             "flops": attention_flops(batch=batch, heads=h.heads, q_len=1, kv_len=S, head_dim=head_dim)}
            for h, t, (_, k, v) in zip(heads, times, tensors, strict=True)]


# ---------------------------------------------------------------------------------------------- the run

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

    start, load_start = time.perf_counter(), os.getloadavg()[0]
    peak = matmul_peak(cfg.matmul_n)
    log(f"fp32 matmul peak: {peak['gflops']:.1f} GFLOP/s (torch.mm {cfg.matmul_n}x{cfg.matmul_n}, "
        f"{torch.get_num_threads()} threads)")
    start_fork_server()  # its imports overlap with the first correctness checks, which are not timed
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
                        f"{_err(r['grad_err'])}, decode {_err(r['decode_err'])}: {'ok' if r['ok'] else 'MISMATCH'}")
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
                        row |= _least_disturbed(lambda case=case: run_in_fresh_process(measure_prefill, case),
                                                name, log)
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

            decode += _least_disturbed(measure_decode, f"S={T} {backend} decode", log)["rows"]
        log(f"T={T} decode: " + ", ".join(f"{r['heads']} {r['backend']} {r['seconds'] * 1e6:.0f} us"
                                          for r in decode if r["S"] == T))
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu, "cores": len(os.sched_getaffinity(0)),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "wall_s": time.perf_counter() - start, "load_start": load_start, "load_end": os.getloadavg()[0]}
    results = {"meta": meta, "config": to_dict(cfg), "matmul": peak, "checks": checks, "prefill": prefill,
               "decode": decode}
    results["targets"] = evaluate_targets(results)
    return results


def _least_disturbed(measure: Callable[[], dict[str, Any]], name: str, log: Callable[[str], None], *,
                     pause_s: float = 2.0) -> dict[str, Any]:
    """measure(), again (up to RETRIES times) while other processes kept > BUSY_CORES cores busy; the calmest.

    On a shared machine another job can make a case several times slower (on 2 cores, torch's
    threads then wait for each other); `other_cores` in each result says how busy the rest was.
    """
    best: dict[str, Any] | None = None
    for attempt in range(1 + RETRIES):
        result = measure()
        if best is None or result["other_cores"] < best["other_cores"]:
            best = result
        if best["other_cores"] <= BUSY_CORES:
            break
        if attempt < RETRIES:
            log(f"{name}: other processes kept {result['other_cores']:.1f} cores busy; measuring again")
            time.sleep(pause_s)
    assert best is not None
    return best


def _err(x: float | None) -> str:
    return "-" if x is None else f"{x:.1e}"


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

def _num(x: float) -> str:
    """Three significant digits without exponents: 1234.5 -> 1,235; 12.34 -> 12.3; 0.01234 -> 0.0123."""
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def _busy(row: dict[str, Any]) -> str:
    return "†" if row.get("other_cores", 0.0) > BUSY_CORES else ""


def _ok(met: bool | None) -> str:
    return "not measured" if met is None else "met" if met else "**not met**"


def format_table(results: dict[str, Any], *, command: str) -> str:
    """The results as markdown: run, correctness, prefill (per heads layout), decode, targets."""
    m, cfg, peak = results["meta"], results["config"], results["matmul"]
    lines = [
        "# Attention benchmark: naive vs sdpa vs flash", "",
        f"`{command}` on {m['date']}: {m['cores']} cores ({m['cpu']}), {m['threads']} torch threads, torch "
        f"{m['torch']}, Python {m['python']}; whole run {m['wall_s']:.0f} s; 1-minute load average "
        f"{m['load_start']:.1f} at the start, {m['load_end']:.1f} at the end (which counts this run's own "
        f"{m['threads']} threads). Other work on these cores makes timings noisier, and much slower with "
        "several threads: rerun on a quiet machine before comparing numbers.", "",
        f"Causal attention, fp32, B={cfg['batch']}, H={cfg['heads']}, D={cfg['head_dim']}; flash tiles "
        f"{cfg['q_block']}x{cfg['k_block']}. fp32 matmul peak, measured in this run (best of 5 torch.mm "
        f"{peak['n']}x{peak['n']}, 2n^3 FLOPs): **{peak['gflops']:.1f} GFLOP/s**; \"% peak\" below is against it.",
        "", "## Correctness (checked at each T before timing it)", "",
        f"Max abs error against naive on the same fp32 inputs; outputs within {OUT_TOL:g}, gradients of q, k, v "
        f"within {GRAD_TOL:g} (checked up to T={cfg['check_grads_max_len']}). Decode: one query against a KV "
        "cache of T keys.", "",
        "| heads | T | backend | output | gradients | decode output | |", "|---|---:|---|---:|---:|---:|---|",
    ]
    for c in results["checks"]:
        lines.append(f"| {c['heads']} | {c['T']} | {c['backend']} | {c['out_err']:.1e} | {_err(c['grad_err'])} | "
                     f"{_err(c['decode_err'])} | {'ok' if c['ok'] else '**MISMATCH**'} |")
    if not results["checks"]:
        lines.append("| - | - | - | - | - | - | not checked |")

    rows = {(r["heads"], r["backend"], r["T"], r["mode"]): r for r in results["prefill"]}
    for label in dict.fromkeys(r["heads"] for r in results["prefill"]):
        lines += ["", f"## Prefill, {label}", "",
                  "Time: median of the timed runs; GFLOP/s: useful FLOPs / time (backward = 2.5x forward); "
                  "x sdpa: time / sdpa's time. Peak: extra resident memory of the call in a fresh process; "
                  "x naive: peak / naive's peak.", "",
                  "| T | backend | fwd ms | fwd GFLOP/s (% peak) | fwd x sdpa | fwd+bwd ms | "
                  "fwd+bwd GFLOP/s (% peak) | fwd+bwd x sdpa | peak MiB fwd / fwd+bwd | x naive fwd / fwd+bwd |",
                  "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for (lab, backend, T, mode), r in rows.items():
            if lab != label or mode != "fwd":
                continue
            cells = []
            for mode_ in MODES:
                r = rows[(label, backend, T, mode_)]
                if "error" in r:
                    cells += ["failed", "-", "-"]
                    continue
                sdpa = rows.get((label, "sdpa", T, mode_), {}).get("seconds")
                cells += [_num(r["seconds"] * 1e3) + _busy(r), f"{_num(r['gflops'])} ({r['gflops'] / peak['gflops']:.0%})",
                          "-" if sdpa is None else f"{r['seconds'] / sdpa:.2f}x"]
            mems, vs_naive = [], []
            for mode_ in MODES:
                r = rows[(label, backend, T, mode_)]
                naive = rows.get((label, "naive", T, mode_), {}).get("peak_extra_bytes")
                mem = r.get("peak_extra_bytes")
                mems.append("-" if mem is None else _num(mem / MiB))
                vs_naive.append("-" if mem is None or not naive else f"{mem / naive:.3f}")
            lines.append(f"| {T} | {backend} | " + " | ".join(cells[:3]) + " | " + " | ".join(cells[3:]) +
                         f" | {' / '.join(mems)} | {' / '.join(vs_naive)} |")
        errors = [f"{r['backend']} {r['mode']} T={r['T']}: `{r['error']}`" for r in results["prefill"]
                  if r["heads"] == label and "error" in r]
        lines += ["", *[f"Failed: {e}" for e in errors]] if errors else []

    decode = results["decode"]
    kv_counts = sorted({r["n_kv_heads"] for r in decode}, reverse=True)
    labels = {r["n_kv_heads"]: r["heads"] for r in decode}
    lines += ["", "## Decode: one query against a KV cache of S keys", "",
              "Median of the calls, in microseconds; KV cache = K and V in fp32, 2 * Hkv * S * D * 4 bytes.", "",
              "| S | backend | " + " | ".join(f"{labels[kv]} us/token" for kv in kv_counts) +
              (" | GQA / MHA time | " if len(kv_counts) > 1 else " | ") +
              " | ".join(f"KV cache {labels[kv]} MiB" for kv in kv_counts) +
              (" | GQA / MHA bytes |" if len(kv_counts) > 1 else " |"),
              "|---:|---|" + "---:|" * (2 * len(kv_counts) + 2 * (len(kv_counts) > 1))]
    by_key = {(r["n_kv_heads"], r["backend"], r["S"]): r for r in decode}
    for r0 in (r for r in decode if r["n_kv_heads"] == kv_counts[0]):
        same = [by_key[(kv, r0["backend"], r0["S"])] for kv in kv_counts]
        cells = [_num(r["seconds"] * 1e6) + _busy(r) for r in same]
        if len(same) > 1:
            cells.append(f"{same[-1]['seconds'] / same[0]['seconds']:.2f}x")
        cells += [_num(r["kv_cache_bytes"] / MiB) for r in same]
        if len(same) > 1:
            cells.append(f"{same[-1]['kv_cache_bytes'] / same[0]['kv_cache_bytes']:.3f}")
        lines.append(f"| {r0['S']} | {r0['backend']} | " + " | ".join(cells) + " |")

    disturbed = [r for r in (*results["prefill"], *decode) if _busy(r)]
    if disturbed:
        lines += ["", f"† measured while other processes kept more than {BUSY_CORES} cores busy on average, even "
                  f"after {RETRIES} more tries ({len(disturbed)} rows): slower than on a quiet machine."]
    lines += ["", "## Targets", "", "| target | measured | |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | {_ok(t['met'])} |" for t in results["targets"]]
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

    from llmlab.viz.figures import save_figure

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
                 f"threads on {m['cores']} cores ({m['cpu']}), torch {m['torch']}")
    save_figure(fig, path)


# ---------------------------------------------------------------------------------------------- command

def bench_attention(cfg: BenchAttentionConfig, ctx: Context) -> int:
    """`llmlab bench attention`: table.md, results.json and attention.png in the run folder."""
    from llmlab.files import write_json_atomic, write_text_atomic
    from llmlab.runs import start_run

    run = start_run("bench-attention", cfg, out=ctx.out, quiet=ctx.quiet)
    results = run_benchmark(cfg, log=run.log)
    table = format_table(results, command=" ".join(("llmlab", *ctx.argv)) if ctx.argv else "llmlab bench attention")
    write_text_atomic(run.path("table.md"), table)
    write_json_atomic(run.path("results.json"), results)
    plot_results(results, run.path("attention.png"))
    sys.stdout.write(table)
    run.log(f"wrote table.md, results.json and attention.png to {run.dir}")
    return 0 if all(c["ok"] for c in results["checks"]) else 1
