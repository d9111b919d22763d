"""A bounded load test: 8 clients for 3 seconds against the in-process server (`llmlab.serve.load`).

Every request is greedy, so each answer must equal its prompt's answer alone (`generate_naive`): none
lost (every request answered, no errors), none mixed with another's tokens. Prints requests/s,
tokens/s and latency p50/p95 (`pytest -s` shows them); on this shared CPU they are not a benchmark
(benchmarks/serve_load.py is).
"""

from __future__ import annotations

from llmlab.bench.harness import percentile
from llmlab.serve.load import run_load

from .conftest import NAME, Live

PROMPTS = ["The cat", "Once upon a time", "12 + 30 =", "A B C", "Hello, world", "What is", "def f(x):", "Paris",
           "The dog ran", "1 2 3 4", "She said", "In the beginning", "Why?", "Open the", "red green", "Zero"]
MAX_TOKENS = 12


def test_eight_clients_for_three_seconds_lose_and_mix_nothing(live: Live) -> None:
    expected = {i: live.greedy(live.tokenizer.encode(p), MAX_TOKENS) for i, p in enumerate(PROMPTS)}
    calls, errors, wall = run_load(live.base_url, NAME, PROMPTS, clients=8, seconds=3.0, max_tokens=MAX_TOKENS)
    assert errors == []
    assert {c.client for c in calls} == set(range(8))  # every client got answers
    for c in calls:
        new, text, reason = expected[c.prompt]
        assert (c.text, c.completion_tokens, c.finish_reason) == (text, len(new), reason), c
    latencies = [c.latency_s for c in calls]
    tokens = sum(c.completion_tokens for c in calls)
    print(f"\n8 clients x 3 s: {len(calls)} requests in {wall:.1f} s, {len(calls) / wall:.1f} requests/s, "
          f"{tokens / wall:.0f} tokens/s, latency p50 {percentile(latencies, 50) * 1e3:.0f} ms, "
          f"p95 {percentile(latencies, 95) * 1e3:.0f} ms")
