"""Benchmark helpers shared by `benchmarks/*.py` and `llmlab bench ...`.

    harness            the measuring harness every benchmark uses: timings (median, min, p95),
                       peak RSS of fresh processes, machine and load header, ratio tables, results files
    attention          `llmlab bench attention`: its config, the run over all cases, the command
    attention_cases    what it measures: naive vs sdpa vs flash, correctness, then prefill
                       (forward, forward+backward) time and peak memory, and decode, MHA and GQA
    attention_report   the issue's targets, the markdown table and the plot

Cases return plain rows (dicts); the scripts and the commands only choose sizes and where the
files go. Nothing here imports torch at module import (`llmlab --help` stays fast).
"""
