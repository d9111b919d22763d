"""A bounded load test of an OpenAI-compatible server: N clients, each sending one request after another
for T seconds, with the official `openai` client.

    calls, errors, wall_s = run_load("http://127.0.0.1:8000/v1", "tiny", prompts, clients=8, seconds=3)

Client i sends prompts i, i + N, i + 2N, ... (modulo the list), so clients ask different things at
the same time and a response can be checked against the answer its own prompt gets alone: that is how
`tests/serve/test_load.py` and `benchmarks/serve_load.py` see that no request was lost and none got
another's tokens. A request started before the deadline runs to its end (the window bounds starts, not
answers); a failed request is recorded as an error, never dropped. Timing summaries (percentiles) are
the caller's, with `llmlab.bench.harness`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Call:
    client: int
    prompt: int  # index into the prompts
    text: str
    completion_tokens: int
    latency_s: float  # request sent -> whole response received
    finish_reason: str | None


def run_load(base_url: str, model: str, prompts: Sequence[str], *, clients: int, seconds: float,
             max_tokens: int, temperature: float = 0.0, timeout_s: float = 120.0,
             ) -> tuple[list[Call], list[str], float]:
    """(every completed call, every error as text, wall seconds from the first start to the last answer)."""
    import openai  # the `dev` extra; only the load test needs the client

    calls: list[Call] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = time.perf_counter()
    deadline = start + seconds

    def client(i: int) -> None:
        api = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=timeout_s)
        k = 0
        while time.perf_counter() < deadline:
            index = (i + k * clients) % len(prompts)
            k += 1
            sent = time.perf_counter()
            try:
                response = api.completions.create(model=model, prompt=prompts[index], max_tokens=max_tokens,
                                                  temperature=temperature)
            except openai.OpenAIError as error:
                with lock:
                    errors.append(f"client {i}, prompt {index}: {error}")
                continue
            latency = time.perf_counter() - sent
            choice = response.choices[0]
            usage = response.usage.completion_tokens if response.usage else 0
            with lock:
                calls.append(Call(i, index, choice.text, usage, latency, choice.finish_reason))

    threads = [threading.Thread(target=client, args=(i,), name=f"load-client-{i}") for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return calls, errors, time.perf_counter() - start
