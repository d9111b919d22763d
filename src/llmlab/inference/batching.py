"""Continuous batching (Yu et al. 2022, Orca's iteration-level scheduling) over a paged KV cache
(Kwon et al. 2023, vLLM): requests join and leave the running batch at every step instead of a batch
starting and ending together.

    b = ContinuousBatcher(model, block_size=16, num_blocks=256, max_batch=16)
    rid = b.add([5, 17, 3], SamplingConfig(max_new_tokens=32, temperature=0), seed=0)
    while b.has_work():
        for event in b.step():   # TokenEvent(request_id, token, finished, finish_reason)
            ...

One `step()`:
    1. every running request gets the block its next token needs; when the pool is empty the newest
       running request is preempted (recompute-style: its blocks are freed, it goes back to the front
       of the queue with its generated tokens, and its prompt + generated tokens are prefilled again
       when it is readmitted)
    2. if nothing was preempted, waiting requests are admitted in order while the batch has room and
       the free blocks hold their whole sequence
    3. forwards prefill the admitted requests, grouped by length so that padding stays small
       (`prefill_groups`), and one forward decodes one token for the others; each request samples
       its next token with its own generator
    4. requests that produced a stop token or reached max_new_tokens leave and free their blocks

Greedy outputs equal `generate_naive` / `Engine` for each request alone (tests/inference), whatever
else is in the batch and however often it is preempted, up to float rounding of batched matmuls;
sampled outputs too, since each request draws from its own seeded generator in the same order.

Left out: chunked prefill (a long prompt is one forward), prefill and decode mixed in one forward
(padding the decode rows to the prompt length costs more than a second call), priorities, swapping
preempted blocks to host memory, and prefix sharing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from llmlab.errors import UserError
from llmlab.inference.paged_cache import BlockPool, PagedBatch
from llmlab.model.generate import SamplingConfig, _next_tokens, sample_next_token
from llmlab.model.llama import Transformer


@dataclass(frozen=True)
class TokenEvent:
    request_id: int
    token: int | None  # None only in an event that finishes a request without a new token
    finished: bool
    finish_reason: str | None  # "stop" (the stop token is reported), "length", "cancelled"; None while running


def prefill_groups(lengths: Sequence[int], *, max_padding: float = 0.25) -> list[list[int]]:
    """Split prompts into forwards that waste little on padding: indices sorted by length, a group closed
    when padding it to its longest would add more than max_padding of its real tokens.

    prefill_groups([30, 4, 5, 100, 28]) -> [[1, 2], [4, 0], [3]]   (2 x 5 <= 1.25 x 9; 3 x 28 > 1.25 x 37)
    Why: a forward costs about its padded tokens, and one long prompt in a batch of short ones would
    make every row as long as it.
    """
    groups: list[list[int]] = []
    total = 0
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if groups and (len(groups[-1]) + 1) * lengths[i] <= (1 + max_padding) * (total + lengths[i]):
            groups[-1].append(i)
            total += lengths[i]
        else:
            groups.append([i])
            total = lengths[i]
    return groups


@dataclass(eq=False)
class _Request:
    id: int
    prompt: list[int]
    sampling: SamplingConfig
    generator: torch.Generator
    seen: torch.Tensor  # (1, vocab) bool: prompt and generated ids, for the repetition penalty
    generated: list[int] = field(default_factory=list)
    blocks: list[int] = field(default_factory=list)  # the block table
    cached: int = 0  # leading tokens whose keys and values are in `blocks`

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.generated

    @property
    def length(self) -> int:
        return len(self.prompt) + len(self.generated)


class ContinuousBatcher:
    """Requests in, token events out; see the module docstring for one step."""

    def __init__(self, model: Transformer, *, block_size: int = 16, num_blocks: int | None = None,
                 max_batch: int = 16) -> None:
        cfg = model.cfg
        if block_size < 1 or max_batch < 1 or (num_blocks is not None and num_blocks < 1):
            raise UserError(f"block_size, num_blocks and max_batch must be at least 1, got {block_size}, "
                            f"{num_blocks}, {max_batch}")
        if num_blocks is None:  # room for max_batch sequences of max_seq_len: never preempts
            num_blocks = max_batch * -(-cfg.max_seq_len // block_size)
        w = model.embed.weight
        self.model = model
        self.max_batch = max_batch
        self.pool = BlockPool(cfg.n_layers, num_blocks, cfg.kv_heads, block_size, cfg.head_dim,
                              dtype=w.dtype, device=w.device)
        self.waiting: deque[_Request] = deque()
        self.running: list[_Request] = []  # in admission order: the last is the first to be preempted
        self.preemptions = 0  # how many times a request lost its blocks
        self._pending: list[TokenEvent] = []  # finishing events that need no forward (cancel, 0 new tokens)
        self._next_id = 0

    def add(self, prompt: Sequence[int], sampling: SamplingConfig, *, seed: int | None = None) -> int:
        """Queue a request; returns its id. `seed` seeds its generator (None: a random seed)."""
        cfg, device = self.model.cfg, self.pool.k.device
        prompt = list(prompt)
        if not prompt:
            raise UserError("a prompt needs at least one token")
        if any(not 0 <= t < cfg.vocab_size for t in prompt):
            raise UserError(f"a prompt token id is outside the model's vocabulary [0, {cfg.vocab_size})")
        total = len(prompt) + sampling.max_new_tokens
        if total > cfg.max_seq_len:
            raise UserError(f"prompt + max_new_tokens = {total} tokens is longer than the model's max_seq_len = "
                            f"{cfg.max_seq_len}")
        if self.pool.blocks_for(total) > self.pool.num_blocks:
            raise UserError(f"prompt + max_new_tokens = {total} tokens needs {self.pool.blocks_for(total)} blocks; "
                            f"the pool has {self.pool.num_blocks}")
        # the sampler's own checks (temperature, top_k, top_p) now, so a bad request fails here, not mid-batch
        sample_next_token(torch.zeros(1, 1), temperature=sampling.temperature, top_k=sampling.top_k,
                          top_p=sampling.top_p, generator=torch.Generator())
        generator = torch.Generator(device=device)
        generator.manual_seed(seed) if seed is not None else generator.seed()
        seen = torch.zeros(1, cfg.vocab_size, dtype=torch.bool, device=device)
        seen[0, prompt] = True
        request = _Request(self._next_id, prompt, sampling, generator, seen)
        self._next_id += 1
        if sampling.max_new_tokens == 0:
            self._pending.append(TokenEvent(request.id, None, True, "length"))
        else:
            self.waiting.append(request)
        return request.id

    def cancel(self, request_id: int) -> None:
        """Drop a request; the next step reports it finished ("cancelled"). A finished request: no-op."""
        if not 0 <= request_id < self._next_id:
            raise UserError(f"no request has id {request_id}")
        for queue in (self.waiting, self.running):
            for request in queue:
                if request.id == request_id:
                    queue.remove(request)
                    self.pool.free(request.blocks)
                    self._pending.append(TokenEvent(request_id, None, True, "cancelled"))
                    return

    def has_work(self) -> bool:
        return bool(self.waiting or self.running or self._pending)

    @torch.inference_mode()
    def step(self) -> list[TokenEvent]:
        """Admit, run one batched step, retire; returns this step's events (see the module docstring)."""
        events, self._pending = self._pending, []
        preemptions = self.preemptions
        decoding = self._reserve_decode_blocks()
        prefilling = self._admit() if self.preemptions == preemptions else []  # blocks are short: admit none
        for group in prefill_groups([r.length for r in prefilling]):
            events += self._run([prefilling[i] for i in group])
        if decoding:
            events += self._run(decoding)
        return events

    def _reserve_decode_blocks(self) -> list[_Request]:
        """Give each running request room for the token it feeds in this step, preempting from the back."""
        i = 0
        while i < len(self.running):
            request = self.running[i]
            while self.pool.blocks_for(request.length) > len(request.blocks):
                if self.pool.num_free:
                    request.blocks.append(self.pool.allocate())
                else:
                    self._preempt(self.running[-1])
                    if request not in self.running:  # it was the newest: it waits for its turn again
                        break
            i += 1
        return list(self.running)

    def _preempt(self, request: _Request) -> None:
        self.running.remove(request)
        self.pool.free(request.blocks)
        request.blocks, request.cached = [], 0
        self.waiting.appendleft(request)  # successive preemptions take newer first: the older ends up in front
        self.preemptions += 1

    def _admit(self) -> list[_Request]:
        admitted = []
        while self.waiting and len(self.running) < self.max_batch:
            need = self.pool.blocks_for(self.waiting[0].length)
            if need > self.pool.num_free:
                break
            request = self.waiting.popleft()
            request.blocks = [self.pool.allocate() for _ in range(need)]
            self.running.append(request)
            admitted.append(request)
        return admitted

    def _run(self, rows: list[_Request]) -> list[TokenEvent]:
        """One forward over rows (each feeds its tokens not yet cached), then each samples one token."""
        new = [r.tokens[r.cached:] for r in rows]
        batch = PagedBatch(self.pool, [r.blocks for r in rows], [r.cached for r in rows], [len(n) for n in new])
        T = max(len(n) for n in new)
        ids = torch.tensor([[0] * (T - len(n)) + n for n in new], device=self.pool.k.device)  # (B, T), left-padded
        logits = self.model(ids, positions=batch.positions, cache=batch, key_padding_mask=batch.key_padding_mask,
                            logits_to_keep=1).logits[:, -1]  # (B, V)
        events = []
        for request, tokens, row_logits in zip(rows, new, logits, strict=True):
            request.cached += len(tokens)
            s = request.sampling
            token = int(_next_tokens(row_logits[None], request.seen, s, request.generator))
            request.generated.append(token)
            request.seen[0, token] = True
            reason = "stop" if token in s.stop_tokens else "length" if len(request.generated) == s.max_new_tokens \
                else None
            if reason is not None:
                self.running.remove(request)
                self.pool.free(request.blocks)
                request.blocks = []
            events.append(TokenEvent(request.id, token, reason is not None, reason))
        return events
