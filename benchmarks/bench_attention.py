"""Attention benchmark: llmlab's flash backend against PyTorch's sdpa and the naive oracle.

    .venv/bin/python benchmarks/bench_attention.py            # T = 256 ... 8192: several minutes
    .venv/bin/python benchmarks/bench_attention.py --quick    # T = 256 ... 1024: under a minute

Causal fp32 attention, B=1, H=8, D=64, MHA (8:8) and GQA (8:2). Correctness first: at each T,
before it is timed, sdpa's and flash's outputs (gradients up to T=1024, one-token decode) are
compared with naive's. Then, for each backend: forward and forward+backward time (median),
achieved GFLOP/s against the fp32 matmul peak measured in the same run, and peak extra memory
measured in a fresh process per case (VmHWM - VmRSS); one-token decode time for MHA and GQA and
the KV cache's bytes. The issue's targets are printed met / not met. The measuring code is
`llmlab.bench.attention` (also behind `llmlab bench attention`): its docstring says how, and
`llmlab.bench.harness` holds the timing, memory and table helpers every benchmark shares.

Writes benchmarks/results/attention.md (the table), attention.json (every row) and
attention.png (time and memory vs T, log-log); `attention_quick.*` with --quick. The exit status
is 1 when a correctness check fails; the tables are still written, marked.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from llmlab.bench.attention import run_benchmark
from llmlab.bench.attention_report import format_table, plot_results
from llmlab.bench.config import BenchAttentionConfig
from llmlab.bench.harness import log_with_elapsed, write_results

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T up to 1024 (under a minute)")
    parser.add_argument("--max-len", type=int, default=None, help="longest T (default 8192; 1024 with --quick)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (default 0: one per core); 1 is steadier on a busy machine")
    parser.add_argument("--out", type=Path, default=None,
                        help="markdown file; .json and .png go beside it (default benchmarks/results/"
                        "attention[_quick].md)")
    args = parser.parse_args(argv)
    cfg = BenchAttentionConfig(max_len=args.max_len or (1024 if args.quick else 8192), threads=args.threads)
    out = args.out or RESULTS / ("attention_quick.md" if args.quick else "attention.md")
    log = log_with_elapsed()
    results = run_benchmark(cfg, log=log)
    table = format_table(results, command=" ".join(["benchmarks/bench_attention.py", *argv]))
    write_results(out, table, results)
    plot_results(results, out.with_suffix(".png"))
    print(table)
    log(f"wrote {out} and its .json and .png")
    return 0 if all(c["ok"] for c in results["checks"]) else 1


if __name__ == "__main__":  # required: the measuring processes import this module as __mp_main__
    sys.exit(main())
