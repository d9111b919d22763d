"""Load benchmark of `llmlab serve`: N concurrent `openai` clients for T seconds, against the same engine
driven directly in this process (no HTTP) with N requests kept in flight.

    .venv/bin/python benchmarks/serve_load.py --quick              # 1 and 4 clients, 2 s each: about a minute
    .venv/bin/python benchmarks/serve_load.py                      # 1, 4, 8, 16 clients, 5 s each
    .venv/bin/python benchmarks/serve_load.py --model runs/sft     # a trained model instead of a random one

The server is `python -m llmlab serve --port 0` in a subprocess (its own interpreter, so clients and
server do not share a GIL), on a model folder given with --model or, by default, a random seeded
4-layer, 128-wide model with a 512-id BPE trained here on the built-in corpus. Correctness first: each
prompt's greedy answer from the server, alone, must equal `generate_naive` (the oracle) in this process;
then under load every answer must equal its prompt's answer alone (none lost, none mixed). The exit
status is 1 when a check fails.

Columns: requests answered in the window (a request started before the deadline runs to its end),
requests/s and completion tokens/s over the wall time, latency (request sent -> whole answer)
percentiles, the engine's own tokens/s with as many requests in flight and no HTTP, and the ratio: what
the HTTP layer, JSON and the clients cost. Both sides use --threads torch threads. On a shared machine
timings are noisy: the table records the load.
"""

from __future__ import annotations

import argparse
import os
import select
import subprocess
import sys
import tempfile
import time
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
    percentile,
    ratio,
    write_results,
)

RESULTS = Path(__file__).resolve().parent / "results"
PROMPTS = ["The cat", "Once upon a time", "12 + 30 =", "A B C", "Hello, world", "What is", "def f(x):", "Paris",
           "The dog ran", "1 2 3 4", "She said", "In the beginning", "Why?", "Open the", "red green", "Zero"]
NAME = "bench"


def random_model(directory: Path) -> None:
    """A seeded random model with a small trained tokenizer (the timing does not depend on the weights)."""
    import torch

    from llmlab.data.chat import CHAT_SPECIALS
    from llmlab.data.config import GenerateConfig
    from llmlab.data.corpora import pretrain_documents
    from llmlab.model.config import ModelConfig
    from llmlab.model.io import save_model
    from llmlab.model.llama import Transformer
    from llmlab.tokenizers.bpe_train import train_bpe

    tok = train_bpe(list(pretrain_documents(GenerateConfig(kind="pretrain", chars=40_000))), vocab_size=512,
                    special_tokens=CHAT_SPECIALS)
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=tok.vocab_size, d_model=128, n_layers=4, n_heads=4, max_seq_len=256))
    save_model(model, directory, tok)


def start_server(model_dir: str, threads: int, log: Any) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen([sys.executable, "-m", "llmlab", "serve", "--model", model_dir, "--port", "0", "--name",
                             NAME, "--device", "cpu", "--max-batch", "16"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline, line = time.monotonic() + 120, ""
    while "serving" not in line:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the server did not start: {line}{proc.stderr.read() if proc.poll() is not None else ''}")
        if select.select([proc.stderr], [], [], 0.5)[0]:
            line = proc.stderr.readline()
    url = line.split(" at ")[1].split()[0]
    log(f"server up at {url}")
    return proc, url


def offline(model: Any, tokenizer: Any, prompts: list[list[int]], *, clients: int, seconds: float,
            max_tokens: int) -> dict[str, float]:
    """The engine alone: `clients` requests kept in flight for `seconds` (closed loop, as the clients do)."""
    from llmlab.inference.batching import ContinuousBatcher
    from llmlab.model.commands import stop_token_ids
    from llmlab.model.generate import SamplingConfig

    sampling = SamplingConfig(max_new_tokens=max_tokens, temperature=0, stop_tokens=stop_token_ids(tokenizer),
                              vocab_limit=tokenizer.id_count)
    batcher = ContinuousBatcher(model, max_batch=16)
    start = time.perf_counter()
    deadline, sent, done, tokens = start + seconds, 0, 0, 0
    for _ in range(clients):
        batcher.add(prompts[sent % len(prompts)], sampling)
        sent += 1
    while batcher.has_work():
        for event in batcher.step():
            tokens += event.token is not None
            if event.finished:
                done += 1
                if time.perf_counter() < deadline:
                    batcher.add(prompts[sent % len(prompts)], sampling)
                    sent += 1
    wall = time.perf_counter() - start
    return {"requests": done, "tokens_per_s": tokens / wall, "requests_per_s": done / wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="an llmlab model folder (default: a random 4-layer, 128-wide model)")
    parser.add_argument("--clients", default="1,4,8,16", help="comma-separated concurrency levels")
    parser.add_argument("--seconds", type=float, default=5.0, help="load window per level")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server and the offline engine")
    parser.add_argument("--quick", action="store_true", help="1 and 4 clients, 2 s each")
    parser.add_argument("--output", default=None, help="table path (default: benchmarks/results/serve_load.md)")
    args = parser.parse_args(argv)
    levels = [1, 4] if args.quick else [int(c) for c in args.clients.split(",")]
    seconds = 2.0 if args.quick else args.seconds
    log = log_with_elapsed()

    import openai
    import torch

    from llmlab.model.commands import stop_token_ids
    from llmlab.model.generate import SamplingConfig, generate_naive
    from llmlab.model.io import load_model
    from llmlab.serve.load import run_load

    torch.set_num_threads(args.threads)
    load_start = load_average()[0]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir is None:
            model_dir = str(Path(tmp) / "model")
            log("training a tokenizer and saving a random model")
            random_model(Path(model_dir))
        model, tokenizer = load_model(model_dir)
        proc, url = start_server(model_dir, args.threads, log)
        try:
            ids = [tokenizer.encode(p) for p in PROMPTS]
            stops = stop_token_ids(tokenizer)
            sampling = SamplingConfig(max_new_tokens=args.max_tokens, temperature=0, stop_tokens=stops,
                                      vocab_limit=tokenizer.id_count)
            expected = []
            for p in ids:
                (new,) = generate_naive(model, [p], sampling)
                expected.append(tokenizer.decode(new[:-1] if new and new[-1] in stops else new))
            client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
            alone = [client.completions.create(model=NAME, prompt=p, max_tokens=args.max_tokens,
                                               temperature=0).choices[0].text for p in PROMPTS]
            wrong = [i for i, (a, e) in enumerate(zip(alone, expected, strict=True)) if a != e]
            log(f"correctness: {len(PROMPTS) - len(wrong)}/{len(PROMPTS)} prompts alone equal generate_naive")
            rows, results, failed = [], [], bool(wrong)
            for clients in levels:
                calls, errors, wall = run_load(url, NAME, PROMPTS, clients=clients, seconds=seconds,
                                               max_tokens=args.max_tokens)
                mixed = sum(c.text != expected[c.prompt] for c in calls)
                failed |= bool(errors) or mixed > 0
                lat = [c.latency_s for c in calls]
                tokens = sum(c.completion_tokens for c in calls)
                engine = offline(model, tokenizer, ids, clients=clients, seconds=seconds, max_tokens=args.max_tokens)
                served = tokens / wall
                result = {"clients": clients, "requests": len(calls), "errors": len(errors), "mixed": mixed,
                          "requests_per_s": len(calls) / wall, "tokens_per_s": served,
                          "p50_ms": percentile(lat, 50) * 1e3 if lat else None,
                          "p95_ms": percentile(lat, 95) * 1e3 if lat else None, "offline": engine}
                results.append(result)
                log(f"{clients} clients: {result}")
                rows.append([clients, f"{len(calls)} ({len(errors)} errors, {mixed} wrong)",
                             num(result["requests_per_s"]), num(served),
                             num(result["p50_ms"] or 0), num(result["p95_ms"] or 0), num(engine["tokens_per_s"]),
                             ratio(served, engine["tokens_per_s"])])
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            proc.stderr.close()
    info = {**machine_info(("torch", "fastapi", "uvicorn", "openai")), "threads": args.threads}
    table = "\n".join([
        f"# llmlab serve under load ({'random 4x128 model' if args.model is None else args.model}, "
        f"{args.max_tokens} new tokens, greedy, {seconds:g} s per level)",
        "",
        f"{describe_machine(info)}; {describe_load(load_start, load_average()[0])}.",
        f"Correctness: {len(PROMPTS) - len(wrong)}/{len(PROMPTS)} prompts served alone equal generate_naive.",
        "",
        markdown_table(["clients", "requests", "requests/s", "tokens/s", "p50 ms", "p95 ms", "engine alone tokens/s",
                        "served / engine"], rows, align="rlrrrrrr"),
        "",
    ])
    print(table)
    out = Path(args.output) if args.output else RESULTS / ("serve_load_quick.md" if args.quick else "serve_load.md")
    write_results(out, table, {"machine": info, "levels": results, "wrong_alone": wrong})
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
