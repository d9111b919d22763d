"""Model benchmark: llmlab's Transformer and Engine against HF `LlamaForCausalLM` with the same weights.

    .venv/bin/python benchmarks/bench_model.py --quick   # the ~5M config, short runs: a minute or two
    .venv/bin/python benchmarks/bench_model.py           # ~5M and ~30M configs: several minutes

Both models come from one seeded llmlab model: `save_model` for llmlab, `export_hf` for HF (loaded
with `AutoModelForCausalLM.from_pretrained`, its default sdpa attention). Correctness first, in
this process: logits and the training loss of both models on the same batch, and greedy
continuations (Engine vs HF `generate(do_sample=False)`, batch 1 and 8, every new token).

Then each (implementation, workload) runs in its own subprocess, so that its peak RSS is its own:
    train    forward + cross-entropy + backward + AdamW step, fp32, batch 8 x 256; median step time
             after warm-up -> tokens/s, and MFU = flops_per_token(256) * tokens/s / the fp32 matmul
             peak measured in this run (best of 5 torch.mm 2048^3)
    decode   prompt 32 tokens, 128 new tokens, greedy, batch 1 and 8: llmlab Engine (KV cache) vs
             HF generate (KV cache, eos disabled so every row makes 128 tokens), and llmlab's
             naive generator (no cache; the oracle) at batch 1
The peak RSS column is the subprocess's peak resident memory, read by this process (ru_maxrss;
imports included: HF's process also imports transformers) and, in brackets, the extra over the
resident size after loading (peak reset with /proc/self/clear_refs, so a transient peak while
loading counts in neither). Timing, memory and table helpers: `llmlab.bench.harness`.

Writes benchmarks/results/model.md and model.json (`model_quick.*` with --quick). The exit status is
1 when a correctness check fails. On a shared machine timings are noisy: the table records the load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmlab.bench.harness import (
    Timing,
    describe_load,
    describe_machine,
    load_average,
    log_with_elapsed,
    machine_info,
    mark_rss,
    markdown_table,
    matmul_peak,
    ratio,
    run_fresh_process,
    time_call,
    write_results,
)

RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS = {  # name -> ModelConfig fields; ~5M and ~30M parameters with a tied head
    "5M": {"vocab_size": 8192, "d_model": 256, "n_layers": 4, "n_heads": 8, "max_seq_len": 512},
    "30M": {"vocab_size": 8192, "d_model": 512, "n_layers": 8, "n_heads": 8, "max_seq_len": 512},
}
TARGETS = {"train": 1.2, "decode_1": 2.0, "decode_8": 1.2, "naive_slower": 5.0}
SEED = 0
MiB = 2**20


# ---------------------------------------------------------------------- measuring (in subprocesses)


def _batch(vocab: int, B: int, T: int, seed: int) -> Any:
    import torch

    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def _load(impl: str, directory: str) -> Any:
    import torch

    if impl == "hf":
        import transformers

        return transformers.AutoModelForCausalLM.from_pretrained(Path(directory) / "hf", dtype=torch.float32)
    from llmlab.model.io import load_model

    return load_model(Path(directory) / "llmlab")[0]


def _logits(impl: str, model: Any, idx: Any) -> Any:
    return model(idx).logits if impl != "hf" else model(input_ids=idx).logits


def _loss(impl: str, model: Any, x: Any) -> Any:
    import torch.nn.functional as F

    logits = _logits(impl, model, x[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))


def _generate(impl: str, model: Any, prompts: Any, new: int) -> list[list[int]]:
    import torch

    if impl == "hf":
        out = model.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=False, max_new_tokens=new,
                             min_new_tokens=new, eos_token_id=None, pad_token_id=0)
        return out[:, prompts.shape[1]:].tolist()
    from llmlab.model.generate import Engine, SamplingConfig, generate_naive

    sampling = SamplingConfig(max_new_tokens=new, temperature=0.0)
    if impl == "naive":
        return generate_naive(model, prompts.tolist(), sampling)
    return Engine(model).generate(prompts.tolist(), sampling)


def worker(job: dict[str, Any]) -> dict[str, Any]:
    """One (impl, workload) in this fresh process: load, warm up, time; report times and extra memory."""
    import torch

    torch.set_num_threads(job["threads"])
    torch.manual_seed(SEED)
    impl, vocab = job["impl"], job["vocab"]
    model = _load(impl, job["dir"])
    mark = mark_rss()
    out: dict[str, Any] = {}
    timing: Timing
    if job["workload"] == "train":
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x = _batch(vocab, job["batch"], job["seq_len"] + 1, seed=1)

        def step() -> None:
            _loss(impl, model, x).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        timing = time_call(step, repeats=job["steps"], warmup=job["warmup"])
        out["tokens_per_s"] = job["batch"] * job["seq_len"] / timing.median
    else:
        model.eval()
        prompts = _batch(vocab, job["batch"], job["prompt_len"], seed=2)
        with torch.inference_mode():
            _generate(impl, model, prompts, 4)  # warm-up: allocator, kernels, HF's generation config
            timing = time_call(lambda: _generate(impl, model, prompts, job["new_tokens"]), repeats=job["repeats"])
        out["tokens"] = timing.value
        out["tokens_per_s"] = job["batch"] * job["new_tokens"] / timing.median
    out.update(times=list(timing.times), extra_rss_mib=mark.extra_bytes() / MiB if mark.exact else None)
    return out


def run_worker(job: dict[str, Any]) -> dict[str, Any]:
    """`worker(job)` in a fresh process; its result and its peak RSS (read by this process)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = run_fresh_process([__file__, "--worker", json.dumps(job)], env=env)
    return {**proc.result(f"worker {job['impl']}/{job['workload']}"), "peak_rss_mib": proc.peak_rss_bytes / MiB}


