"""The four trainers on one device: step time, accumulation exactness, and exact resume, fp32 and bf16.

    python benchmarks/bench_trainers.py --device cuda        (the GPU check; ~3 minutes on an H200)
    python benchmarks/bench_trainers.py --device cpu --quick

For each trainer (pretrain, sft, rm train, dpo with RPO) and dtype: one step as a full batch and as
micro-batches of 4 (the first logged loss of each; exact in fp32 up to summation order, approximate
in bf16), the median step time of a longer run, and whether a run resumed from its mid-run
checkpoint logs the same losses as the run that never stopped. The model is a small llmlab Llama with a
BPE trained on task-world text; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from llmlab.bench.harness import describe_machine, machine_info, markdown_table, write_results


def build_model(root: Path, *, d_model: int, layers: int, context: int) -> tuple[Path, Path]:
    import torch

    from llmlab.data.chat import CHAT_SPECIALS
    from llmlab.data.config import GenerateConfig
    from llmlab.data.corpora import pretrain_documents, sft_rows
    from llmlab.model.config import ModelConfig
    from llmlab.model.io import save_model
    from llmlab.model.llama import Transformer
    from llmlab.tokenizers.bpe_train import train_bpe

    docs = list(pretrain_documents(GenerateConfig(kind="pretrain", chars=60_000)))
    docs += [m["content"] for row in sft_rows(GenerateConfig(kind="sft", n=300)) for m in row["messages"]]
    tok_dir = root / "tok"
    tok = train_bpe(docs, vocab_size=1024, special_tokens=CHAT_SPECIALS)
    tok.save(tok_dir)
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=1024, d_model=d_model, n_layers=layers, n_heads=d_model // 64,
                                    max_seq_len=context))
    save_model(model, root / "model", tok)
    return tok_dir, root / "model"


def run_trainer(name: str, tok_dir: Path, model_dir: Path, out: Path, changes: list[str]) -> list[dict]:
    from llmlab.config import load_config

    if name == "pretrain":
        from llmlab.train.config import PretrainConfig
        from llmlab.train.pretrain import pretrain

        m = json.loads((Path(model_dir) / "bench.json").read_text())
        base = ["model.vocab_size=1024", f"model.d_model={m['d_model']}", f"model.n_layers={m['layers']}",
                f"model.n_heads={m['d_model'] // 64}", f"model.max_seq_len={m['context']}",
                f"train.seq_len={m['context']}", "train.sample_tokens=0", "train.eval_every=0",
                f"data.tokenizer={tok_dir}", f"data.cache_dir={out.parent / 'cache'}", "data.corpus_chars=200000"]
        run = pretrain(load_config(PretrainConfig, None, [*base, *changes]), out=out, quiet=True)
    else:
        from llmlab.align.config import DPOConfig, RewardModelConfig, SFTConfig
        from llmlab.align.dpo_train import dpo
        from llmlab.align.rm_train import train_reward_model
        from llmlab.align.sft import sft

        cls, fn, extra = {"sft": (SFTConfig, sft, []), "rm": (RewardModelConfig, train_reward_model, []),
                          "dpo": (DPOConfig, dpo, ["rpo_alpha=1", "eval.n_pairs=0", "eval.n_prompts=0"])}[name]
        base = [f"model={model_dir}", "data.n=400", "train.eval_every=0", *extra]
        run = fn(load_config(cls, None, [*base, *changes]), out=out, quiet=True)
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="")
    parser.add_argument("--deterministic", action="store_true",
                        help="torch.use_deterministic_algorithms: CUDA's atomics-based kernels (embedding backward, "
                        "...) otherwise make two identical GPU runs differ in the last bits")
    parser.add_argument("--dtypes", nargs="+", default=None)
    args = parser.parse_args()
    import os

    import torch

    if args.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)

    size = dict(d_model=64, layers=2, context=128) if args.quick else dict(d_model=512, layers=8, context=512)
    steps = 4 if args.quick else 20
    dtypes = args.dtypes or ["float32"] + (["bfloat16"] if args.device == "cuda" else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tok_dir, model_dir = build_model(root, **size)
        (model_dir / "bench.json").write_text(json.dumps(size))
        common = [f"train.device={args.device}", "train.batch_size=16", "train.warmup_steps=2", "train.log_every=1",
                  "train.lr=1e-4"]
        for dtype in dtypes:
            for name in ("pretrain", "sft", "rm", "dpo"):
                c = [*common, f"train.dtype={dtype}"]
                tag = f"{name}-{dtype}"
                full = run_trainer(name, tok_dir, model_dir, root / f"{tag}-full",
                                   [*c, "train.max_steps=1", "train.checkpoint_every=0"])
                accum = run_trainer(name, tok_dir, model_dir, root / f"{tag}-accum",
                                    [*c, "train.max_steps=1", "train.checkpoint_every=0", "train.micro_batch_size=4"])
                t0 = time.perf_counter()
                timed = run_trainer(name, tok_dir, model_dir, root / f"{tag}-timed",
                                    [*c, f"train.max_steps={steps}", f"train.checkpoint_every={steps // 2}"])
                wall = time.perf_counter() - t0
                resumed = _resume(name, root / f"{tag}-timed", root / f"{tag}-resumed", steps)
                train_rows = [r for r in timed if "loss" in r]
                times = [b["time"] - a["time"] for a, b in itertools.pairwise(train_rows[2:])]
                same = [r["loss"] for r in train_rows] == [r["loss"] for r in resumed if "loss" in r]
                rows.append({"trainer": name, "dtype": dtype, "loss_full": full[0]["loss"],
                             "loss_accum": accum[0]["loss"], "abs_diff": abs(full[0]["loss"] - accum[0]["loss"]),
                             "step_s": statistics.median(times) if times else wall / steps, "resume_equal": same})
                print(json.dumps(rows[-1]), flush=True)
    device = torch.cuda.get_device_name() if args.device == "cuda" else describe_machine(machine_info(("torch",)))
    mode = "deterministic algorithms" if args.deterministic else "default kernels"
    table = markdown_table(
        ["trainer", "dtype", "loss, 1 micro-batch", "loss, 4 micro-batches", "abs diff", "median step (s)",
         "resumed losses =="],
        [[r["trainer"], r["dtype"], f"{r['loss_full']:.6f}", f"{r['loss_accum']:.6f}", f"{r['abs_diff']:.2e}",
          f"{r['step_s']:.3f}", r["resume_equal"]] for r in rows], align="llrrrrl")
    text = (f"# Trainers on {device} (torch {torch.__version__}, {mode}); model {size}, batch 16, {steps} steps\n\n"
            f"{table}\n")
    print(text)
    if args.out:
        write_results(args.out, text, {"device": device, "mode": mode, "size": size, "steps": steps, "rows": rows})
    return 0


def _resume(name: str, run: Path, copy: Path, steps: int) -> list[dict]:
    """A copy of the finished `run` without its last checkpoint, continued from its step `steps // 2`
    checkpoint to `steps` through the toolkit's resume path (as after a kill past that checkpoint)."""
    import shutil

    from llmlab.align.config import DPOConfig, RewardModelConfig, SFTConfig
    from llmlab.align.dpo_train import dpo
    from llmlab.align.rm_train import train_reward_model
    from llmlab.align.sft import sft
    from llmlab.train.checkpoint import resumed_config
    from llmlab.train.config import PretrainConfig
    from llmlab.train.pretrain import pretrain

    shutil.copytree(run, copy)
    shutil.rmtree(copy / "checkpoints" / f"step-{steps:07d}")
    cls, fn = {"pretrain": (PretrainConfig, pretrain), "sft": (SFTConfig, sft), "rm": (RewardModelConfig,
               train_reward_model), "dpo": (DPOConfig, dpo)}[name]
    fn(resumed_config(cls, str(copy)), out=copy, quiet=True)
    return [json.loads(x) for x in (copy / "metrics.jsonl").read_text().splitlines() if x.strip()]


if __name__ == "__main__":
    raise SystemExit(main())
