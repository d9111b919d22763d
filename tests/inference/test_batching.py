"""Continuous batching: every request's tokens equal the naive oracle's for that request alone (greedy and
seeded sampling), with requests arriving at different steps, with a block budget small enough to
preempt, with stop tokens and cancellation; no block leaks; bad input is a UserError."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from llmlab.errors import UserError
from llmlab.inference.batching import ContinuousBatcher, TokenEvent, prefill_groups
from llmlab.model.generate import Engine, SamplingConfig, generate_naive
from llmlab.model.llama import Transformer
from model.conftest import tiny_model  # tests/ is on sys.path: this package sits in it

PROMPTS = ([5, 17, 3, 40, 22, 9, 1], [8], [30, 2, 61, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], [44, 45])
MAX_NEW = (12, 20, 5, 16, 9)  # a different length per request: they leave the batch at different steps
ARRIVAL = (0, 0, 2, 3, 7)  # the step before which each request is added
GREEDY = SamplingConfig(max_new_tokens=0, temperature=0.0)


def run(batcher: ContinuousBatcher, samplings: list[SamplingConfig], seeds: list[int | None] | None = None,
        ) -> tuple[list[list[int]], list[list[TokenEvent]]]:
    """Add request i before step ARRIVAL[i], step until no work is left; each request's tokens and events."""
    seeds = seeds or [None] * len(PROMPTS)
    ids: list[int] = []
    events: dict[int, list[TokenEvent]] = {}
    step = 0
    while len(ids) < len(PROMPTS) or batcher.has_work():
        for i, (prompt, s, seed) in enumerate(zip(PROMPTS, samplings, seeds, strict=True)):
            if ARRIVAL[i] == step:
                ids.append(batcher.add(prompt, s, seed=seed))
        for e in batcher.step():
            events.setdefault(e.request_id, []).append(e)
        assert len(batcher.running) <= batcher.max_batch
        step += 1
    per_request = [events[i] for i in ids]
    return [[e.token for e in evs if e.token is not None] for evs in per_request], per_request


def alone(model: Transformer, samplings: list[SamplingConfig], seeds: list[int] | None = None) -> list[list[int]]:
    """The oracle: each request by itself through generate_naive (with its own seeded generator)."""
    return [generate_naive(model, [p], s, generator=torch.Generator().manual_seed(seeds[i]) if seeds else None)[0]
            for i, (p, s) in enumerate(zip(PROMPTS, samplings, strict=True))]


@pytest.mark.parametrize("fields", [{}, {"n_kv_heads": 2}, {"n_kv_heads": 1, "sliding_window": 4}],
                         ids=["mha", "gqa", "mqa_window4"])
def test_greedy_equals_each_request_alone(fields: dict) -> None:
    model = tiny_model(**fields)
    samplings = [replace(GREEDY, max_new_tokens=n) for n in MAX_NEW]
    want = alone(model, samplings)
    assert [len(w) for w in want] == list(MAX_NEW)
    assert [Engine(model).generate([p], s)[0] for p, s in zip(PROMPTS, samplings, strict=True)] == want
    batcher = ContinuousBatcher(model, block_size=4, max_batch=3)
    got, events = run(batcher, samplings)
    assert got == want
    assert batcher.preemptions == 0 and batcher.pool.num_free == batcher.pool.num_blocks
    for evs in events:  # one event per token; only the last finishes, by length
        assert [e.finished for e in evs] == [False] * (len(evs) - 1) + [True]
        assert [e.finish_reason for e in evs] == [None] * (len(evs) - 1) + ["length"]


@pytest.mark.parametrize("num_blocks", [9, 12])
def test_preemption_keeps_outputs_and_frees_every_block(num_blocks: int) -> None:
    """The longest request needs 29 tokens = 8 blocks of 4: with 9 or 12 blocks the running requests
    outgrow the pool, so some are preempted and recomputed; the tokens stay the oracle's."""
    model = tiny_model(n_kv_heads=2)
    samplings = [replace(GREEDY, max_new_tokens=n, repetition_penalty=1.3) for n in MAX_NEW]
    batcher = ContinuousBatcher(model, block_size=4, num_blocks=num_blocks, max_batch=4)
    got, _ = run(batcher, samplings)
    assert got == alone(model, samplings)
    assert batcher.preemptions > 0
    assert batcher.pool.num_free == num_blocks and not batcher.running and not batcher.waiting