# ---------------------------------------------------------------------- the benchmark


def check_config(name: str, directory: Path, settings: dict[str, Any], log: Any) -> list[dict[str, Any]]:
    """Logits, loss and greedy tokens of llmlab against HF on the same weights, before any timing."""
    import torch

    checks = []
    llm, hf = _load("llmlab", str(directory)).eval(), _load("hf", str(directory)).eval()
    vocab = llm.cfg.vocab_size
    x = _batch(vocab, 2, 65, seed=1)
    with torch.inference_mode():
        diff = (_logits("llmlab", llm, x) - _logits("hf", hf, x)).abs().max().item()
        loss_diff = abs(_loss("llmlab", llm, x).item() - _loss("hf", hf, x).item())
    checks.append({"config": name, "check": "logits max abs diff (2 x 65)", "value": f"{diff:.1e}",
                   "ok": diff <= 1e-4})
    checks.append({"config": name, "check": "training loss abs diff", "value": f"{loss_diff:.1e}",
                   "ok": loss_diff <= 1e-4})
    prompts = _batch(vocab, 8, settings["prompt_len"], seed=2)
    with torch.inference_mode():
        for B in (1, 8):
            ours = _generate("llmlab", llm, prompts[:B], settings["new_tokens"])
            theirs = _generate("hf", hf, prompts[:B], settings["new_tokens"])
            same = sum(a == b for r, s in zip(ours, theirs, strict=True) for a, b in zip(r, s, strict=True))
            total = B * settings["new_tokens"]
            checks.append({"config": name, "check": f"greedy tokens Engine = HF generate, batch {B}",
                           "value": f"{same}/{total}", "ok": same == total, "tokens": ours})
    log(f"{name}: checks " + ", ".join(f"{c['check']}: {c['value']}" for c in checks))
    return checks


