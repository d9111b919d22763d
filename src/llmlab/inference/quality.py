"""Is the cheaper model still the model? A converted model measured against its original.

    held-out loss     the val split's cross-entropy, perplexity and bits per byte, computed as
                      `llmlab pretrain` computes them (train/pretrain.py `evaluate`), so the
                      original's row repeats its pretraining run's last eval row
    greedy agreement  greedy continuations of held-out prompts (the KV-cache Engine); the share
                      of positions where the model's token equals the original's
    top-1 agreement   over the held-out loss's positions, the share where the model's most likely
                      next token is the original's (teacher-forced: both read the same text)
    KV bytes/token    what one position costs in the KV cache (all layers, k and v)
    decode tokens/s   the Engine generating new tokens at a few batch sizes (prefill included)

Greedy agreement compares free-running continuations: after a first different token the two
continue from different prefixes, so it falls faster than the per-position top-1 agreement; it
is the number a user of `llmlab generate --temperature 0` sees, but on a few short prompts it is
noisy. Top-1 agreement counts thousands of positions, each read from the same prefix.

Left out: task accuracy, and timing on an idle machine: tokens/s are one machine's, measured
once (the median of a few runs), and move with its load.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from llmlab.inference.config import GQAEvalConfig
from llmlab.inference.gqa import kv_bytes_per_token
from llmlab.model.generate import Engine, SamplingConfig
from llmlab.model.llama import Transformer
from llmlab.train.batches import plan_batches
from llmlab.train.config import PretrainTrainConfig
from llmlab.train.distributed import DistInfo
from llmlab.train.precision import autocast_for
from llmlab.train.pretrain import evaluate
from llmlab.train.token_data import SequenceSampler, TokenFile


def greedy_agreement(reference: Sequence[Sequence[int]], other: Sequence[Sequence[int]]) -> float:
    """Share of positions where `other`'s token equals `reference`'s, over all continuations; a
    position one of them did not reach counts as different. [[1, 2, 3]] vs [[1, 5, 3]] -> 2/3."""
    total = sum(max(len(r), len(o)) for r, o in zip(reference, other, strict=True))
    same = sum(a == b for r, o in zip(reference, other, strict=True) for a, b in zip(r, o, strict=False))
    return same / total if total else 1.0


def top1_agreement(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Share of equal entries of two (N, T) tensors of argmax token ids."""
    return float((reference == other).float().mean())


@torch.no_grad()
def top1_tokens(model: Transformer, val: SequenceSampler, n_sequences: int, batch_size: int, autocast: Any,
                vocab_limit: int | None) -> torch.Tensor:
    """The model's most likely next token (below `vocab_limit`, as the Engine samples) at every position
    of the first `n_sequences` held-out sequences: (n_sequences, seq_len), on the CPU."""
    device, out = model.embed.weight.device, []
    for start in range(0, n_sequences, batch_size):
        x, _ = val.batch(start, min(batch_size, n_sequences - start))  # (b, T)
        with autocast:
            logits = model(x.to(device)).logits[..., :vocab_limit]  # (b, T, V')
        out.append(logits.argmax(dim=-1).cpu())  # (b, T)
    return torch.cat(out)


