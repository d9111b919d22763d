"""Shared by the server tests: the tiny model served in this process on a free port, its oracle, and a raw
HTTP helper for requests the `openai` client would refuse to send (bad JSON).

The server is the one `llmlab serve` runs (`llmlab.serve.commands.build` + `bind`), under uvicorn in a
thread; the expected answers come from `generate_naive`, the no-cache oracle, on the same weights.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import one_thread

NAME = "tiny"


@dataclass
class Live:
    base_url: str  # http://127.0.0.1:PORT/v1
    port: int
    model_dir: Path
    model: Any  # the Transformer, for the oracle
    tokenizer: Any
    engine: Any

    def client(self) -> Any:
        import openai

        return openai.OpenAI(base_url=self.base_url, api_key="unused", max_retries=0, timeout=60)

    def greedy(self, ids: list[int], max_tokens: int) -> tuple[list[int], str, str]:
        """(new tokens, their text without the stop token, finish reason) from `generate_naive`."""
        from llmlab.model.commands import stop_token_ids
        from llmlab.model.generate import SamplingConfig, generate_naive

        stops = stop_token_ids(self.tokenizer)
        sampling = SamplingConfig(max_new_tokens=max_tokens, temperature=0, stop_tokens=stops,
                                  vocab_limit=self.tokenizer.id_count)
        with one_thread():
            (new,) = generate_naive(self.model, [ids], sampling)
        stopped = bool(new) and new[-1] in stops
        text = self.tokenizer.decode(new[:-1] if stopped else new)
        return new, text, "stop" if stopped else "length"

    def post(self, path: str, body: bytes | dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) of a raw POST."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()


@pytest.fixture(scope="package")  # one server for every test module here
def live(tiny_model_dir: Path) -> Iterator[Live]:
    import uvicorn

    from llmlab.model.io import load_model
    from llmlab.serve.commands import bind, build
    from llmlab.serve.config import ServeConfig

    with one_thread():
        app, engine, name = build(ServeConfig(model=str(tiny_model_dir), name=NAME, port=0, device="cpu",
                                              max_batch=8))
        assert name == NAME
        sock = bind("127.0.0.1", 0)
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        engine.start()
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        model, tokenizer = load_model(tiny_model_dir)
        try:
            yield Live(f"http://127.0.0.1:{port}/v1", port, tiny_model_dir, model, tokenizer, engine)
        finally:
            server.should_exit = True
            thread.join(10)
            engine.close()
            sock.close()
