"""The induction micro-test of README.md: an llmlab Transformer trained on rows of random 16-token runs,
each repeated once; prints the loss on the repeated halves, which only copying makes predictable.
Usage:

    python induct.py D_MODEL N_LAYERS LR STEPS
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

from llmlab.model.config import ModelConfig
from llmlab.model.llama import Transformer

V, N, SEGMENTS = 256, 16, 4  # vocabulary, run length, runs per row


def batch(g: torch.Generator, size: int = 32) -> torch.Tensor:
    """Rows of SEGMENTS x [1, run, run] with each run N random tokens from 2..V-1."""
    rows = []
    for _ in range(size):
        row: list[int] = []
        for _ in range(SEGMENTS):
            run = torch.randint(2, V, (N,), generator=g).tolist()
            row += [1, *run, *run]
        rows.append(row)
    return torch.tensor(rows)


def main() -> None:
    d, layers, lr, steps = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=V, d_model=d, n_layers=layers, n_heads=4, n_kv_heads=2,
                                    max_seq_len=256))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    copied = torch.zeros(SEGMENTS * (1 + 2 * N) - 1, dtype=torch.bool)
    for s in range(SEGMENTS):  # targets of the second run after its first token (that one is not copyable)
        start = s * (1 + 2 * N)
        copied[start + N + 1: start + 2 * N] = True
    t0 = time.time()
    for i in range(steps + 1):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (i + 1) / 50)
        x = batch(g)
        logits = model(x[:, :-1]).logits
        ce = F.cross_entropy(logits.reshape(-1, V), x[:, 1:].reshape(-1), reduction="none").view(x.shape[0], -1)
        ce.mean().backward()
        opt.step()
        opt.zero_grad()
        if i % 100 == 0:
            print(i, f"copy-loss {ce[:, copied].mean():.2f}", f"{time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
