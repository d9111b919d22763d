"""AdamW with weight decay on weight matrices only, and one optimiser step with clipping.

Decay pulls weights towards zero; on a norm's gain or a bias that is a bias towards a
different function, not regularisation, and on embeddings it shrinks rare tokens' rows
(GPT-3, Llama and nanoGPT leave them undecayed). A parameter is decayed iff it is a matrix
that is not an embedding table. A tied output head shares the embedding's tensor and so
shares its group.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for p in model.parameters():  # each shared tensor once
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and id(p) not in embeddings else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_adamw(model: nn.Module, *, lr: float, weight_decay: float, betas: tuple[float, float],
                fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW over `param_groups`; the fused kernel on CUDA, the default (foreach) one elsewhere."""
    if fused is None:
        fused = next(model.parameters()).is_cuda
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, fused=fused or None)


def clip_and_step(model: nn.Module, optimizer: torch.optim.Optimizer, *, lr: float, grad_clip: float,
                  loss: float = 0.0) -> float:
    """Clip the global grad norm (if grad_clip > 0), set the lr, step, zero the grads; return the
    norm before clipping. A poisoned step (a non-finite norm, or a non-finite `loss`) is not taken:
    the grads are zeroed and the weights stay as they were."""
    params = [p for p in model.parameters() if p.grad is not None]
    max_norm = grad_clip if grad_clip > 0 else float("inf")
    norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    if math.isfinite(norm) and math.isfinite(loss):
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm
