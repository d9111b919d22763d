"""DPO benchmark: `llmlab dpo` against TRL's `DPOTrainer` on the same model and the same preference data.

    .venv/bin/python benchmarks/bench_dpo.py --quick   # the ~5M config, few steps
    .venv/bin/python benchmarks/bench_dpo.py           # ~5M and ~30M configs

One seeded llmlab model per config is saved twice: as an llmlab folder (`save_model`) for llmlab and
as an HF Llama folder (`export_hf`, with llmlab's chat template) for TRL. The data is 2,000 task-world
pairs whose prompts are several task prompts joined so that a pair is ~200-250 tokens, written once as
conversational JSONL (TRL applies the chat template, llmlab its ChatTokenizer: the same ids but for
the newline TRL's template adds after each response's <|end|>).

Correctness first, in this process (5M): TRL tokenizes and collates one batch of 8 pairs; its
`compute_loss` and llmlab's `forward_sequences` + `preference_loss` on the same ids give the same
loss (sigmoid, beta 0.1, reference = policy + noise), to 1e-5.

Then each case runs in its own subprocess (its peak RSS is its own): batch 8 pairs, max_length 256,
fp32 AdamW, one torch thread, no evaluation or checkpoints inside the timed steps:
    start-up   process start -> the first step begins: imports, model(s) loaded, the 2,000 pairs
               tokenized (TRL: datasets.map; llmlab: encode_pairs), reference log-probs precomputed
               where asked
    step       median seconds per optimizer step, the first step excluded
    peak RSS   the process's peak resident memory (ru_maxrss, read by this process)
Cases: llmlab (reference copy), TRL (reference model), llmlab (reference precompute, on the first 128
pairs only: a reference pass over all 2,000 takes ~8 minutes for the 5M model on one CPU thread, which
is start-up that the precompute mode pays once, here left out so that the case measures memory).

Writes benchmarks/results/dpo.md and dpo.json (`dpo_quick.*` with --quick). On a shared machine the
timings are noisy: the table records the load average. Timing, memory and table helpers:
`llmlab.bench.harness`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from llmlab.bench.harness import (
    Timing,
    describe_machine,
    load_average,
    machine_info,
    markdown_table,
    ratio,
    run_fresh_process,
    write_results,
)

T0 = time.perf_counter()  # subprocess start-up is measured from here, before torch is imported

RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS = {  # ~5M and ~30M parameters, as benchmarks/bench_model.py
    "5M": {"vocab_size": 8192, "d_model": 256, "n_layers": 4, "n_heads": 8, "max_seq_len": 512},
    "30M": {"vocab_size": 8192, "d_model": 512, "n_layers": 8, "n_heads": 8, "max_seq_len": 512},
}
N_PAIRS, BATCH, MAX_LEN, MAX_PROMPT, BETA, LR = 2000, 8, 256, 192, 0.1, 1e-5
PRECOMPUTE_PAIRS = 128  # the precompute case reads the first 128 pairs: its pass over 2,000 takes minutes on a CPU


# ---------------------------------------------------------------------- fixtures (main process)


def make_data(path: Path, tok: Any) -> None:
    """2,000 conversational pairs of ~200-250 tokens: task prompts joined until the prompt is long."""
    from llmlab.data.config import GenerateConfig
    from llmlab.data.corpora import pref_rows

    pool = list(pref_rows(GenerateConfig(kind="prefs", n=N_PAIRS * 3, seed=1)))
    rows = []
    for i in range(N_PAIRS):
        base = pool[i]
        parts = [base["prompt"]]
        j = i + 1
        while True:
            longer = [pool[j % len(pool)]["prompt"], *parts]
            n = len(tok.encode("\n".join(longer))) + max(len(tok.encode(base["chosen"])),
                                                          len(tok.encode(base["rejected"])))
            if n > 230:
                break
            parts, j = longer, j + 1
        rows.append({"prompt": [{"role": "user", "content": "\n".join(parts)}],
                     "chosen": [{"role": "assistant", "content": base["chosen"]}],
                     "rejected": [{"role": "assistant", "content": base["rejected"]}]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def make_models(root: Path, log: Any) -> dict[str, dict[str, str]]:
    import torch

    from llmlab.data.chat import CHAT_SPECIALS
    from llmlab.data.config import GenerateConfig
    from llmlab.data.corpora import pretrain_documents, sft_rows
    from llmlab.model.config import ModelConfig
    from llmlab.model.hf_io import export_hf
    from llmlab.model.io import save_model
    from llmlab.model.llama import Transformer
    from llmlab.tokenizers.bpe_train import train_bpe

    docs = list(pretrain_documents(GenerateConfig(kind="pretrain", chars=300_000)))
    docs += [m["content"] for row in sft_rows(GenerateConfig(kind="sft", n=1000)) for m in row["messages"]]
    tok = train_bpe(docs, vocab_size=2048, special_tokens=CHAT_SPECIALS)
    paths = {}
    for name, fields in CONFIGS.items():
        torch.manual_seed(0)
        model = Transformer(ModelConfig(**fields))
        save_model(model, root / name / "llmlab", tok)
        export_hf(model, root / name / "hf", tok, eos_token="<|end|>")
        paths[name] = {"llmlab": str(root / name / "llmlab"), "hf": str(root / name / "hf")}
        log(f"{name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
    make_data(root / "prefs.jsonl", _ChatTok(tok))
    return paths


class _ChatTok:
    def __init__(self, tok: Any) -> None:
        self.tok = tok

    def encode(self, text: str) -> list[int]:
        return self.tok.encode_ordinary(text)


# ---------------------------------------------------------------------- correctness (main process)


def check_loss(paths: dict[str, str], data: Path, log: Any) -> bool:
    """TRL's compute_loss and llmlab's loss on TRL's collated batch of 8 pairs (5M model)."""
    import copy
    import logging

    import datasets
    import torch
    import transformers
    import trl

    from llmlab.align.config import DPOConfig
    from llmlab.align.dpo_train import forward_sequences
    from llmlab.align.preference import preference_loss

    logging.getLogger("trl").setLevel(logging.ERROR)
    policy = transformers.AutoModelForCausalLM.from_pretrained(paths["hf"], dtype=torch.float32).train()
    tok = transformers.AutoTokenizer.from_pretrained(paths["hf"])
    ref = copy.deepcopy(policy).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ours = copy.deepcopy(policy)
    rows = [json.loads(x) for x in data.read_text().splitlines()[:BATCH]]
    with tempfile.TemporaryDirectory() as tmp:
        args = trl.DPOConfig(output_dir=tmp, beta=BETA, loss_type=["sigmoid"], report_to="none", bf16=False,
                             use_cpu=True, activation_checkpointing=False, max_length=MAX_LEN)
        trainer = trl.DPOTrainer(model=policy, ref_model=ref, args=args, processing_class=tok,
                                 train_dataset=datasets.Dataset.from_list(rows))
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(BATCH)])
        theirs = float(trainer.compute_loss(policy, batch).detach())
    ours_batch = {"ids": batch["input_ids"], "response_mask": batch["completion_mask"].bool(),
                  "attention_mask": batch["attention_mask"].bool()}
    cpu, plain = torch.device("cpu"), torch.autocast("cpu", enabled=False)
    with torch.no_grad():
        sums, counts, _ = forward_sequences(ours, ours_batch, cpu, plain)
        ref_sums, _, _ = forward_sequences(ref, ours_batch, cpu, plain)
        mine, _ = preference_loss(DPOConfig(model="x", beta=BETA), sums, counts, ref_sums)
    ok = abs(float(mine) - theirs) < 1e-5
    log(f"correctness: loss on one batch of 8 pairs: TRL {theirs:.6f}, llmlab {float(mine):.6f} "
        f"({'ok' if ok else 'MISMATCH'}); {int(batch['attention_mask'].sum())} tokens, "
        f"longest {batch['input_ids'].shape[1]}")
    return ok


