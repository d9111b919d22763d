"""EngineThread with a scripted batcher (no model): events reach the right request's queue, a cancel
reaches the batcher, `add`'s errors reach the submitter, and a failed step fails only the requests in it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from llmlab.errors import UserError
from llmlab.inference.batching import TokenEvent
from llmlab.model.generate import SamplingConfig
from llmlab.serve.engine import EngineThread, Submitted


class Counting:
    """A batcher whose request r yields tokens 1000*r + 0, 1, ... until max_new_tokens; step may fail on cue."""

    def __init__(self, log: list[str], fail_at: int | None = None) -> None:
        self.log, self.fail_at, self.steps = log, fail_at, 0
        self.active: dict[int, list[int]] = {}  # id -> [made, max]
        self.next_id = 0

    def add(self, prompt: Sequence[int], sampling: SamplingConfig, *, seed: int | None = None) -> int:
        if not prompt:
            raise UserError("empty prompt")
        rid, self.next_id = self.next_id, self.next_id + 1
        self.active[rid] = [0, sampling.max_new_tokens]
        self.log.append(f"add {rid}")
        return rid

    def cancel(self, request_id: int) -> None:
        self.log.append(f"cancel {request_id}")
        self.active.pop(request_id, None)

    def has_work(self) -> bool:
        return bool(self.active)

    def step(self) -> list[TokenEvent]:
        self.steps += 1
        if self.steps == self.fail_at:
            raise RuntimeError("boom")
        events = []
        for rid, state in list(self.active.items()):
            token = 1000 * rid + state[0]
            state[0] += 1
            done = state[0] == state[1]
            if done:
                del self.active[rid]
            events.append(TokenEvent(rid, token, done, "length" if done else None))
        return events


async def _tokens(request: Submitted) -> list[int]:
    out = []
    while True:
        event = await asyncio.wait_for(request.events.get(), 10)
        if isinstance(event, BaseException):
            raise event
        assert event.request_id == request.request_id
        out.append(event.token)
        if event.finished:
            return out


def _with_engine(make, body) -> None:
    engine = EngineThread(make)
    engine.start()
    try:
        asyncio.run(body(engine))
    finally:
        engine.close()


def test_interleaved_requests_get_their_own_tokens() -> None:
    log: list[str] = []

    async def body(engine: EngineThread) -> None:
        requests = await asyncio.gather(*(engine.submit([1], SamplingConfig(max_new_tokens=n)) for n in (3, 5, 1)))
        results = await asyncio.gather(*(_tokens(r) for r in requests))
        for r, got, n in zip(requests, results, (3, 5, 1), strict=True):
            assert got == [1000 * r.request_id + i for i in range(n)]

    _with_engine(lambda: Counting(log), body)
    assert sorted(log) == ["add 0", "add 1", "add 2"]


def test_add_errors_reach_the_submitter_and_cancel_reaches_the_batcher() -> None:
    log: list[str] = []

    async def body(engine: EngineThread) -> None:
        with pytest.raises(UserError, match="empty prompt"):
            await engine.submit([], SamplingConfig(max_new_tokens=2))
        request = await engine.submit([1], SamplingConfig(max_new_tokens=10**9))
        assert (await request.events.get()).token == 1000 * request.request_id
        engine.cancel(request)
        for _ in range(100):  # the engine goes idle: it has no work left once the cancel arrived
            await asyncio.sleep(0.01)
            if f"cancel {request.request_id}" in log:
                break
        finished = await engine.submit([1], SamplingConfig(max_new_tokens=1))
        assert await _tokens(finished) == [1000 * finished.request_id]
        engine.cancel(finished)  # after it finished: the batcher is not bothered with it

    _with_engine(lambda: Counting(log), body)
    assert log == ["add 0", "cancel 0", "add 1"]


def test_a_failed_step_fails_its_requests_and_a_fresh_batcher_carries_on() -> None:
    made: list[Counting] = []

    def make() -> Counting:
        made.append(Counting([], fail_at=2 if not made else None))
        return made[-1]

    async def body(engine: EngineThread) -> None:
        a = await engine.submit([1], SamplingConfig(max_new_tokens=5))
        with pytest.raises(RuntimeError, match="boom"):
            await _tokens(a)
        b = await engine.submit([1], SamplingConfig(max_new_tokens=2))
        assert await _tokens(b) == [1000 * b.request_id, 1000 * b.request_id + 1]

    _with_engine(make, body)
    assert len(made) == 2
