"""STAND-IN for the continuous-batching engine: the interface the server is built on, computed the slow way.

    batcher = ContinuousBatcher(model)
    rid = batcher.add(prompt_ids, SamplingConfig(max_new_tokens=16, temperature=0), seed=0)
    while batcher.has_work():
        for event in batcher.step():      # TokenEvent(request_id, token, finished, finish_reason)
            ...

This file only holds the interface steady while the real engine (a paged KV cache with a scheduler
that admits and retires requests between steps) is written elsewhere; at merge that engine replaces
this file. Here each `step` gives every active request one token by a full forward over its whole
sequence, exactly as `generate_naive` (the oracle) does, so a greedy request's tokens equal
`generate_naive`'s. No KV cache, no batching across requests: slow, and correct.

Events: the token that finishes a request carries finished=True and the reason, "stop" (a stop token,
which is reported) or "length" (max_new_tokens reached); a cancelled request gets one event
token=None, finished=True, "cancelled" at the next step; max_new_tokens=0 finishes with token=None,
"length". `block_size` and `num_blocks` are accepted for the real engine's sake and unused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from llmlab.errors import UserError
from llmlab.model.generate import SamplingConfig, apply_repetition_penalty, sample_next_token
from llmlab.model.llama import Transformer


@dataclass(frozen=True)
class TokenEvent:
    request_id: int
    token: int | None  # None only in an event that finishes a request without a new token
    finished: bool
    finish_reason: str | None  # "stop", "length", "cancelled", or None while running


@dataclass
class _Request:
    ids: list[int]
    sampling: SamplingConfig
    generator: torch.Generator
    new: int = 0
    cancelled: bool = False
    seen: set[int] = field(default_factory=set)


class ContinuousBatcher:
    def __init__(self, model: Transformer, *, block_size: int = 16, num_blocks: int | None = None,
                 max_batch: int = 16) -> None:
        if max_batch < 1:
            raise UserError(f"max_batch must be at least 1, got {max_batch}")
        self.model = model
        self.max_batch = max_batch
        self._next_id = 0
        self._active: dict[int, _Request] = {}  # in arrival order; the first max_batch run each step

    def add(self, prompt: Sequence[int], sampling: SamplingConfig, *, seed: int | None = None) -> int:
        if len(prompt) == 0:
            raise UserError("the prompt needs at least one token")
        total = len(prompt) + sampling.max_new_tokens
        if total > self.model.cfg.max_seq_len:
            raise UserError(f"prompt + max_new_tokens = {total} tokens is longer than the model's max_seq_len = "
                            f"{self.model.cfg.max_seq_len}")
        vocab = self.model.cfg.vocab_size
        if any(not 0 <= t < vocab for t in prompt):
            raise UserError(f"a prompt token id is outside the model's vocabulary [0, {vocab})")
        device = self.model.embed.weight.device
        generator = torch.Generator(device=device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        rid, self._next_id = self._next_id, self._next_id + 1
        self._active[rid] = _Request(list(prompt), sampling, generator, seen=set(prompt))
        return rid

    def cancel(self, request_id: int) -> None:
        if request_id in self._active:
            self._active[request_id].cancelled = True

    def has_work(self) -> bool:
        return bool(self._active)

    @torch.inference_mode()
    def step(self) -> list[TokenEvent]:
        events = []
        for rid in list(self._active)[: self.max_batch]:
            r = self._active[rid]
            if r.cancelled or r.sampling.max_new_tokens == 0:
                del self._active[rid]
                events.append(TokenEvent(rid, None, True, "cancelled" if r.cancelled else "length"))
                continue
            token = self._sample(r)
            r.ids.append(token)
            r.seen.add(token)
            r.new += 1
            reason = ("stop" if token in r.sampling.stop_tokens
                      else "length" if r.new == r.sampling.max_new_tokens else None)
            if reason is not None:
                del self._active[rid]
            events.append(TokenEvent(rid, token, reason is not None, reason))
        return events

    def _sample(self, r: _Request) -> int:
        s, device = r.sampling, self.model.embed.weight.device
        logits = self.model(torch.tensor([r.ids], device=device)).logits[:, -1]  # (1, V)
        seen = torch.zeros_like(logits, dtype=torch.bool)
        seen[0, list(r.seen)] = True
        if s.vocab_limit is not None and s.vocab_limit < logits.shape[-1]:
            logits, seen = logits[:, : s.vocab_limit], seen[:, : s.vocab_limit]  # (1, vocab_limit)
        logits = apply_repetition_penalty(logits, seen, s.repetition_penalty)
        return int(sample_next_token(logits, generator=r.generator, temperature=s.temperature, top_k=s.top_k,
                                     top_p=s.top_p))