# ---------------------------------------------------------------------- the cases (subprocesses)


def run_llmlab(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from llmlab.align import dpo_train
    from llmlab.align.config import DPOConfig
    from llmlab.config import load_config

    torch.set_num_threads(job["threads"])
    marks: dict[str, Any] = {"first": None, "ends": []}
    begin, finish = dpo_train.begin_step, dpo_train.finish_step

    def timed_begin(*a: Any, **k: Any) -> Any:
        if marks["first"] is None:
            marks["first"] = time.perf_counter()
        return begin(*a, **k)

    def timed_finish(*a: Any, **k: Any) -> Any:
        out = finish(*a, **k)
        marks["ends"].append(time.perf_counter())
        return out

    dpo_train.begin_step, dpo_train.finish_step = timed_begin, timed_finish  # the final save comes after: not timed
    cfg = load_config(DPOConfig, None, [
        f"model={job['model']}", f"data.input=[{job['data']}]", "data.eval_fraction=0", f"reference={job['reference']}",
        f"beta={BETA}", f"max_length={MAX_LEN}", f"max_prompt_length={MAX_PROMPT}", f"train.batch_size={BATCH}",
        f"train.max_steps={job['steps']}", f"train.lr={LR}", "train.warmup_steps=0", "train.checkpoint_every=0",
        "train.device=cpu", "eval.n_pairs=0", "eval.n_prompts=0", f"train.log_every={job['steps']}"])
    dpo_train.dpo(cfg, out=Path(job["out"]), quiet=True)
    return _result(marks["first"], marks["ends"])


def run_trl(job: dict[str, Any]) -> dict[str, Any]:
    import logging

    import torch

    torch.set_num_threads(job["threads"])
    import datasets
    import transformers
    import trl

    logging.getLogger("trl").setLevel(logging.ERROR)
    transformers.logging.set_verbosity_error()
    marks: dict[str, Any] = {"first": None, "ends": []}

    class Timer(transformers.TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if marks["first"] is None:
                marks["first"] = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            marks["ends"].append(time.perf_counter())

    model = transformers.AutoModelForCausalLM.from_pretrained(job["model"], dtype=torch.float32)
    ref = transformers.AutoModelForCausalLM.from_pretrained(job["model"], dtype=torch.float32)
    tok = transformers.AutoTokenizer.from_pretrained(job["model"])
    data = datasets.load_dataset("json", data_files=job["data"], split="train")
    args = trl.DPOConfig(output_dir=job["out"], beta=BETA, loss_type=["sigmoid"], report_to="none", bf16=False,
                         use_cpu=True, activation_checkpointing=False, per_device_train_batch_size=BATCH,
                         max_steps=job["steps"], learning_rate=LR, lr_scheduler_type="constant", max_length=MAX_LEN,
                         save_strategy="no", logging_steps=job["steps"], disable_tqdm=True, dataloader_num_workers=0,
                         optim="adamw_torch", weight_decay=0.0, adam_beta2=0.95, max_grad_norm=1.0)
    trainer = trl.DPOTrainer(model=model, ref_model=ref, args=args, processing_class=tok, train_dataset=data,
                             callbacks=[Timer()])
    trainer.train()
    return _result(marks["first"], marks["ends"])


def _result(first: float, ends: list[float]) -> dict[str, Any]:
    steps = [b - a for a, b in zip([first, *ends[:-1]], ends, strict=True)]
    return {"startup_s": first - T0, "first_step_s": steps[0], "step_s": Timing(tuple(steps[1:])).median,
            "steps": steps}


def run_case(job: dict[str, Any]) -> dict[str, Any]:
    """One case in a fresh process: its timings and its peak RSS (read by this process)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(job["threads"]), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_CACHE": job["out"] + "/cache"}
    proc = run_fresh_process([__file__, "--worker", json.dumps(job)], env=env, timeout=3600)
    return {**proc.result(f"{job['impl']} {job['config']}"), "peak_rss_mib": proc.peak_rss_bytes / 2**20}


# ---------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the 5M config and 6 steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        job = json.loads(args.worker)
        result = (run_trl if job["impl"] == "trl" else run_llmlab)(job)
        print(json.dumps(result))
        return 0

    configs = ["5M"] if args.quick else ["5M", "30M"]
    steps = 6 if args.quick else 4  # full: the 30M steps take ~1 minute each on one thread
    lines: list[str] = []

    def log(message: str) -> None:
        print(message, flush=True)
        lines.append(message)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = make_models(root, log)
        data = root / "prefs.jsonl"
        subset = root / "prefs_subset.jsonl"
        subset.write_text("".join(data.read_text().splitlines(keepends=True)[:PRECOMPUTE_PAIRS]))
        ok = check_loss(paths["5M"], data, log)
        results = []
        for name in configs:
            for impl, reference in (("llmlab", "copy"), ("trl", "model"), ("llmlab", "precompute")):
                job = {"impl": impl, "config": name, "reference": reference, "steps": steps, "threads": args.threads,
                       "data": str(subset if reference == "precompute" else data), "model": paths[name]["hf" if impl == "trl" else "llmlab"],
                       "out": str(root / f"{impl}-{reference}-{name}")}
                r = run_case(job)
                results.append({**{k: job[k] for k in ("impl", "config", "reference")}, **r})
                log(f"{name} {impl} (reference {reference}): start-up {r['startup_s']:.1f} s, step "
                    f"{r['step_s']:.3f} s (first {r['first_step_s']:.2f} s), peak RSS {r['peak_rss_mib']:.0f} MiB")
    table = format_table(results, configs)
    suffix = "_quick" if args.quick else ""
    machine = {**machine_info(packages=("trl", "transformers", "torch")), "threads": args.threads}  # per case
    header = (f"# DPO: llmlab vs TRL {machine['versions']['trl']} (transformers "
              f"{machine['versions']['transformers']})\n\n{describe_machine(machine)}, "
              f"load average {load_average()[0]:.1f}; batch {BATCH} pairs, max_length {MAX_LEN}, fp32, "
              f"{steps} steps (median of steps 2..{steps}); {N_PAIRS} pairs tokenized at start-up\n\n")
    write_results(RESULTS / f"dpo{suffix}.md", header + "\n".join(lines) + "\n\n" + table + "\n", results)
    print(table)
    return 0 if ok else 1


def format_table(results: list[dict[str, Any]], configs: list[str]) -> str:
    rows, ratios = [], []
    for name in configs:
        by = {(r["impl"], r["reference"]): r for r in results if r["config"] == name}
        rows += [[name, f"{impl}, reference {ref}", f"{r['startup_s']:.1f}", f"{r['step_s']:.3f}",
                  f"{r['peak_rss_mib']:.0f}"] for (impl, ref), r in by.items()]
        ours, trl, pre = by[("llmlab", "copy")], by[("trl", "model")], by[("llmlab", "precompute")]
        ratios.append([name, ratio(trl["step_s"], ours["step_s"], suffix=""),
                       ratio(trl["startup_s"], ours["startup_s"], fmt=".1f", suffix=""),
                       ratio(trl["peak_rss_mib"], pre["peak_rss_mib"], suffix="")])
    return "\n".join([
        markdown_table(["model", "case", "start-up s", "step s", "peak RSS MiB"], rows, align="llrrr"), "",
        markdown_table(["model", "TRL / llmlab step time (target >= 1)", "TRL / llmlab start-up (target >= 5)",
                        "TRL RSS / llmlab precompute RSS (target > 1)"], ratios, align="lrrr")])


if __name__ == "__main__":
    sys.exit(main())
