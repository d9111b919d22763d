"""The GPU check: what only a CUDA machine can show, in one script with one table.

    .venv/bin/python benchmarks/gpu_check.py             # T = 1k ... 16k; a few minutes on an H100
    .venv/bin/python benchmarks/gpu_check.py --quick     # T = 1k, 4k

1. llmlab's Triton kernel (attention/triton_flash.py) against PyTorch's sdpa with its FlashAttention
   backend forced, causal bf16, B=1, H=16, D=128, MHA (16:16) and GQA (16:4). Correctness first: both
   outputs against an fp32 sdpa reference (max |difference|), and the Triton gradients against sdpa's
   where T <= 8k; then forward and forward+backward times (CUDA events, median of --repeats).
2. Decode in bf16: llmlab's Engine (static step) on the ~5M model of benchmarks/bench_model.py, batch 1
   and 8, greedy, checked token for token against the model's own forward step.
3. vLLM, if it imports: the same model exported as an HF folder (`export_hf`), greedy from vLLM against
   llmlab's greedy tokens.

Without CUDA the script says so and exits 0: there is nothing it can check. Never run on this
project's CPU machine; written to be run once where a GPU is lent (docs/inference.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable

import torch
import torch.nn.functional as F

from llmlab.attention.functional import attention
from llmlab.model.config import ModelConfig
from llmlab.model.generate import Engine, SamplingConfig
from llmlab.model.llama import Transformer

MODEL = ModelConfig(vocab_size=4096, d_model=256, n_layers=6, n_heads=8, n_kv_heads=8, max_seq_len=1024)


def cuda_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median milliseconds of fn() between CUDA events, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def check_attention(T: int, kv_heads: int, repeats: int) -> dict[str, object]:
    g = torch.Generator(device="cuda").manual_seed(T + kv_heads)
    q = torch.randn(1, 16, T, 128, device="cuda", generator=g, dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(1, kv_heads, T, 128, device="cuda", generator=g, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(1, kv_heads, T, 128, device="cuda", generator=g, dtype=torch.bfloat16, requires_grad=True)
    rep = 16 // kv_heads
    kk, vv = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # flash sdpa: same head count

    def sdpa() -> torch.Tensor:
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, kk, vv, is_causal=True)

    def triton() -> torch.Tensor:
        return attention(q, k, v, causal=True, backend="triton")

    row: dict[str, object] = {"T": T, "heads": f"16:{kv_heads}"}
    with torch.no_grad():
        ref = F.scaled_dot_product_attention(q.float(), kk.float(), vv.float(), is_causal=True)
        row["sdpa_err"] = (sdpa().float() - ref).abs().max().item()
        row["triton_err"] = (triton().float() - ref).abs().max().item()
        del ref
    if T <= 8192:
        grad = torch.randn_like(q)
        ours = torch.autograd.grad(triton(), (q, k, v), grad)
        theirs = torch.autograd.grad(sdpa(), (q, k, v), grad)
        row["grad_err"] = max((a.float() - b.float()).abs().max().item() for a, b in zip(ours, theirs, strict=True))
    with torch.no_grad():
        row["sdpa_fwd_ms"], row["triton_fwd_ms"] = cuda_ms(sdpa, repeats), cuda_ms(triton, repeats)
    row["sdpa_fwdbwd_ms"] = cuda_ms(lambda: sdpa().sum().backward(), repeats)
    row["triton_fwdbwd_ms"] = cuda_ms(lambda: triton().sum().backward(), repeats)
    return row


def check_decode(model: Transformer, batch: int, new_tokens: int, repeats: int) -> dict[str, object]:
    prompts = [[(7 * i + j) % MODEL.vocab_size for j in range(32)] for i in range(batch)]
    s = SamplingConfig(max_new_tokens=new_tokens, temperature=0.0)
    static, forward = Engine(model), Engine(model, decode="forward")
    same = static.generate(prompts, s) == forward.generate(prompts, s)
    ms = {name: cuda_ms(lambda e=e: e.generate(prompts, s), repeats) for name, e in (("static", static),
                                                                                    ("forward", forward))}
    return {"batch": batch, "greedy_equal": same, **{f"{k}_tok_s": batch * new_tokens / (v / 1e3)
                                                     for k, v in ms.items()}}


def check_vllm(model: Transformer, new_tokens: int) -> str:
    try:
        from vllm import LLM, SamplingParams  # optional: only where it can be installed
    except ImportError:
        return "vLLM: not installed, skipped"
    from llmlab.model.hf_io import export_hf

    prompt = list(range(5, 37))
    ours = Engine(model.float()).generate([prompt], SamplingConfig(max_new_tokens=new_tokens, temperature=0.0))[0]
    with tempfile.TemporaryDirectory() as folder:
        export_hf(model, folder)
        llm = LLM(model=folder, skip_tokenizer_init=True, dtype="float32", gpu_memory_utilization=0.3)
        out = llm.generate([{"prompt_token_ids": prompt}], SamplingParams(max_tokens=new_tokens, temperature=0.0))
        theirs = list(out[0].outputs[0].token_ids)
    agree = sum(a == b for a, b in zip(ours, theirs, strict=False)) / max(len(ours), 1)
    return f"vLLM greedy agreement with llmlab: {agree:.3f} over {len(ours)} tokens"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T = 1k and 4k only")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here, nothing to check (run it on a GPU machine)")
        return 0
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    lengths = (1024, 4096) if args.quick else (1024, 2048, 4096, 8192, 16384)
    print("| T | heads | sdpa err | triton err | grad err | sdpa fwd ms | triton fwd ms | ratio | "
          "sdpa f+b ms | triton f+b ms | ratio |")
    print("|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for T in lengths:
        for kv in (16, 4):
            r = check_attention(T, kv, args.repeats)
            grad = f"{r['grad_err']:.1e}" if "grad_err" in r else "-"
            print(f"| {T} | {r['heads']} | {r['sdpa_err']:.1e} | {r['triton_err']:.1e} | {grad} | "
                  f"{r['sdpa_fwd_ms']:.3f} | {r['triton_fwd_ms']:.3f} | {r['triton_fwd_ms'] / r['sdpa_fwd_ms']:.2f}x | "
                  f"{r['sdpa_fwdbwd_ms']:.3f} | {r['triton_fwdbwd_ms']:.3f} | "
                  f"{r['triton_fwdbwd_ms'] / r['sdpa_fwdbwd_ms']:.2f}x |")
    torch.manual_seed(0)
    model = Transformer(MODEL).to("cuda", torch.bfloat16).eval()
    print("\n| batch | greedy static = forward | static tokens/s | forward tokens/s |")
    print("|--:|---|--:|--:|")
    for batch in (1, 8):
        r = check_decode(model, batch, 64 if args.quick else 128, max(3, args.repeats // 3))
        print(f"| {batch} | {r['greedy_equal']} | {r['static_tok_s']:,.0f} | {r['forward_tok_s']:,.0f} |")
    print("\n" + check_vllm(model, 32))
    return 0


if __name__ == "__main__":
    sys.exit(main())