def run_benchmark(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    import torch

    from llmlab.model.config import ModelConfig
    from llmlab.model.hf_io import export_hf
    from llmlab.model.io import save_model
    from llmlab.model.llama import Transformer

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    settings = {"batch": 8, "seq_len": 256, "warmup": 1, "steps": 3 if args.quick else 4,
                "prompt_len": 32, "new_tokens": 32 if args.quick else 128, "repeats": 1 if args.quick else 3}
    names = ["5M"] if args.quick else list(CONFIGS)
    results: dict[str, Any] = {
        "machine": {**machine_info(packages=("torch", "transformers")), "load_start": load_average()[0]},
        "settings": settings, "configs": {}, "checks": [], "train": [], "decode": []}
    peak = matmul_peak()["gflops"] * 1e9
    results["matmul_peak_flops"] = peak
    log(f"fp32 matmul peak {peak / 1e9:.1f} GFLOP/s")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            torch.manual_seed(SEED)
            cfg = ModelConfig(**CONFIGS[name])
            model = Transformer(cfg)
            directory = Path(tmp) / name
            save_model(model, directory / "llmlab")
            export_hf(model, directory / "hf")
            results["configs"][name] = {**asdict(cfg), "num_params": cfg.num_params(),
                                        "flops_per_token": cfg.flops_per_token(settings["seq_len"])}
            log(f"{name}: {cfg.num_params() / 1e6:.2f}M parameters")
            checks = check_config(name, directory, settings, log)
            results["checks"] += [{k: v for k, v in c.items() if k != "tokens"} for c in checks]
            engine_tokens = {1: checks[2]["tokens"], 8: checks[3]["tokens"]}
            base = {"dir": str(directory), "vocab": cfg.vocab_size, "threads": threads, **settings}
            for impl in ("llmlab", "hf"):
                r = run_worker({**base, "impl": impl, "workload": "train"})
                r["mfu"] = results["configs"][name]["flops_per_token"] * r["tokens_per_s"] / peak
                results["train"].append({"config": name, "impl": impl, **r})
                log(f"{name} train {impl}: {r['tokens_per_s']:.0f} tokens/s, MFU {r['mfu']:.1%}")
            for B, impl in ((1, "llmlab"), (1, "hf"), (1, "naive"), (8, "llmlab"), (8, "hf")):
                job = {**base, "impl": impl, "workload": "decode", "batch": B}
                if impl == "naive":
                    job["repeats"] = 1  # O(T^2): one run is long enough
                r = run_worker(job)
                ok = r.pop("tokens") == engine_tokens[B]
                results["checks"].append({"config": name, "check": f"{impl} decode batch {B}: same tokens as the "
                                          "checked Engine run", "value": "yes" if ok else "NO", "ok": ok})
                results["decode"].append({"config": name, "impl": impl, "batch": B, **r})
                log(f"{name} decode b{B} {impl}: {r['tokens_per_s']:.1f} tokens/s")
    results["machine"]["load_end"] = load_average()[0]
    results["targets"] = evaluate_targets(results)
    return results


def _get(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    return next(r for r in rows if all(r.get(k) == v for k, v in match.items()))


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name in results["configs"]:
        train = (_get(results["train"], config=name, impl="llmlab")["tokens_per_s"]
                 / _get(results["train"], config=name, impl="hf")["tokens_per_s"])
        out.append({"config": name, "target": f"train >= {TARGETS['train']}x HF tokens/s", "measured": train,
                    "met": train >= TARGETS["train"]})
        for B in (1, 8):
            d = (_get(results["decode"], config=name, impl="llmlab", batch=B)["tokens_per_s"]
                 / _get(results["decode"], config=name, impl="hf", batch=B)["tokens_per_s"])
            want = TARGETS[f"decode_{B}"]
            out.append({"config": name, "target": f"decode batch {B} >= {want}x HF tokens/s", "measured": d,
                        "met": d >= want})
        slower = (_get(results["decode"], config=name, impl="llmlab", batch=1)["tokens_per_s"]
                  / _get(results["decode"], config=name, impl="naive", batch=1)["tokens_per_s"])
        out.append({"config": name, "target": f"naive >= {TARGETS['naive_slower']}x slower than Engine (batch 1)",
                    "measured": slower, "met": slower >= TARGETS["naive_slower"]})
    return out


def _rss(r: dict[str, Any]) -> str:
    extra = "" if r["extra_rss_mib"] is None else f" (+{r['extra_rss_mib']:.0f})"
    return f"{r['peak_rss_mib']:.0f}{extra}"


def format_table(results: dict[str, Any], *, command: str) -> str:
    m, s = results["machine"], results["settings"]
    lines = [
        "# Model benchmark: llmlab vs HF LlamaForCausalLM", "",
        f"`{command}` on {m['date']}: {describe_machine(m)}; {describe_load(m['load_start'], m['load_end'])} "
        "(this run counts). The machine is shared: timings are noisy.", "",
        f"fp32 matmul peak measured in this run (best of 5 torch.mm 2048^3): "
        f"**{results['matmul_peak_flops'] / 1e9:.1f} GFLOP/s**.", "",
        markdown_table(["config", "d_model", "layers", "heads", "d_ff", "vocab", "parameters",
                        "FLOPs/token (T=256, fwd+bwd)"],
                       [[name, c["d_model"], c["n_layers"], c["n_heads"], c["d_ff"] or "auto", c["vocab_size"],
                         f"{c['num_params'] / 1e6:.2f}M", f"{c['flops_per_token'] / 1e6:.1f}M"]
                        for name, c in results["configs"].items()], align="lrrrrrrr")]
    lines += ["", "## Correctness (before timing)", "", markdown_table(
        ["config", "check", "value", ""],
        [[c["config"], c["check"], c["value"], "ok" if c["ok"] else "FAILED"] for c in results["checks"]], align="llr")]
    train = [[r["config"], r["impl"], f"{1e3 * Timing(tuple(r['times'])).median:.0f}", f"{r['tokens_per_s']:.0f}",
              ratio(r["tokens_per_s"], _get(results["train"], config=r["config"], impl="hf")["tokens_per_s"]),
              f"{r['mfu']:.1%}", _rss(r)] for r in results["train"]]
    lines += ["", f"## Training step (fp32, batch {s['batch']} x {s['seq_len']}, AdamW; median of {s['steps']} "
              f"steps after {s['warmup']} warm-up)", "",
              markdown_table(["config", "impl", "ms / step", "tokens/s", "x HF", "MFU", "peak RSS MiB (+ over loaded)"],
                             train, align="llrrrrr")]
    decode = [[r["config"], r["batch"], r["impl"], f"{Timing(tuple(r['times'])).median:.2f}",
               f"{r['tokens_per_s']:.1f}",
               ratio(r["tokens_per_s"], _get(results["decode"], config=r["config"], impl="hf",
                                             batch=r["batch"])["tokens_per_s"]), _rss(r)] for r in results["decode"]]
    lines += ["", f"## Decode (prompt {s['prompt_len']}, {s['new_tokens']} new tokens, greedy; median of "
              f"{s['repeats']} runs, naive 1)", "",
              markdown_table(["config", "batch", "impl", "s / run", "new tokens/s", "x HF",
                              "peak RSS MiB (+ over loaded)"], decode, align="lrlrrrr")]
    lines += ["", "## Targets", "", markdown_table(
        ["config", "target", "measured", ""],
        [[t["config"], t["target"], f"{t['measured']:.2f}x", "met" if t["met"] else "not met"]
         for t in results["targets"]], align="llr")]
    lines += ["", "Notes:", "",
              "- Each row runs in its own subprocess; peak RSS is that process's peak resident memory (ru_maxrss, "
              "imports included, so HF's rows include transformers) and, in brackets, the peak minus VmRSS right "
              "after loading the model.",
              "- HF runs with its default attention (sdpa) and `generate(do_sample=False, min_new_tokens=N, "
              "eos_token_id=None)`; llmlab with `attention: sdpa` and `Engine` (greedy).",
              "- MFU = ModelConfig.flops_per_token(T) x tokens/s / the measured matmul peak (PaLM's 6N + 12LdT "
              "convention); the same FLOP count is used for both implementations.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the 5M config only, 32 new tokens, fewer steps")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default 0: one per core)")
    parser.add_argument("--out", type=Path, default=None,
                        help="markdown file; .json goes beside it (default benchmarks/results/model[_quick].md)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = args.out or RESULTS / ("model_quick.md" if args.quick else "model.md")
    log = log_with_elapsed()
    results = run_benchmark(args, log)
    table = format_table(results, command=" ".join(["benchmarks/bench_model.py", *argv]))
    write_results(out, table, results)
    print(table)
    log(f"wrote {out} and {out.with_suffix('.json').name}")
    return 0 if all(c["ok"] for c in results["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
