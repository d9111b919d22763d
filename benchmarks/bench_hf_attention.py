"""llmlab's attention inside an HF Llama, and the JAX scan forward, against their references.

    .venv/bin/python benchmarks/bench_hf_attention.py --quick   # prefill T = 512; a few minutes
    .venv/bin/python benchmarks/bench_hf_attention.py           # T = 512 and 2048; longer

HF part: one seeded random LlamaForCausalLM (~5M: vocab 8192, 4 layers, 256 wide, 8 query heads
over 2 kv heads), saved once and loaded with each attn_implementation: HF's eager and sdpa, and
llmlab_naive / llmlab_sdpa / llmlab_tiled (`register_hf_attention()`, default tiles). Correctness
first: logits of a left-padded batch against eager at the real tokens, and 16 greedy tokens equal
to eager's. Then the median time of a batch-1 prefill of T tokens and of 32 greedy decode steps
after a 32-token prompt; the ratio column is against HF's sdpa, transformers' default.

JAX part (if jax is installed): `flash_attention` (the lax.scan forward, k_block 128) against
`reference_attention`, both jitted, float32, B 1, 8 query heads over 2 kv heads, D 64, causal:
max |difference| and the median time after compilation. CPU only; the ratio is scan / reference.

Writes benchmarks/results/hf_attention.md and .json (`hf_attention_quick.*` with --quick). The
exit status is 1 when a correctness check fails. On a shared machine timings are noisy: the
table records the load.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from llmlab.bench.harness import (
    describe_load,
    describe_machine,
    load_average,
    log_with_elapsed,
    machine_info,
    markdown_table,
    num,
    ratio,
    time_call,
    write_results,
)

RESULTS = Path(__file__).resolve().parent / "results"
IMPLS = ("eager", "sdpa", "llmlab_naive", "llmlab_sdpa", "llmlab_tiled")
CONFIG = dict(vocab_size=8192, hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
              num_key_value_heads=2, max_position_embeddings=4096, pad_token_id=0, bos_token_id=None,
              eos_token_id=None)


def hf_part(lengths: list[int], log: Any) -> tuple[list[list[object]], dict[str, Any], bool]:
    import torch
    import transformers

    from llmlab.model.hf_attention import register_hf_attention

    register_hf_attention()
    torch.manual_seed(0)
    folder = Path(tempfile.mkdtemp(prefix="bench-hf-attn-"))
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**CONFIG)).save_pretrained(folder)
    models = {impl: transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation=impl).eval()
              for impl in IMPLS}
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, CONFIG["vocab_size"], (3, 64), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, :20], mask[2, :50] = 0, 0
    prompt = torch.randint(1, CONFIG["vocab_size"], (1, 32), generator=gen)

    def greedy(model: Any, new: int) -> Any:
        return model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                              do_sample=False, pad_token_id=0)

    ok, results, rows = True, {}, []
    with torch.no_grad():
        expected = models["eager"](input_ids=ids, attention_mask=mask).logits[mask.bool()]
        expected_tokens = greedy(models["eager"], 16)
        for impl, model in models.items():
            diff = float((model(input_ids=ids, attention_mask=mask).logits[mask.bool()] - expected).abs().max())
            same = bool(torch.equal(greedy(model, 16), expected_tokens))
            ok &= diff < 1e-3 and same
            results[impl] = {"max_abs_logit_diff": diff, "greedy_equal": same}
            log(f"{impl}: max |logits - eager| {diff:.2e}, greedy tokens equal: {same}")
        for T in lengths:
            x = torch.randint(1, CONFIG["vocab_size"], (1, T), generator=gen)
            for impl, model in models.items():
                results[impl][f"prefill_{T}_s"] = time_call(lambda m=model, x=x: m(input_ids=x), repeats=3, warmup=1).median
        for impl, model in models.items():
            results[impl]["decode_32_s"] = time_call(lambda m=model: greedy(m, 32), repeats=3, warmup=1).median
            log(f"{impl}: timed")
    base = results["sdpa"]
    for impl in IMPLS:
        r = results[impl]
        cells: list[object] = [impl, f"{r['max_abs_logit_diff']:.1e}", "yes" if r["greedy_equal"] else "NO"]
        for T in lengths:
            cells += [num(r[f"prefill_{T}_s"] * 1e3), ratio(r[f"prefill_{T}_s"], base[f"prefill_{T}_s"])]
        cells += [num(r["decode_32_s"] * 1e3), ratio(r["decode_32_s"], base["decode_32_s"])]
        rows.append(cells)
    return rows, results, ok


def jax_part(lengths: list[int], log: Any) -> tuple[list[list[object]], dict[str, Any], bool]:
    try:
        import jax
        import numpy as np
    except ImportError:
        log("jax is not installed: JAX part skipped")
        return [], {}, True
    from llmlab.attention.jax_attention import flash_attention, reference_attention

    rows, results, ok = [], {}, True
    rng = np.random.default_rng(0)
    for T in lengths:
        q = jax.numpy.asarray(rng.normal(size=(1, 8, T, 64)), dtype=jax.numpy.float32)
        k, v = (jax.numpy.asarray(rng.normal(size=(1, 2, T, 64)), dtype=jax.numpy.float32) for _ in range(2))
        qkv = (q, k, v)
        ref = time_call(lambda qkv=qkv: reference_attention(*qkv).block_until_ready(), repeats=5, warmup=1)
        scan = time_call(lambda qkv=qkv: flash_attention(*qkv, k_block=128).block_until_ready(), repeats=5, warmup=1)
        diff = float(np.abs(np.asarray(ref.value) - np.asarray(scan.value)).max())
        ok &= diff < 1e-4
        results[T] = {"max_abs_diff": diff, "reference_s": ref.median, "scan_s": scan.median}
        rows.append([T, f"{diff:.1e}", num(ref.median * 1e3), num(scan.median * 1e3), ratio(scan.median, ref.median)])
        log(f"jax T={T}: max |scan - reference| {diff:.1e}")
    return rows, results, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="prefill T = 512 only")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: a busy machine's barriers "
                        "slow every op several-fold with more)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    log = log_with_elapsed()
    lengths = [512] if args.quick else [512, 2048]
    load_start = load_average()[0]
    hf_rows, hf_results, hf_ok = hf_part(lengths, log)
    jax_rows, jax_results, jax_ok = jax_part(lengths, log)
    info = machine_info(("torch", "transformers", "jax"))
    hf_cols = ["attn_implementation", "max abs logit diff vs eager", "greedy = eager"]
    for T in lengths:
        hf_cols += [f"prefill {T} (ms)", "vs sdpa"]
    hf_cols += ["32 decode steps (ms)", "vs sdpa"]
    table = "\n\n".join([
        f"{describe_machine(info)}; {describe_load(load_start, load_average()[0])}.",
        "HF Llama ~5M (8 query heads over 2 kv heads), batch 1, fp32, CPU:",
        markdown_table(hf_cols, hf_rows, align="llc" + "rr" * (len(lengths) + 1)),
        *(["JAX attention, float32, B 1, 8 query / 2 kv heads, D 64, causal, jitted, CPU:",
           markdown_table(["T", "max abs diff", "reference (ms)", "scan, k_block 128 (ms)", "scan / reference"],
                          jax_rows, align="rrrrr")] if jax_rows else []),
    ])
    print(table)
    name = "hf_attention_quick" if args.quick else "hf_attention"
    write_results(RESULTS / f"{name}.md", table + "\n",
                  {"machine": info, "hf": hf_results, "jax": {str(k): v for k, v in jax_results.items()}})
    return 0 if hf_ok and jax_ok else 1


if __name__ == "__main__":
    sys.exit(main())