def held_out_prompts(tokens: Sequence[int], n: int, length: int) -> list[list[int]]:
    """`n` prompts of `length` tokens, evenly spaced over the held-out tokens."""
    stride = max((len(tokens) - length) // n, 1)
    return [[int(t) for t in tokens[i * stride: i * stride + length]] for i in range(n)
            if i * stride + length <= len(tokens)]


def greedy(model: Transformer, prompts: list[list[int]], new_tokens: int, vocab_limit: int | None) -> list[list[int]]:
    """Greedy continuations of exactly `new_tokens` tokens (no stop token: equal lengths compare)."""
    return Engine(model).generate(prompts, SamplingConfig(max_new_tokens=new_tokens, temperature=0.0,
                                                          vocab_limit=vocab_limit))


def decode_tokens_per_s(model: Transformer, prompts: list[list[int]], batch: int, new_tokens: int,
                        repeats: int) -> float:
    """New tokens per second of the Engine over `batch` prompts: one warm-up generation, then the median
    of `repeats` timed ones."""
    rows = [prompts[i % len(prompts)] for i in range(batch)]
    sampling = SamplingConfig(max_new_tokens=new_tokens, temperature=0.0)
    engine = Engine(model)
    cuda = model.embed.weight.device.type == "cuda"
    seconds = []
    for i in range(repeats + 1):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        engine.generate(rows, sampling)
        if cuda:
            torch.cuda.synchronize()
        if i:  # the first run warms caches and allocators
            seconds.append(time.perf_counter() - start)
    return batch * new_tokens / statistics.median(seconds)


@dataclass(frozen=True)
class Outputs:
    """What a model said on the held-out data: what the other models' agreement is measured against."""

    greedy: list[list[int]]  # continuations of the held-out prompts
    top1: torch.Tensor  # (N, T) most likely next tokens over the held-out loss's sequences


def measure(model: Transformer, *, name: str, val: SequenceSampler, val_file: TokenFile, train: PretrainTrainConfig,
            ev: GQAEvalConfig, prompts: list[list[int]], reference: Outputs | None,
            vocab_limit: int | None) -> tuple[dict[str, Any], Outputs]:
    """One row of the table, and the model's outputs. `reference`: the original's (None: this is the
    original, agreements 1)."""
    device = model.embed.weight.device
    tc = replace(train, eval_batches=ev.batches)
    plan = plan_batches(tc.batch_size, tc.micro_batch_size, 1)
    autocast = autocast_for(device, tc.dtype)
    loss = evaluate(model, val, tc, DistInfo(), device, plan.micro, autocast, val_file)
    model.eval()  # evaluate leaves a model in train mode
    outputs = Outputs(greedy(model, prompts, ev.new_tokens, vocab_limit),
                      top1_tokens(model, val, ev.batches * tc.batch_size, plan.micro, autocast, vocab_limit))
    ref = reference or outputs
    row: dict[str, Any] = {
        "model": name,
        "n_kv_heads": model.cfg.kv_heads,
        **{k: round(v, 4) for k, v in loss.items()},
        "top1_agreement": round(top1_agreement(ref.top1, outputs.top1), 4),
        "greedy_agreement": round(greedy_agreement(ref.greedy, outputs.greedy), 4),
        "kv_bytes_per_token": kv_bytes_per_token(model.cfg, model.embed.weight.element_size()),
    }
    for batch in ev.speed_batches:
        row[f"tokens_per_s_b{batch}"] = round(decode_tokens_per_s(model, prompts, batch, ev.speed_tokens,
                                                                  ev.repeats), 1)
    return row, outputs


def gate_failures(original: dict[str, Any], final: dict[str, Any], ev: GQAEvalConfig) -> list[str]:
    """What of the gate the final model misses (empty: it passes, or no gate was asked)."""
    failures = []
    ratio = final["val_ppl"] / original["val_ppl"]
    if ev.max_ppl_ratio is not None and ratio > ev.max_ppl_ratio:
        failures.append(f"perplexity {final['val_ppl']:.3f} is {ratio:.3f}x the original's {original['val_ppl']:.3f} "
                        f"(eval.max_ppl_ratio={ev.max_ppl_ratio})")
    if ev.min_agreement is not None and final["greedy_agreement"] < ev.min_agreement:
        failures.append(f"greedy agreement {final['greedy_agreement']:.3f} is below "
                        f"eval.min_agreement={ev.min_agreement}")
    if ev.min_top1_agreement is not None and final["top1_agreement"] < ev.min_top1_agreement:
        failures.append(f"top-1 agreement {final['top1_agreement']:.3f} is below "
                        f"eval.min_top1_agreement={ev.min_top1_agreement}")
    return failures


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table, ratios to the first (original) row beside perplexity and KV bytes."""
    base = rows[0]
    speed = [k for k in base if k.startswith("tokens_per_s_b")]
    head = ["model", "kv heads", "val loss", "ppl", "ppl ratio", "bits/byte", "top-1 agree", "greedy agree",
            "KV B/token", "KV ratio", *[f"tok/s b{k.removeprefix('tokens_per_s_b')}" for k in speed]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], r["n_kv_heads"], f"{r['val_loss']:.4f}", f"{r['val_ppl']:.3f}",
                 f"{r['val_ppl'] / base['val_ppl']:.3f}", f"{r['val_bpb']:.4f}", f"{r['top1_agreement']:.3f}",
                 f"{r['greedy_agreement']:.3f}",
                 r["kv_bytes_per_token"], f"{r['kv_bytes_per_token'] / base['kv_bytes_per_token']:.2f}",
                 *[f"{r[k]:.0f}" for k in speed]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"
