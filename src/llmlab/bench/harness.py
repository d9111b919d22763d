"""The measuring harness of `benchmarks/*.py` and `llmlab bench ...`: time, memory, machine, tables.

    time_call(fn, repeats=5, warmup=1)     -> Timing: every time, median / min / p95, CPU cores busy
    run_fresh_process(["-c", code])        -> FreshProcess: a new Python's output and peak RSS (wait4)
    run_in_fresh_process(fn, arg)          -> fn(arg) in a process forked from a clean fork server
    mark_rss() ... mark.extra_bytes()      -> peak extra memory inside a process (VmHWM - VmRSS)
    other_cores(since), least_disturbed    -> how busy the rest of the machine was; measure again if so
    machine_info(), load_average()         -> the header every result records (describe_*: in words)
    markdown_table(...), ratio(a, b)       -> tables with "1.23x" columns
    write_results(md, table, results)      -> table.md and table.json, each written atomically

Peak memory is Linux's: /proc/self/status (VmRSS, VmHWM) and ru_maxrss; elsewhere it raises.
Leaves out: GPU timing (synchronisation, CUDA events), CPU pinning, statistics beyond percentiles.
Nothing here imports torch at module import: `llmlab --help` must stay fast. Functions that need it
import it when called.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import multiprocessing
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from multiprocessing import forkserver
from pathlib import Path
from typing import Any

from llmlab.files import write_json_atomic, write_text_atomic

BUSY_CORES = 0.25  # a measurement taken while other processes kept more cores busy is taken again...
RETRIES = 2  # ...up to this many times (the least disturbed attempt is kept)

# ---------------------------------------------------------------------------------------------- time


def percentile(xs: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (NumPy's default): percentile([1, 2, 3, 4], 50) -> 2.5."""
    s = sorted(xs)
    pos = (len(s) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass(frozen=True)
class Timing:
    times: tuple[float, ...]  # seconds of each timed call, in order (warm-up calls not included)
    cores: float = 0.0  # CPU seconds (this process and its reaped children) per wall second
    value: Any = None  # what the last call returned

    @property
    def median(self) -> float:
        return percentile(self.times, 50)

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def p95(self) -> float:
        return percentile(self.times, 95)


def _cpu_seconds() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def time_once(fn: Callable[[], Any]) -> float:
    """Seconds of one call of fn (perf_counter)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_call(fn: Callable[[], Any], *, repeats: int = 1, warmup: int = 0) -> Timing:
    """`warmup` untimed calls, then `repeats` timed ones."""
    for _ in range(warmup):
        fn()
    times, cpu = [], _cpu_seconds()
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return Timing(tuple(times), (_cpu_seconds() - cpu) / max(sum(times), 1e-9), value)


def matmul_peak(n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """The machine's fp32 matmul rate: best of `repeats` torch.mm of n x n (2 n^3 FLOPs) after one warm-up."""
    import torch  # heavy: only the benchmarks that report % of peak need it

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    best = time_call(lambda: torch.mm(a, b), repeats=repeats, warmup=1).min
    return {"n": n, "seconds": best, "gflops": 2 * n**3 / best / 1e9}


# ---------------------------------------------------------------------------------------------- memory


def proc_status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS: resident now; VmHWM: the peak since start or reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status (peak memory needs Linux)")


@dataclass(frozen=True)
class RssMark:
    rss_bytes: int  # VmRSS when marked
    exact: bool  # VmHWM was reset to it; if not, VmHWM may be an earlier, larger peak (imports, warm-up)

    def extra_bytes(self) -> int:
        """Peak resident memory since the mark, above the resident memory at the mark."""
        return (proc_status_kb("VmHWM") - self.rss_bytes // 1024) * 1024


def mark_rss() -> RssMark:
    """Collect garbage, read VmRSS, reset VmHWM to it (/proc/self/clear_refs, Linux >= 4.0) where allowed."""
    gc.collect()
    rss = proc_status_kb("VmRSS") * 1024
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return RssMark(rss, True)
    except OSError:
        return RssMark(rss, False)


@dataclass(frozen=True)
class FreshProcess:
    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    peak_rss_bytes: int  # ru_maxrss from wait4: the largest of the process and its reaped children
    tree_peak_rss_bytes: int | None  # the summed RSS of the whole process tree, sampled; None if not asked

    def result(self, name: str = "the process") -> Any:
        """The last line of stdout as JSON (how a worker reports); RuntimeError with stderr's tail if it failed."""
        if self.returncode != 0:
            raise RuntimeError(f"{name} failed (exit {self.returncode}):\n{self.stderr[-3000:]}")
        return json.loads(self.stdout.strip().splitlines()[-1])


def _tree_rss(pid: int) -> int:
    """The summed RSS of the processes below `pid` (the launcher itself not counted)."""
    import psutil  # optional: only runs that sum the RSS of a process tree need it

    total = 0
    with contextlib.suppress(psutil.Error):  # a worker may exit between the calls
        for p in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
    return total


# subtle: ru_maxrss of a process counts the memory it had before its exec, and a child of a large
# process starts as (a copy of) that process: a child of a parent with torch imported reports the
# parent's 300+ MB. So the child is started by this tiny launcher, and the launcher reports the
# child's ru_maxrss (wait4) and exit code on a pipe.
_LAUNCHER = """import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
os.write(int(sys.argv[1]), f"{usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}".encode())
"""


def run_fresh_process(args: Sequence[str], *, env: dict[str, str] | None = None, timeout: float | None = None,
                      sample_tree: bool = False, poll_s: float = 0.01) -> FreshProcess:
    """`python args...` in a new interpreter; its output, wall time and peak RSS, read by the parent.

    The peak is ru_maxrss of that one process (and of its reaped children): an earlier, larger
    child does not mask it, as it would with getrusage(RUSAGE_CHILDREN). With sample_tree, the
    summed RSS of the child and its workers is also sampled every `poll_s` (psutil): the memory a
    multi-process trainer really holds. On timeout the whole process group is killed.
    """
    start = time.perf_counter()
    report_r, report_w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(report_w), sys.executable, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, pass_fds=(report_w,),
                            start_new_session=True)
    os.close(report_w)
    out: dict[str, str] = {}
    readers = [threading.Thread(target=lambda name=name, f=f: out.__setitem__(name, f.read()), daemon=True)
               for name, f in (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for r in readers:
        r.start()
    tree = 0
    while proc.poll() is None:
        if sample_tree:
            tree = max(tree, _tree_rss(proc.pid))
        if timeout is not None and time.perf_counter() - start > timeout:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)  # the launcher and the child: no orphan left computing
        time.sleep(poll_s)
    wall = time.perf_counter() - start
    with os.fdopen(report_r) as f:
        report = f.read().split()  # empty if the launcher was killed
    for r, f in zip(readers, (proc.stdout, proc.stderr), strict=True):
        r.join()
        f.close()  # type: ignore[union-attr]
    maxrss_kb, code = (int(report[0]), int(report[1])) if report else (0, proc.returncode)
    return FreshProcess(code, out["stdout"], out["stderr"], wall, maxrss_kb * 1024, tree if sample_tree else None)


def _child(fn: Callable[[Any], Any], arg: Any, conn: Any) -> None:
    try:
        conn.send(("ok", fn(arg)))
    except BaseException as e:  # a MemoryError, say: the result of this case, not the end of the run
        conn.send(("error", f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"))
    finally:
        conn.close()


def fork_server(preload: Sequence[str] = ()) -> Any:
    """The forkserver context; `preload`: modules its server imports once, when it starts (the first call)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(preload))
    return ctx


def start_fork_server(preload: Sequence[str] = ()) -> None:
    """Start the server now, so that its imports (seconds) overlap with the caller's work."""
    fork_server(preload)
    forkserver.ensure_running()


def run_in_fresh_process(fn: Callable[[Any], Any], arg: Any, *, preload: Sequence[str] = ()) -> Any:
    """fn(arg) in a new process forked from a server that has imported `preload` and run nothing.

    Forking this process would inherit its heap, its threads' state and its peak RSS; spawning
    costs seconds of imports per case. Raises RuntimeError if fn raised or the process died.
    As with any start method but fork, the calling script needs the `if __name__ == "__main__":`
    guard: the server's children import the main module.
    """
    ctx = fork_server(preload)
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(fn, arg, send))
    proc.start()
    send.close()
    try:
        status, value = recv.recv()
    except EOFError:  # killed: by the OOM killer, say
        proc.join()
        raise RuntimeError(f"the measuring process died (exit code {proc.exitcode})") from None
    except BaseException:  # Ctrl-C while waiting: do not leave a large case running
        proc.kill()
        proc.join()
        raise
    proc.join()
    if status != "ok":
        raise RuntimeError(value)
    return value


# ---------------------------------------------------------------------------------------------- the machine


def load_average() -> tuple[float, float, float]:
    """1-, 5- and 15-minute load averages (runnable processes, this run's own threads included)."""
    return os.getloadavg()


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


def least_disturbed(measure: Callable[[], dict[str, Any]], name: str, log: Callable[[str], None], *,
                    busy_cores: float = BUSY_CORES, retries: int = RETRIES, pause_s: float = 2.0) -> dict[str, Any]:
    """measure(), again (up to `retries` times) while others kept > busy_cores cores busy; the calmest result.

    measure() returns a dict with "other_cores". On a shared machine another job can make a case
    several times slower (on 2 cores, torch's threads then wait for each other).
    """
    best: dict[str, Any] | None = None
    for attempt in range(1 + retries):
        result = measure()
        if best is None or result["other_cores"] < best["other_cores"]:
            best = result
        if best["other_cores"] <= busy_cores:
            break
        if attempt < retries:
            log(f"{name}: other processes kept {result['other_cores']:.1f} cores busy; measuring again")
            time.sleep(pause_s)
    assert best is not None
    return best


def machine_info(packages: Sequence[str] = ("torch",)) -> dict[str, Any]:
    """date, cpu, cores (this process may use), python, versions of `packages`; torch's threads if imported."""
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor() or platform.machine())
    info: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu,
                            "cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
                            "versions": {name: _version(name) for name in packages}}
    if "torch" in sys.modules:  # not imported for this: the caller has set its threads already
        info["threads"] = sys.modules["torch"].get_num_threads()
    return info


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def describe_machine(info: dict[str, Any]) -> str:
    """`machine_info` in words: "2 cores (AMD EPYC 7B13), 2 torch threads, torch 2.5.1, Python 3.12.3"."""
    parts = [f"{info['cores']} cores ({info['cpu']})"]
    parts += [f"{info['threads']} torch threads"] if "threads" in info else []
    parts += [f"{name} {v}" for name, v in info["versions"].items()]
    return ", ".join([*parts, f"Python {info['python']}"])


def describe_load(start: float, end: float) -> str:
    """The 1-minute load averages around a run: "1-minute load average 0.4 at the start, 2.1 at the end"."""
    return f"1-minute load average {start:.1f} at the start, {end:.1f} at the end"


def log_with_elapsed() -> Callable[[str], None]:
    """A log to stderr that prefixes each line with the seconds since this call: `[  12.3s] message`."""
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    return log


# ---------------------------------------------------------------------------------------------- tables, files


def ratio(a: float | None, b: float | None, *, fmt: str = ".2f", suffix: str = "x") -> str:
    """a / b as a table cell: ratio(3, 2) -> "1.50x"; "-" when either is missing or b is 0."""
    return "-" if a is None or not b else f"{a / b:{fmt}}{suffix}"


def num(x: float) -> str:
    """Three significant digits without exponents: 1234.5 -> 1,235; 12.34 -> 12.3; 0.01234 -> 0.0123."""
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


_ALIGN = {"l": "---", "r": "---:", "c": ":--:"}


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[object]], *, align: str = "") -> str:
    """A markdown table; align has one letter per column, l (default), r or c.

    markdown_table(["a", "b"], [[1, "2.00x"]], align="lr") -> "| a | b |\\n|---|---:|\\n| 1 | 2.00x |"
    """
    def line(cells: Iterable[object]) -> str:
        return "|" + "|".join(f" {c} " if str(c) else " " for c in cells) + "|"  # an empty cell: "| |"

    align = align.ljust(len(columns), "l")
    return "\n".join([line(columns), "|" + "|".join(_ALIGN[a] for a in align) + "|", *map(line, rows)])


def write_results(md: str | os.PathLike[str], table: str, results: Any = None) -> None:
    """The table to `md` and, if given, the results as JSON beside it (same name, .json); each atomic."""
    write_text_atomic(md, table)
    if results is not None:
        write_json_atomic(Path(md).with_suffix(".json"), results)


def write_run_outputs(run: Any, ctx: Any, name: str, results: dict[str, Any],
                      format_table: Callable[..., str], plot: Callable[[dict[str, Any], Path], None]) -> None:
    """What every `llmlab bench NAME` run folder holds: table.md (also printed), results.json and NAME.png."""
    table = format_table(results, command=" ".join(("llmlab", *ctx.argv)) if ctx.argv else f"llmlab bench {name}")
    write_text_atomic(run.path("table.md"), table)
    write_json_atomic(run.path("results.json"), results)
    plot(results, run.path(f"{name}.png"))
    sys.stdout.write(table)
    run.log(f"wrote table.md, results.json and {name}.png to {run.dir}")
