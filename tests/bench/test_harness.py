"""The measuring harness (llmlab.bench.harness) against hand-computed cases. No timed assertions.

Percentiles interpolate linearly between closest ranks (NumPy's default): for n sorted values the
q-th percentile sits at position (n - 1) * q / 100.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from llmlab.bench.harness import (
    FreshProcess,
    Timing,
    describe_load,
    describe_machine,
    least_disturbed,
    load_average,
    machine_info,
    mark_rss,
    markdown_table,
    num,
    percentile,
    ratio,
    run_fresh_process,
    time_call,
    write_results,
)

MiB = 2**20


def test_percentiles_by_hand() -> None:
    """[1..20]: median at position 9.5 -> (10 + 11) / 2 = 10.5; p95 at 18.05 -> 19 + 0.05 * (20 - 19) = 19.05.
    [3, 1, 2]: sorted [1, 2, 3], median 2; p95 at 1.9 -> 2 + 0.9 = 2.9. One value: every percentile is it."""
    xs = [float(i) for i in range(20, 0, -1)]
    assert percentile(xs, 50) == 10.5
    assert percentile(xs, 95) == pytest.approx(19.05)
    assert percentile(xs, 0) == 1.0 and percentile(xs, 100) == 20.0
    t = Timing((3.0, 1.0, 2.0))
    assert (t.median, t.min, t.p95) == (2.0, 1.0, pytest.approx(2.9))
    assert Timing((0.5,)).median == Timing((0.5,)).p95 == 0.5


def test_time_call_counts_warmup_and_repeats_and_keeps_the_last_value() -> None:
    calls: list[int] = []

    def fn() -> int:
        calls.append(len(calls))
        return len(calls)

    t = time_call(fn, repeats=4, warmup=2)
    assert len(calls) == 6 and len(t.times) == 4
    assert t.value == 6  # the last timed call's result
    assert all(s >= 0 for s in t.times) and t.cores >= 0


def test_ratio_and_num_cells() -> None:
    """3 / 2 = 1.5; 1 / 3 to 3 places = 0.333; 12345 / 10 with a thousands separator = 1,234 (1234.5 rounds to
    even); a missing or zero denominator is "-"."""
    assert ratio(3, 2) == "1.50x"
    assert ratio(1, 3, fmt=".3f", suffix="") == "0.333"
    assert ratio(12345, 10, fmt=",.0f") == "1,234x"
    assert ratio(1, None) == ratio(None, 1) == ratio(1, 0) == "-"
    assert (num(1234.5), num(12.34), num(1.234), num(0.01234)) == ("1,234", "12.3", "1.23", "0.0123")


def test_markdown_table_with_ratio_columns() -> None:
    rows = [["flash", 2.0, ratio(2.0, 1.0)], ["sdpa", 1.0, ratio(1.0, 1.0)]]
    table = markdown_table(["backend", "ms", "x sdpa"], rows, align="lrr")
    assert table == ("| backend | ms | x sdpa |\n"
                     "|---|---:|---:|\n"
                     "| flash | 2.0 | 2.00x |\n"
                     "| sdpa | 1.0 | 1.00x |")
    assert markdown_table(["a", "", "c"], [], align="c") == "| a | | c |\n|:--:|---|---|"


def test_fresh_process_peak_rss_of_a_200_mb_child_and_an_idle_one() -> None:
    """bytearray(b"\\x01") * n fills every page (bytearray(n) alone could map zero pages that are never touched)."""
    big = run_fresh_process(["-c", "x = bytearray(b'\\x01') * (200 * 2**20); print(len(x))"])
    idle = run_fresh_process(["-c", "print('{\"ok\": 1}')"])
    assert big.returncode == 0 and big.stdout.strip() == str(200 * MiB)
    assert big.peak_rss_bytes >= 200 * MiB
    assert idle.peak_rss_bytes < 100 * MiB  # a bare interpreter is ~10 MiB
    assert idle.result() == {"ok": 1} and idle.tree_peak_rss_bytes is None and idle.wall_s > 0


def test_fresh_process_samples_the_summed_rss_of_its_tree() -> None:
    pytest.importorskip("psutil")
    code = "import time; x = bytearray(b'\\x01') * (100 * 2**20); time.sleep(0.3)"
    run = run_fresh_process(["-c", code], sample_tree=True)
    assert run.returncode == 0 and run.tree_peak_rss_bytes is not None and run.tree_peak_rss_bytes >= 100 * MiB


def test_a_failing_fresh_process_raises_with_its_stderr() -> None:
    run = run_fresh_process(["-c", "import sys; sys.exit('no such case')"])
    assert run.returncode == 1
    with pytest.raises(RuntimeError, match="no such case"):
        run.result("worker")
    with pytest.raises(RuntimeError, match="exit -9"):
        run_fresh_process(["-c", "import time; time.sleep(30)"], timeout=0.2).result()


def test_mark_rss_sees_an_allocation_after_the_mark() -> None:
    mark = mark_rss()
    x = bytearray(b"\x01") * (50 * MiB)
    if mark.exact:  # where /proc/self/clear_refs may not be written, VmHWM is an earlier peak
        assert mark.extra_bytes() >= 45 * MiB
    del x


def test_load_average_and_machine_info() -> None:
    load = load_average()
    assert len(load) == 3 and all(isinstance(x, float) and x >= 0 for x in load)
    info = machine_info(packages=("pytest", "no-such-package-here"))
    assert info["cores"] >= 1 and info["versions"] == {"pytest": pytest.__version__, "no-such-package-here": None}
    assert info["python"] == ".".join(map(str, sys.version_info[:3]))
    words = describe_machine({**info, "cpu": "test cpu", "cores": 2, "threads": 1, "versions": {"torch": "2.0"},
                              "python": "3.12.0"})
    assert words == "2 cores (test cpu), 1 torch threads, torch 2.0, Python 3.12.0"
    assert describe_load(0.44, 2.05) == "1-minute load average 0.4 at the start, 2.0 at the end"


def test_a_disturbed_measurement_is_repeated_and_the_calmest_kept() -> None:
    busy = iter([1.5, 0.9, 1.2])  # other processes kept this many cores busy, attempt by attempt
    logged: list[str] = []
    row = least_disturbed(lambda: {"other_cores": next(busy)}, "case", logged.append, pause_s=0)
    assert row == {"other_cores": 0.9} and len(logged) == 2  # 1 + RETRIES attempts, all busy
    calm = iter([0.0, 5.0])
    assert least_disturbed(lambda: {"other_cores": next(calm)}, "case", logged.append, pause_s=0) == {"other_cores": 0.0}


def test_write_results_writes_the_table_and_the_json_beside_it(tmp_path: Path) -> None:
    write_results(tmp_path / "sub" / "bench.md", "| a |\n", {"rows": [1, math.pi]})
    assert (tmp_path / "sub" / "bench.md").read_text() == "| a |\n"
    assert json.loads((tmp_path / "sub" / "bench.json").read_text()) == {"rows": [1, math.pi]}
    write_results(tmp_path / "only.md", "x")
    assert not (tmp_path / "only.json").exists()
    assert FreshProcess(0, "a\n{\"x\": 2}\n", "", 0.1, 0, None).result() == {"x": 2}
