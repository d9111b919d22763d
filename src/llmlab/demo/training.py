"""The demo's model: pretraining on the task-world corpus, then supervised fine-tuning on its chats.

Each stage is an ordinary run folder (`pretrain/`, `sft/`) trained through checkpoint.run_or_resume,
so an interrupted demo continues a stage from its last checkpoint. torch is imported inside the
functions: `llmlab demo --help` must not import it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from llmlab.demo.basics import one_line_prompt
from llmlab.demo.config import DemoConfig
from llmlab.runs import Run, read_metrics
from llmlab.train.config import PretrainConfig, PretrainDataConfig
from llmlab.viz.commands import model_attention
from llmlab.viz.training import loss_curves_png


def stage(run: Run, name: str, cfg: Any, train: Callable[..., Path], note: str = "") -> Path:
    """Train one sub-run `name` of the demo (kept when finished, resumed from its last checkpoint)."""
    from llmlab.train.checkpoint import run_or_resume

    return run_or_resume(run.dir / name, cfg, train, log=run.log, quiet=run.quiet, note=note)


def stage_pretrain(cfg: DemoConfig, run: Run) -> str:
    from llmlab.train.pretrain import pretrain
    from llmlab.viz.attention import attention_grid_png

    data = PretrainDataConfig(input=(str(run.dir / "data" / "pretrain.jsonl"),), tokenizer=str(run.dir / "tokenizer"),
                              cache_dir=str(run.dir / ".cache"))
    pcfg = PretrainConfig(model=cfg.model, train=replace(cfg.train, seed=cfg.seed, device=cfg.device), data=data)
    folder = stage(run, "pretrain", pcfg, pretrain)
    rows = read_metrics(folder / "metrics.jsonl")
    loss_curves_png(rows, run.path("pretrain/curves.png"), title="pretraining on the task-world corpus")
    train_rows = [r for r in rows if "loss" in r]
    val = [r for r in rows if "val_loss" in r]
    speed = sorted(r["tokens_per_s"] for r in train_rows[1:] or train_rows)
    mfu = sorted(r["mfu"] for r in train_rows[1:] or train_rows)
    for r in val:
        run.metrics(r["step"], stage="pretrain", val_loss=r["val_loss"], val_ppl=r["val_ppl"], val_bpb=r["val_bpb"])
    samples = [json.loads(line) for line in (folder / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    last = [x for x in samples if x["step"] == samples[-1]["step"]]
    weights, tokens = model_attention(str(folder), one_line_prompt(run))
    attention_grid_png(weights, tokens, run.path("pretrain/attention.png"),
                       title=f"trained {cfg.model.n_layers}-layer model on a held-out prompt")
    m, t = cfg.model, pcfg.train
    first, final = val[0], val[-1]
    verdict = ("falls" if final["val_bpb"] < first["val_bpb"] else "does NOT fall") + (
        f" from {first['val_bpb']:.3f} at step {first['step']} to {final['val_bpb']:.3f} at step {final['step']}")
    return "\n".join([
        "## Pretraining", "",
        f"A Llama-style model ({m.num_params() / 1e6:.2f}M parameters: d_model {m.d_model}, {m.n_layers} layers, "
        f"{m.n_heads} query / {m.kv_heads} key-value heads, SwiGLU, RoPE, RMSNorm) trained for {t.max_steps} steps "
        f"of {t.batch_size} x {t.seq_len} tokens on `data/pretrain.jsonl` with the stage-2 tokenizer. The run "
        "folder `pretrain/` is an ordinary `llmlab pretrain` run: `llmlab generate --model <run>/pretrain "
        "--prompt ...` continues text, `llmlab export-hf` makes it a transformers model.", "",
        f"**Effect on held-out text:** bits per byte on the validation split {verdict} "
        f"({t.eval_batches * t.batch_size * t.seq_len:,} held-out tokens per evaluation).", "",
        "| step | val loss | val perplexity | bits per byte |", "|---:|---:|---:|---:|",
        *(f"| {r['step']} | {r['val_loss']:.3f} | {r['val_ppl']:.1f} | {r['val_bpb']:.3f} |" for r in val), "",
        f"Throughput: median {speed[len(speed) // 2]:,.0f} tokens/s, MFU {mfu[len(mfu) // 2]:.1%} of this machine's "
        "measured matmul peak.", "",
        "![loss curves](pretrain/curves.png)", "",
        f"Greedy continuations of held-out openings after step {final['step']}:", "",
        *(f"- `{x['prompt']}` → `{x['completion'][:160]}`" for x in last), "",
        "Attention of the trained model on a held-out prompt (compare with the random model above):", "",
        "![trained attention](pretrain/attention.png)", "",
    ])


def stage_sft(cfg: DemoConfig, run: Run) -> str:
    from llmlab.align.config import ChatDataConfig, SFTConfig
    from llmlab.align.sft import sft

    scfg = SFTConfig(model=str(run.dir / "pretrain"), max_length=cfg.model.max_seq_len, loss_norm=cfg.sft_loss_norm,
                     train=replace(cfg.sft, seed=cfg.seed, device=cfg.device),
                     data=ChatDataConfig(input=(str(run.dir / "data" / "sft.jsonl"),), seed=cfg.seed))
    folder = stage(run, "sft", scfg, sft)
    rows = read_metrics(folder / "metrics.jsonl")
    evals = [r for r in rows if "eval_loss" in r]
    for r in evals:
        run.metrics(r["step"], stage="sft", eval_loss=r["eval_loss"])
    loss_curves_png([{**r, "val_loss": r["eval_loss"]} if "eval_loss" in r else r for r in rows],
                    run.path("sft/curves.png"), title="SFT: loss on the assistant's tokens")
    return "\n".join([
        "## Supervised fine-tuning", "",
        f"The pretrained model fine-tuned for {scfg.train.max_steps} steps of {scfg.train.batch_size} chats on "
        "`data/sft.jsonl` (loss on the assistant's tokens only"
        + (", each chat's mean weighing the same, so a one-token answer counts as much as a long refusal"
           if scfg.loss_norm == "sequence" else ", every token weighing the same") +
        "), into `sft/`. Its effect on held-out prompts "
        "(gold accuracy against the pretrained model) is in the evaluation below.", "",
        "| step | held-out loss on assistant tokens |", "|---:|---:|",
        *(f"| {r['step']} | {r['eval_loss']:.3f} |" for r in evals), "",
        "![SFT curves](sft/curves.png)", "",
    ])