def test_seeded_sampling_equals_each_request_alone() -> None:
    """Each request draws from its own generator, so its samples are the oracle's with the same seed,
    preempted or not."""
    model = tiny_model()
    samplings = [SamplingConfig(max_new_tokens=n, temperature=1.3, top_k=20, top_p=0.9, repetition_penalty=1.2)
                 for n in MAX_NEW]
    seeds = [11, 12, 13, 14, 15]
    want = alone(model, samplings, seeds)
    batcher = ContinuousBatcher(model, block_size=4, num_blocks=9, max_batch=4)
    assert run(batcher, samplings, seeds)[0] == want
    assert batcher.preemptions > 0
    assert run(ContinuousBatcher(model, block_size=8), samplings, seeds)[0] == want


def test_stop_token_is_reported_and_ends_only_its_request() -> None:
    model = tiny_model()
    samplings = [replace(GREEDY, max_new_tokens=n) for n in MAX_NEW]
    free_run = alone(model, samplings)
    stop = free_run[0][3]  # request 0's fourth token
    stopped = [replace(s, stop_tokens=(stop,)) for s in samplings]
    want = alone(model, stopped)
    assert want[0] == free_run[0][:free_run[0].index(stop) + 1]
    got, events = run(ContinuousBatcher(model, block_size=4), stopped)
    assert got == want
    assert events[0][-1] == TokenEvent(events[0][-1].request_id, stop, True, "stop")


def test_cancel_a_waiting_and_a_running_request() -> None:
    model = tiny_model()
    s = replace(GREEDY, max_new_tokens=10)
    batcher = ContinuousBatcher(model, block_size=4, max_batch=2)
    a, b, c = (batcher.add(p, s) for p in PROMPTS[:3])
    first = batcher.step()  # a and b run; c waits for a seat
    assert sorted(e.request_id for e in first) == [a, b]
    batcher.cancel(c)
    batcher.cancel(b)
    assert batcher.pool.num_free == batcher.pool.num_blocks - len(batcher.running[0].blocks)
    events = batcher.step()
    assert events[:2] == [TokenEvent(c, None, True, "cancelled"), TokenEvent(b, None, True, "cancelled")]
    assert [e.request_id for e in events[2:]] == [a]
    tokens = [e.token for e in first if e.request_id == a] + [e.token for e in events[2:]]
    while batcher.has_work():
        tokens += [e.token for e in batcher.step()]
    assert tokens == generate_naive(model, [PROMPTS[0]], s)[0]
    assert batcher.pool.num_free == batcher.pool.num_blocks
    batcher.cancel(a)  # finished: nothing to do
    assert not batcher.has_work()
    with pytest.raises(UserError, match="no request has id 7"):
        batcher.cancel(7)


def test_prefill_groups_by_hand() -> None:
    """Sorted 4, 5, 28, 30, 100: [4, 5] pads to 10 <= 1.25 x 9; adding 28 would pad to 84 > 1.25 x 37;
    [28, 30] pads to 60 <= 1.25 x 58; 100 alone. With no slack allowed only equal lengths share a forward."""
    assert prefill_groups([30, 4, 5, 100, 28]) == [[1, 2], [4, 0], [3]]
    assert prefill_groups([3, 3, 4], max_padding=0.0) == [[0, 1], [2]]
    assert prefill_groups([]) == []


def test_zero_new_tokens_finishes_without_a_token() -> None:
    batcher = ContinuousBatcher(tiny_model())
    rid = batcher.add([1, 2], replace(GREEDY, max_new_tokens=0))
    assert batcher.step() == [TokenEvent(rid, None, True, "length")]
    assert not batcher.has_work()


@pytest.mark.parametrize(("prompt", "sampling", "match"), [
    ([], GREEDY, "at least one token"),
    ([1, 64], GREEDY, "outside the model's vocabulary"),
    (list(range(60)), replace(GREEDY, max_new_tokens=5), "65 tokens is longer than the model's max_seq_len = 64"),
    ([1, 2], replace(GREEDY, max_new_tokens=40), "needs 11 blocks; the pool has 10"),
    ([1], SamplingConfig(max_new_tokens=4, temperature=-1.0), "temperature must be >= 0"),
    ([1], SamplingConfig(max_new_tokens=4, top_p=1.5), "top_p must be in"),
])
def test_bad_requests_are_user_errors(prompt: list[int], sampling: SamplingConfig, match: str) -> None:
    batcher = ContinuousBatcher(tiny_model(), block_size=4, num_blocks=10)
    with pytest.raises(UserError, match=match):
        batcher.add(prompt, sampling)
    assert not batcher.has_work()


@pytest.mark.parametrize("kwargs", [{"block_size": 0}, {"num_blocks": 0}, {"max_batch": 0}])
def test_bad_batcher_settings_are_user_errors(kwargs: dict) -> None:
    with pytest.raises(UserError, match="must be at least 1"):
        ContinuousBatcher(tiny_model(), **kwargs)
