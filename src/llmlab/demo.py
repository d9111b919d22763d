"""`llmlab demo`: the whole lab on built-in data, end to end, into one run folder.

Each stage is a function `(cfg, run, state) -> markdown section`; the report is
their sections in order. Stages so far:

1. data: generate the task world's pretraining corpus, SFT chats, preference pairs and
   held-out eval prompts into `data/`, and show one sample per family;
2. tokenizer: train a byte-level BPE tokenizer on the pretraining corpus, save it as
   `tokenizer/` (HF tokenizer.json + vocab.txt) and show how it splits a held-out prompt;
3. attention: check the naive, sdpa and flash backends against the NumPy reference, time them,
   and draw the attention maps (PNG + HTML) of a held-out prompt through a random model;
4. baselines: score three reference policies with the gold scorers, to show what the
   metrics measure before any model is trained: `gold` (must score 1 everywhere: a
   live self-check of the scorers), `always_refuse` (perfectly safe, useless), and
   `compliant_wrong` (answers everything, plausibly and wrongly);
5. pretrain: train a small Llama-style model on the pretraining corpus with the stage-2
   tokenizer (`pretrain/`, an ordinary `llmlab pretrain` run folder), and show its loss
   curves, validation perplexity and bits per byte, greedy samples, and the attention
   maps of the trained model on the held-out prompt of stage 3;
6. sft: fine-tune it on the task world's chats (`sft/`, loss on assistant tokens only);
7. onpolicy: sample the SFT model's own answers to task-world train prompts and pair the best with
   the worst by the gold scorers (`onpolicy/prefs.jsonl`, `llmlab sample-prefs`); with
   n_onpolicy=0 the stage is skipped and DPO trains on the fixed pairs of `data/prefs.jsonl`;
8. dpo: align the SFT model with DPO (sigmoid, plus rpo_alpha times the chosen responses' NLL) on
   those pairs (`dpo/`), and show the held-out table of the SFT model against the aligned one: gold
   accuracy per family, refusal of unsafe requests, over-refusal of benign ones, and preference
   accuracy by implicit reward.

The stages import torch and NumPy, and the llmlab modules built on them, inside their functions:
`llmlab demo --print-config` and `--help` must not import them.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from llmlab.config import check
from llmlab.context import Context
from llmlab.data.answers import REFUSALS
from llmlab.data.chat import CHAT_SPECIALS
from llmlab.data.config import GenerateConfig, PrefsConfig, TaskConfig, WorldConfig
from llmlab.data.corpora import GENERATORS
from llmlab.data.scoring import format_report, score_responses
from llmlab.data.tasks import FAMILIES, parse_task
from llmlab.files import write_json_atomic, write_jsonl_atomic, write_text_atomic
from llmlab.model.config import ModelConfig
from llmlab.runs import Run, progress_bar, read_metrics, start_run
from llmlab.tokenizers.bpe_train import train_bpe
from llmlab.tokenizers.bytelevel import visible
from llmlab.train.config import PretrainConfig, PretrainDataConfig, PretrainTrainConfig, TrainConfig
from llmlab.viz.commands import embed, model_attention, random_layers, toy_attention
from llmlab.viz.config import split_words
from llmlab.viz.figures import family_scores_chart
from llmlab.viz.training import loss_curves_png

# Sized to train in a few minutes on 2 CPU cores; the same stage runs bigger models on a GPU.
DEMO_MODEL = ModelConfig(vocab_size=1024, d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, max_seq_len=256)
DEMO_TRAIN = PretrainTrainConfig(max_steps=400, batch_size=16, seq_len=128, lr=3e-3, warmup_steps=40, eval_every=100,
                                eval_batches=4, checkpoint_every=100, log_every=10, sample_tokens=40)
DEMO_SFT = TrainConfig(max_steps=300, batch_size=16, lr=1e-3, warmup_steps=20, weight_decay=0.0, eval_every=100,
                       eval_batches=4, log_every=10, checkpoint_every=0)
# On-policy pairs + RPO at lr 1e-4 / beta 0.1: the setting that raised gold accuracy and refusals in
# docs/alignment.md ("The task-world experiment"); fixed pairs at lr 5e-4 collapsed this model.
DEMO_DPO = TrainConfig(max_steps=150, batch_size=16, lr=1e-4, warmup_steps=10, weight_decay=0.0, min_lr_ratio=0.0,
                       eval_every=0, log_every=5, checkpoint_every=0)


@dataclass(frozen=True)
class DemoConfig:
    seed: int = 0
    pretrain_chars: int = 1_000_000
    n_sft: int = 2000
    n_prefs: int = 2000
    n_eval: int = 450
    model: ModelConfig = DEMO_MODEL  # model.vocab_size is also the tokenizer's size
    train: PretrainTrainConfig = DEMO_TRAIN
    sft: TrainConfig = DEMO_SFT
    dpo: TrainConfig = DEMO_DPO
    beta: float = 0.1  # DPO's beta
    rpo_alpha: float = 1.0  # weight of the chosen responses' NLL in the DPO loss (RPO)
    n_onpolicy: int = 600  # train prompts whose sampled answers make the DPO pairs; 0: the fixed pairs
    samples: int = 4  # answers sampled per on-policy prompt
    n_eval_prompts: int = 180  # held-out prompts answered by the SFT and the DPO model
    n_eval_pairs: int = 200  # held-out preference pairs scored by implicit reward
    world: WorldConfig = field(default_factory=WorldConfig)
    tasks: TaskConfig = field(default_factory=TaskConfig)
    prefs: PrefsConfig = field(default_factory=PrefsConfig)

    def __post_init__(self) -> None:
        check(self.n_onpolicy >= 0, f"n_onpolicy must be >= 0, got {self.n_onpolicy}")
        for name in ("pretrain_chars", "n_sft", "n_prefs", "n_eval"):
            check(getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}")
        check(self.model.vocab_size >= 256 + len(CHAT_SPECIALS),
              f"model.vocab_size must be at least 256 bytes + {len(CHAT_SPECIALS)} special tokens")


Stage = Callable[[DemoConfig, Run, dict[str, Any]], str]


def _generate(cfg: DemoConfig, kind: str, **kw: Any) -> GenerateConfig:
    return GenerateConfig(kind=kind, seed=cfg.seed, world=cfg.world, tasks=cfg.tasks, prefs=cfg.prefs, **kw)


def stage_data(cfg: DemoConfig, run: Run, state: dict[str, Any]) -> str:
    plan = {
        "pretrain": _generate(cfg, "pretrain", chars=cfg.pretrain_chars),
        "sft": _generate(cfg, "sft", n=cfg.n_sft),
        "prefs": _generate(cfg, "prefs", n=cfg.n_prefs),
        "eval": _generate(cfg, "eval", n=cfg.n_eval),
    }
    lines = ["## Data", "", f"Task world (every stage's prompts, training and held-out alike): {cfg.tasks.describe()}.",
             "",
             "| file | rows | split |", "|---|---:|---|"]
    for kind, gen_cfg in plan.items():
        path = run.path(f"data/{kind}.jsonl")
        rows = list(run.progress(GENERATORS[kind](gen_cfg), desc=f"data {kind}", unit="row"))
        write_jsonl_atomic(path, rows)
        state[kind] = rows
        lines.append(f"| `data/{kind}.jsonl` | {len(rows)} | {gen_cfg.resolved_split} |")
        run.log(f"data: wrote {len(rows)} {kind} rows to {path}")
        run.metrics(0, stage="data", kind=kind, rows=len(rows))
    lines += ["", "One held-out prompt per family, with its gold answer:", ""]
    shown: set[str] = set()
    for row in state["eval"]:
        if row["family"] not in shown:
            shown.add(row["family"])
            prompt = row["prompt"].replace("\n", "\n    ")
            lines += [f"**{row['family']}**", "", f"    {prompt}", f"    -> {row['answer']}", ""]
    return "\n".join(lines)


def stage_tokenizer(cfg: DemoConfig, run: Run, state: dict[str, Any]) -> str:
    docs = [row["text"] for row in state["pretrain"]]
    vocab_size = cfg.model.vocab_size
    bar = progress_bar(total=vocab_size - 256 - len(CHAT_SPECIALS), desc="tokenizer merges", unit="merge",
                       quiet=run.quiet)
    start = time.perf_counter()
    tok = train_bpe(docs, vocab_size=vocab_size, special_tokens=CHAT_SPECIALS,
                    on_merge=lambda step, count: bar.update(1))
    seconds = time.perf_counter() - start
    bar.close()
    tok.save(run.path("tokenizer"))
    state["tokenizer"] = tok
    prompts = [row["prompt"] for row in state["eval"]]
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
        f"Byte-level BPE, GPT-2 pre-tokenizer, {tok.vocab_size} tokens ({len(tok.merges)} merges) trained in "
        f"{seconds:.1f} s on the pretraining corpus; saved as `tokenizer/tokenizer.json` (loads in HF "
        "`tokenizers` and `transformers`) with a readable `tokenizer/vocab.txt`.", "",
        f"Held-out eval prompts: {n_bytes / n_tokens:.2f} bytes per token ({n_tokens} tokens for {n_bytes} bytes).",
        "", f"How it splits `{sample}`:", "", f"    {pieces}", "",
        "Longest tokens: " + ", ".join(f"`{visible(t)}`" for t in longest), "",
    ])


def stage_attention(cfg: DemoConfig, run: Run, state: dict[str, Any]) -> str:
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
    prompt = next(p for p in (row["prompt"] for row in state["eval"]) if "\n" not in p)
    tokens = split_words(prompt)
    weights = toy_attention(embed(tokens, seed=cfg.seed, d_model=64),
                            random_layers(seed=cfg.seed, n_layers=2, d_model=64), n_heads=4)
    title = f"random 2-layer, 4-head model on a held-out prompt (seed {cfg.seed})"
    attention_grid_png(weights, tokens, run.path("attention/attention.png"), title=title)
    attention_html(weights, tokens, run.path("attention/attention.html"), title=title)
    return "\n".join([
        "## Attention", "", *rows, "",
        "Attention maps of a random (untrained) model on a held-out prompt: `attention/attention.html` lets "
        "you hover a token to see where each head looks.", "", "![attention maps](attention/attention.png)", "",
    ])


def stage_baselines(cfg: DemoConfig, run: Run, state: dict[str, Any]) -> str:
    rng = random.Random(cfg.seed)
    tasks = [parse_task(row["prompt"]) for row in state["eval"]]
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


def stage_pretrain(cfg: DemoConfig, run: Run, state: dict[str, Any]) -> str:
    # torch and NumPy: see the module docstring
    from llmlab.train.pretrain import pretrain
    from llmlab.viz.attention import attention_grid_png

    data = PretrainDataConfig(input=(str(run.dir / "data" / "pretrain.jsonl"),), tokenizer=str(run.dir / "tokenizer"),
                              cache_dir=str(run.dir / ".cache"))
    pcfg = PretrainConfig(model=cfg.model, train=replace(cfg.train, seed=cfg.seed), data=data)
    folder = pretrain(pcfg, out=run.dir / "pretrain", quiet=run.quiet)
    rows = read_metrics(folder / "metrics.jsonl")
    loss_curves_png(rows, run.path("pretrain/curves.png"), title="pretraining on the task-world corpus")
    train_rows = [r for r in rows if "loss" in r]
    val = [r for r in rows if "val_loss" in r]
    speed = sorted(r["tokens_per_s"] for r in train_rows[1:] or train_rows)
    mfu = sorted(r["mfu"] for r in train_rows[1:] or train_rows)
    final = val[-1]
    for r in val:
        run.metrics(r["step"], stage="pretrain", val_loss=r["val_loss"], val_ppl=r["val_ppl"], val_bpb=r["val_bpb"])
    samples = [json.loads(line) for line in (folder / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    last = [x for x in samples if x["step"] == samples[-1]["step"]]
    prompt = next(p for p in (row["prompt"] for row in state["eval"]) if "\n" not in p)
    weights, tokens = model_attention(str(folder), prompt)
    attention_grid_png(weights, tokens, run.path("pretrain/attention.png"),
                       title=f"trained {cfg.model.n_layers}-layer model on a held-out prompt")
    m, t = cfg.model, pcfg.train
    lines = [
        "## Pretraining", "",
        f"A Llama-style model ({m.num_params() / 1e6:.2f}M parameters: d_model {m.d_model}, {m.n_layers} layers, "
        f"{m.n_heads} query / {m.kv_heads} key-value heads, SwiGLU, RoPE, RMSNorm) trained for {t.max_steps} steps "
        f"of {t.batch_size} x {t.seq_len} tokens on `data/pretrain.jsonl` with the stage-2 tokenizer. The run "
        "folder `pretrain/` is an ordinary `llmlab pretrain` run: `llmlab generate --model <run>/pretrain "
        "--prompt ...` continues text, `llmlab export-hf` makes it a transformers model.", "",
        "| step | val loss | val perplexity | bits per byte |", "|---:|---:|---:|---:|",
        *(f"| {r['step']} | {r['val_loss']:.3f} | {r['val_ppl']:.1f} | {r['val_bpb']:.3f} |" for r in val), "",
        f"Throughput: median {speed[len(speed) // 2]:,.0f} tokens/s, MFU {mfu[len(mfu) // 2]:.1%} of this machine's "
        "measured matmul peak.", "",
        "![loss curves](pretrain/curves.png)", "",
        f"Greedy continuations of held-out openings after step {final['step']}:", "",
        *(f"- `{x['prompt']}` → `{x['completion'][:160]}`" for x in last), "",
        "Attention of the trained model on a held-out prompt (compare with the random model above):", "",
        "![trained attention](pretrain/attention.png)", "",
    ]
    state["pretrain_dir"] = folder
    return "\n".join(lines)


def stage_sft(cfg: DemoConfig, run: Run, state: dict[str, Any]) -> str:
    # torch: see the module docstring
    from llmlab.align.config import ChatDataConfig, SFTConfig
    from llmlab.align.sft import sft

    max_length = cfg.model.max_seq_len
    scfg = SFTConfig(model=str(state["pretrain_dir"]), max_length=max_length, train=replace(cfg.sft, seed=cfg.seed),
                     data=ChatDataConfig(input=(str(run.dir / "data" / "sft.jsonl"),), seed=cfg.seed))
    folder = sft(scfg, out=run.dir / "sft", quiet=run.quiet)
    evals = [r for r in read_metrics(folder / "metrics.jsonl") if "eval_loss" in r]
    for r in evals:
        run.metrics(r["step"], stage="sft", eval_loss=r["eval_loss"])
    state["sft_dir"] = folder
    return "\n".join([
        "## Supervised fine-tuning", "",
        f"The pretrained model fine-tuned for {scfg.train.max_steps} steps on `data/sft.jsonl` (loss on the "
        "assistant's tokens only), into `sft/`.", "",
        "| step | held-out loss on assistant tokens |", "|---:|---:|",
        *(f"| {r['step']} | {r['eval_loss']:.3f} |" for r in evals), "",
    ])


def stage_onpolicy(cfg: DemoConfig, run: Run, state: dict[str, Any]) -> str:
    # torch: see the module docstring
    from llmlab.align.config import SamplePrefsConfig
    from llmlab.align.onpolicy import sample_prefs

    if not cfg.n_onpolicy:
        state["dpo_pairs"] = run.dir / "data" / "prefs.jsonl"
        return ""
    scfg = SamplePrefsConfig(model=str(state["sft_dir"]), n=cfg.n_onpolicy, seed=cfg.seed, tasks=cfg.tasks,
                             samples=cfg.samples,
                             temperature=0.8, max_new_tokens=min(64, cfg.model.max_seq_len // 2))
    folder = sample_prefs(scfg, out=run.dir / "onpolicy", quiet=run.quiet)
    state["dpo_pairs"] = folder / "prefs.jsonl"
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    run.metrics(0, stage="onpolicy", pairs=summary["pairs"], mean_score=summary["mean_score"])
    return "\n".join([
        "## On-policy preference pairs", "",
        f"The SFT model answered {summary['prompts']} train-split prompts {cfg.samples} times each (temperature "
        f"0.8); the gold scorers ranked the answers and the best was paired with the worst: {summary['pairs']} pairs "
        f"in `onpolicy/prefs.jsonl`, {summary['chosen_from_gold']} of them with the gold response as chosen (no "
        f"sampled answer was right), {summary['no_pair']} prompts without a pair (all answers scored alike).", "",
        "| family | mean gold score of the sampled answers |", "|---|---:|",
        *(f"| {name} | {v['mean_score']:.3f} |" for name, v in summary["families"].items()), "",
    ])


def stage_dpo(cfg: DemoConfig, run: Run, state: dict[str, Any]) -> str:
    # torch: see the module docstring
    from llmlab.align.config import DPOConfig, PairDataConfig, PrefEvalConfig
    from llmlab.align.dpo_train import dpo
    from llmlab.eval.prefs import finish_dpo_run

    max_length = cfg.model.max_seq_len
    pairs = state["dpo_pairs"]
    dcfg = DPOConfig(model=str(state["sft_dir"]), beta=cfg.beta, rpo_alpha=cfg.rpo_alpha, max_length=max_length,
                     max_prompt_length=max_length * 3 // 4, reference="precompute",
                     train=replace(cfg.dpo, seed=cfg.seed),
                     data=PairDataConfig(input=(str(pairs),), seed=cfg.seed, tasks=cfg.tasks),  # 5% held out
                     eval=PrefEvalConfig(n_prompts=cfg.n_eval_prompts, n_pairs=cfg.n_eval_pairs, seed=cfg.seed,
                                         tasks=cfg.tasks))
    folder = dpo(dcfg, out=run.dir / "dpo", quiet=run.quiet)
    finish_dpo_run(dcfg, folder, quiet=run.quiet)
    lines = (folder / "eval.md").read_text(encoding="utf-8").splitlines()
    table = "\n".join(line for line in lines if not line.startswith("# "))  # its title: this section's own
    curves = [p.name for p in folder.glob("*.png")]
    return "\n".join([
        "## Preference optimisation (DPO)", "",
        f"The SFT model aligned with DPO (sigmoid loss, beta {cfg.beta}, plus {cfg.rpo_alpha} x the chosen "
        f"responses' NLL; {dcfg.train.max_steps} steps of {dcfg.train.batch_size} pairs; the SFT model as the "
        f"frozen reference, precomputed) on `{pairs.relative_to(run.dir)}`, into `dpo/`. Held-out evaluation on "
        "the task world's eval split, SFT (base) against DPO (aligned):", "",
        table, "",
        *(f"![{name}](dpo/{name})" for name in curves), "",
    ])


STAGES: tuple[tuple[str, Stage], ...] = (
    ("data", stage_data),
    ("tokenizer", stage_tokenizer),
    ("attention", stage_attention),
    ("baselines", stage_baselines),
    ("pretrain", stage_pretrain),
    ("sft", stage_sft),
    ("onpolicy", stage_onpolicy),
    ("dpo", stage_dpo),
)


def run(cfg: DemoConfig, ctx: Context) -> int:
    out = start_run("demo", cfg, out=ctx.out, quiet=ctx.quiet)
    state: dict[str, Any] = {}
    sections = ["# llmlab demo", "", f"Run folder: `{out.dir}`; config: `config.yaml`.", ""]
    for name, stage in STAGES:
        out.log(f"stage {name} ...")
        sections.append(stage(cfg, out, state))
        write_text_atomic(out.dir / "report.md", "\n".join(sections) + "\n")
    print(f"demo finished: report at {out.dir / 'report.md'}", file=sys.stdout)
    return 0

