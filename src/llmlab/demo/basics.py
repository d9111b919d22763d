"""The stages before any training: the data, the tokenizer, attention checked and drawn, and the
gold scorers on reference policies (what the metrics measure before a model is trained).

Each stage is `(cfg, run) -> markdown section` and reads what earlier stages made from the run folder,
so a resumed demo needs nothing in memory. NumPy and torch are imported inside the functions:
`llmlab demo --help` must not import them.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Any

from llmlab.data.answers import REFUSALS
from llmlab.data.chat import CHAT_SPECIALS
from llmlab.data.config import GenerateConfig
from llmlab.data.corpora import GENERATORS
from llmlab.data.scoring import format_report, score_responses
from llmlab.data.tasks import FAMILIES, parse_task
from llmlab.demo.config import DemoConfig
from llmlab.files import write_json_atomic, write_jsonl_atomic
from llmlab.runs import Run, progress_bar
from llmlab.tokenizers.bpe_train import train_bpe
from llmlab.tokenizers.bytelevel import visible
from llmlab.viz.commands import embed, random_layers, toy_attention
from llmlab.viz.config import split_words
from llmlab.viz.figures import family_scores_chart


def data_rows(run: Run, kind: str) -> list[dict[str, Any]]:
    """The rows the data stage wrote to data/{kind}.jsonl."""
    path = run.dir / "data" / f"{kind}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def one_line_prompt(run: Run) -> str:
    """The first held-out prompt without a line break: the one whose tokens and attention the report shows."""
    return next(p for p in (row["prompt"] for row in data_rows(run, "eval")) if "\n" not in p)


def _generate(cfg: DemoConfig, kind: str, **kw: Any) -> GenerateConfig:
    return GenerateConfig(kind=kind, seed=cfg.seed, world=cfg.world, tasks=cfg.tasks, prefs=cfg.prefs, **kw)


def stage_data(cfg: DemoConfig, run: Run) -> str:
    plan = {
        "pretrain": _generate(cfg, "pretrain", chars=cfg.pretrain_chars),
        "sft": _generate(cfg, "sft", n=cfg.n_sft),
        "prefs": _generate(cfg, "prefs", n=cfg.n_prefs),
        "eval": _generate(cfg, "eval", n=cfg.n_eval),
    }
    lines = ["## Data", "", "| file | rows | split |", "|---|---:|---|"]
    for kind, gen_cfg in plan.items():
        path = run.path(f"data/{kind}.jsonl")
        rows = list(run.progress(GENERATORS[kind](gen_cfg), desc=f"data {kind}", unit="row"))
        write_jsonl_atomic(path, rows)
        lines.append(f"| `data/{kind}.jsonl` | {len(rows)} | {gen_cfg.resolved_split} |")
        run.log(f"data: wrote {len(rows)} {kind} rows to {path}")
        run.metrics(0, stage="data", kind=kind, rows=len(rows))
    lines += ["", "One held-out prompt per family, with its gold answer:", ""]
    shown: set[str] = set()
    for row in data_rows(run, "eval"):
        if row["family"] not in shown:
            shown.add(row["family"])
            prompt = row["prompt"].replace("\n", "\n    ")
            lines += [f"**{row['family']}**", "", f"    {prompt}", f"    -> {row['answer']}", ""]
    return "\n".join(lines)


def stage_tokenizer(cfg: DemoConfig, run: Run) -> str:
    docs = [row["text"] for row in data_rows(run, "pretrain")]
    vocab_size = cfg.model.vocab_size
    bar = progress_bar(total=vocab_size - 256 - len(CHAT_SPECIALS), desc="tokenizer merges", unit="merge",
                       quiet=run.quiet)
    start = time.perf_counter()
    tok = train_bpe(docs, vocab_size=vocab_size, special_tokens=CHAT_SPECIALS, pre_tokenizer=cfg.pre_tokenizer,
                    on_merge=lambda step, count: bar.update(1))
    seconds = time.perf_counter() - start
    bar.close()
    tok.save(run.path("tokenizer"))
    prompts = [row["prompt"] for row in data_rows(run, "eval")]
    n_bytes = sum(len(p.encode("utf-8")) for p in prompts)
    n_tokens = sum(len(ids) for ids in tok.encode_batch(prompts, num_workers=1))
    run.metrics(0, stage="tokenizer", merges=len(tok.merges), seconds=round(seconds, 3),
                bytes_per_token=n_bytes / n_tokens)
    run.log(f"tokenizer: {len(tok.merges)} merges in {seconds:.1f} s, {n_bytes / n_tokens:.2f} bytes/token on eval")
    sample = next(p for p in prompts if "\n" not in p)
    pieces = " | ".join(visible(tok.token_bytes(i)) for i in tok.encode(sample))
    longest = sorted((tok.token_bytes(256 + i) for i in range(len(tok.merges))), key=len, reverse=True)[:8]
    return "\n".join([
        "## Tokenizer", "",
        f"Byte-level BPE, `{cfg.pre_tokenizer}` pre-tokenizer, {tok.vocab_size} tokens ({len(tok.merges)} merges) trained in "
        f"{seconds:.1f} s on the pretraining corpus; saved as `tokenizer/tokenizer.json` (loads in HF "
        "`tokenizers` and `transformers`) with a readable `tokenizer/vocab.txt`.", "",
        f"Held-out eval prompts: {n_bytes / n_tokens:.2f} bytes per token ({n_tokens} tokens for {n_bytes} bytes).",
        "", f"How it splits `{sample}`:", "", f"    {pieces}", "",
        "Longest tokens: " + ", ".join(f"`{visible(t)}`" for t in longest), "",
    ])


def stage_attention(cfg: DemoConfig, run: Run) -> str:
    # NumPy and torch, and the modules on them: see the module docstring
    import numpy as np
    import torch

    from llmlab.attention import attention
    from llmlab.attention.reference import attention_mask, grouped_attention
    from llmlab.viz.attention import attention_grid_png, attention_html

    gen = torch.Generator().manual_seed(cfg.seed)
    rows = ["| backend | max abs error vs float64 NumPy (GQA 8:2, T=257, causal) | forward ms (T=1024, 8 heads, D=64) |",
            "|---|---:|---:|"]
    q, k, v = (torch.randn(1, h, 257, 32, generator=gen) for h in (8, 2, 2))
    ref, _ = grouped_attention(*(t.double().numpy() for t in (q, k, v)), attention_mask(257, 257))
    big = [torch.randn(1, 8, 1024, 64, generator=gen) for _ in range(3)]
    for backend in ("naive", "sdpa", "flash"):
        err = float(np.abs(attention(q, k, v, backend=backend).double().numpy() - ref).max())
        attention(*big, backend=backend)  # warm-up
        start = time.perf_counter()
        attention(*big, backend=backend)
        ms = (time.perf_counter() - start) * 1000
        rows.append(f"| {backend} | {err:.1e} | {ms:.0f} |")
        run.metrics(0, stage="attention", backend=backend, max_abs_err=err, forward_ms=round(ms, 1))
    prompt = one_line_prompt(run)
    tokens = split_words(prompt)
    weights = toy_attention(embed(tokens, seed=cfg.seed, d_model=64),
                            random_layers(seed=cfg.seed, n_layers=2, d_model=64), n_heads=4)
    title = f"random 2-layer, 4-head model on a held-out prompt (seed {cfg.seed})"
    attention_grid_png(weights, tokens, run.path("attention/attention.png"), title=title)
    attention_html(weights, tokens, run.path("attention/attention.html"), title=title)
    return "\n".join([
        "## Attention", "", *rows, "",
        "Attention maps of a random (untrained) model on a held-out prompt; in "
        "[the interactive attention maps](attention/attention.html) hover a token to see where each head looks.",
        "", "![attention maps](attention/attention.png)", "",
    ])


def stage_baselines(cfg: DemoConfig, run: Run) -> str:
    rng = random.Random(cfg.seed)
    tasks = [parse_task(row["prompt"]) for row in data_rows(run, "eval")]
    policies: dict[str, Callable[[Any], str]] = {
        "gold": lambda t: t.answer,
        "always_refuse": lambda t: REFUSALS[0],
        "compliant_wrong": lambda t: FAMILIES[t.family].wrong(t, rng),
    }
    reports = {name: score_responses((t.prompt, policy(t)) for t in tasks) for name, policy in policies.items()}
    write_json_atomic(run.path("baselines.json"), reports)
    family_scores_chart(reports, run.path("baselines.png"), title="Gold score per task family: reference policies")
    for step, (name, report) in enumerate(reports.items()):
        run.metrics(step, stage="baselines", policy=name, score=report["score"],
                    refusal_rate_unsafe=report["refusal_rate_unsafe"], over_refusal_rate=report["over_refusal_rate"])
    if reports["gold"]["score"] != 1.0:
        run.log(f"warning: gold responses scored {reports['gold']['score']:.3f}, not 1.0: a scorer is off")
    sections = ["## Baselines", "", "![scores per family](baselines.png)", ""]
    for name, report in reports.items():
        sections += [f"### {name}", "", format_report(report), ""]
    return "\n".join(sections)
