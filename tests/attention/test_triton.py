"""The triton backend: checked in Triton's CPU interpreter against the naive backend.

Triton kernels run on CUDA; TRITON_INTERPRET=1 runs the same kernel code on the CPU (with
NumPy), which is how this machine checks them. The variable must be set before triton is
imported, so the check runs in a subprocess. Skipped where triton is not installed (it is
not in the dev extra: the wheel is ~300 MB; `pip install 'llmlab[triton]'`).
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from llmlab.errors import UserError

CHECK = textwrap.dedent("""
    import torch
    from llmlab.attention import attention
    torch.manual_seed(0)
    cases = [  # (B, Hq, Hkv, T, S, D, kwargs)
        (2, 4, 4, 37, 37, 16, dict(causal=True)),          # MHA, odd length, prefill
        (2, 4, 2, 64, 64, 32, dict(causal=True)),          # GQA, even length
        (1, 4, 1, 1, 45, 16, dict(causal=True)),           # MQA, one-token decode
        (1, 4, 2, 5, 40, 16, dict(causal=True)),           # a chunk against a longer cache
        (1, 2, 2, 33, 33, 16, dict(causal=True, window=7)),
        (1, 2, 1, 20, 20, 16, dict(causal=False)),
        (1, 2, 1, 20, 20, 16, dict(causal=False, window=4)),
        (2, 2, 1, 30, 30, 16, dict(causal=True, padding=True)),  # row 1: first 20 keys padded
    ]
    worst = 0.0
    for B, Hq, Hkv, T, S, D, kw in cases:
        kpm = None
        if kw.pop("padding", False):
            kpm = torch.ones(B, S, dtype=torch.bool)
            kpm[1, :20] = False
        q = torch.randn(B, Hq, T, D, requires_grad=True)
        k = torch.randn(B, Hkv, S, D, requires_grad=True)
        v = torch.randn(B, Hkv, S, D, requires_grad=True)
        g = torch.randn(B, Hq, T, D)
        results = []
        for backend in ("triton", "naive"):
            out = attention(q, k, v, backend=backend, key_padding_mask=kpm, q_block=16, k_block=16, **kw)
            results.append((out, *torch.autograd.grad((out * g).sum(), (q, k, v))))
        for a, b in zip(*results):
            assert not a.isnan().any()
            worst = max(worst, float((a - b).abs().max()))
    assert worst < 1e-5, worst
    print(f"ok {len(cases)} cases, max abs err {worst:.2e}")
""")


def test_triton_kernels_match_naive_in_the_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok 8 cases")


def test_without_a_gpu_or_interpreter_the_backend_says_why(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    from llmlab.attention import attention

    q = torch.randn(1, 2, 8, 16)
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs the real kernel")
    with pytest.raises(UserError, match="triton backend needs"):
        attention(q, q, q, backend="triton")
