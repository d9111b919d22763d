"""Benchmark helpers shared by `benchmarks/*.py` and `llmlab bench ...`.

    attention   naive vs sdpa vs flash: correctness, then time, achieved GFLOP/s and peak
                memory of prefill (forward, forward+backward) and decode, MHA and GQA

Each module returns plain rows (dicts) and formats them as a markdown table; the scripts and
the commands only choose sizes and where the files go. Modules import torch on first use.
"""
