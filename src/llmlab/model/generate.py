"""Sampling and generation: a pure sampler, the slow oracle, and the KV-cache `Engine`.

    sample_next_token(logits, generator=g, temperature=0.8, top_k=50, top_p=0.95)  # (B, V) -> (B,)
    generate_naive(model, [ids], max_new_tokens=32)     # recomputes the whole prefix every step
    Engine(model).generate([ids_a, ids_b], ...)         # prefill once, then one position per step

The naive generator is kept as the oracle: greedy `Engine` outputs equal it token for
token (tests/model/test_generate.py), and benchmarks/bench_model.py times both, which is
the argument for the cache: naive costs O(T^2) positions over T steps, the engine O(T).

After the prefill each step runs a decode step chosen by name (model/decode.py): "static"
(default) prepares what does not change between steps once; "forward" is the model's own
forward with one token, as the engine first did (benchmarks/decode_speed.py times both).

Batches of prompts of different lengths are left-padded: padded keys are masked and each
row's positions start at 0 at its first real token, so a row's continuation does not depend
on what else is in the batch (up to float rounding of the batched matmuls).

Left out: beam search, speculative decoding, and continuous batching (rows finish together here;
llmlab.inference.batching has it, on a paged KV cache).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from llmlab.errors import UserError
from llmlab.model.decode import DECODE_STEPS
from llmlab.model.llama import Transformer


def sample_next_token(logits: torch.Tensor, *, generator: torch.Generator | None = None, temperature: float = 1.0,
                      top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """One token id per row of `logits` (B, V). Temperature 0 is greedy (argmax, no randomness).

    top_k keeps the k largest logits; top_p (nucleus, Holtzman et al. 2019) keeps the smallest
    set of most likely tokens whose probability reaches p (the most likely always stays).
    Both filters apply after the temperature, as in HF `generate`.
    """
    if temperature < 0:
        raise UserError(f"temperature must be >= 0, got {temperature}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise UserError(f"top_p must be in (0, 1], got {top_p}")
    if top_k is not None and top_k < 1:
        raise UserError(f"top_k must be at least 1, got {top_k}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs >= top_p  # the mass before a token already reaches p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty (Keskar et al. 2019) on tokens already seen (`seen` (B, V) bool): a positive
    logit is divided by `penalty`, a negative one multiplied, so both become less likely."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


@dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0: greedy
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    stop_tokens: tuple[int, ...] = ()  # generation of a row ends after one of these
    vocab_limit: int | None = None  # ids from this on are never sampled: rows of a padded embedding table
                                    # that no tokenizer id maps to (a model wider than its tokenizer)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise UserError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.repetition_penalty <= 0:
            raise UserError(f"repetition_penalty must be positive, got {self.repetition_penalty}")


def _next_tokens(logits: torch.Tensor, seen: torch.Tensor, s: SamplingConfig,
                 generator: torch.Generator | None) -> torch.Tensor:
    if s.vocab_limit is not None and s.vocab_limit < logits.shape[-1]:
        # (B, vocab_limit): the argmax and the samples index the same ids
        logits, seen = logits[..., : s.vocab_limit], seen[..., : s.vocab_limit]
    logits = apply_repetition_penalty(logits, seen, s.repetition_penalty)
    return sample_next_token(logits, generator=generator, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p)


def _check_prompts(model: Transformer, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> None:
    if not prompts or any(len(p) == 0 for p in prompts):
        raise UserError("every prompt needs at least one token")
    longest = max(len(p) for p in prompts) + max_new_tokens
    if longest > model.cfg.max_seq_len:
        raise UserError(f"prompt + max_new_tokens = {longest} tokens is longer than the model's max_seq_len = "
                        f"{model.cfg.max_seq_len}")
    vocab = model.cfg.vocab_size
    if any(not 0 <= t < vocab for p in prompts for t in p):
        raise UserError(f"a prompt token id is outside the model's vocabulary [0, {vocab})")


@torch.inference_mode()
def generate_naive(model: Transformer, prompts: Sequence[Sequence[int]], sampling: SamplingConfig = SamplingConfig(),
                   *, generator: torch.Generator | None = None) -> list[list[int]]:
    """The oracle: each prompt alone, the whole sequence recomputed for every new token."""
    _check_prompts(model, prompts, sampling.max_new_tokens)
    device = model.embed.weight.device
    outputs = []
    for prompt in prompts:
        ids = torch.tensor([list(prompt)], device=device)  # (1, T)
        new: list[int] = []
        for _ in range(sampling.max_new_tokens):
            logits = model(ids).logits[:, -1]  # (1, V)
            seen = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, ids, True)
            token = _next_tokens(logits, seen, sampling, generator)
            new.append(int(token))
            ids = torch.cat([ids, token[:, None]], dim=1)
            if new[-1] in sampling.stop_tokens:
                break
        outputs.append(new)
    return outputs


class Engine:
    """Batched generation with a pre-allocated KV cache: one prefill, then one position per step.

    `decode` names the step (model/decode.py): "static" (default) prepares everything that does not
    change between steps once; "forward" calls the model's forward per token, as the engine did first.
    """

    def __init__(self, model: Transformer, *, pad_id: int = 0, decode: str = "static") -> None:
        if decode not in DECODE_STEPS:
            raise UserError(f"unknown decode step {decode!r}; choose one of {', '.join(DECODE_STEPS)}")
        self.model = model
        self.pad_id = pad_id
        self.decode = decode

    @torch.inference_mode()
    def stream(self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig = SamplingConfig(), *,
               generator: torch.Generator | None = None) -> Iterator[list[int | None]]:
        """Yield, for each step, every row's new token (None for a row that already stopped)."""
        model, s = self.model, sampling
        _check_prompts(model, prompts, s.max_new_tokens)
        if s.max_new_tokens == 0:
            return
        device = model.embed.weight.device
        B, P = len(prompts), max(len(p) for p in prompts)
        total = P + s.max_new_tokens
        ids = torch.full((B, P), self.pad_id, dtype=torch.long, device=device)
        real = torch.zeros(B, total, dtype=torch.bool, device=device)  # True at real (non-pad) positions
        for row, prompt in enumerate(prompts):
            ids[row, P - len(prompt):] = torch.tensor(list(prompt), device=device)
            real[row, P - len(prompt):] = True
        padded = bool((~real[:, :P]).any())
        positions = (real[:, :P].long().cumsum(dim=1) - 1).clamp(min=0)  # (B, P): each prompt starts at 0
        seen = torch.zeros(B, model.cfg.vocab_size, dtype=torch.bool, device=device)
        seen.scatter_(1, ids, real[:, :P])
        # one prefill per distinct prompt (G samples of a prompt share it), copied to its rows after
        distinct: dict[tuple[int, ...], int] = {}  # a prompt -> its first row
        first_row = torch.tensor([distinct.setdefault(tuple(p), row) for row, p in enumerate(prompts)], device=device)
        first = torch.tensor(list(distinct.values()), device=device)  # increasing: rows in order of first sight
        cache = model.new_cache(len(first), total)
        logits = model(ids[first], positions=positions[first], cache=cache,
                       key_padding_mask=real[first, :P] if padded else None, logits_to_keep=1).logits[:, -1]
        if len(first) < B:
            index = torch.searchsorted(first, first_row)  # each row's place among the distinct prompts
            cache.select_rows(index)
            logits = logits[index]  # (B, V)
        real[:, P:] = True  # every generated position is a real key
        decode_step = DECODE_STEPS[self.decode](model, cache, key_padding_mask=real if padded else None)
        done = torch.zeros(B, dtype=torch.bool, device=device)
        stops = torch.tensor(s.stop_tokens, dtype=torch.long, device=device)
        rows = torch.arange(B, device=device)
        pos = positions[:, -1]  # (B,)
        for step in range(s.max_new_tokens):
            token = _next_tokens(logits, seen, s, generator)  # (B,)
            yield [None if d else t for t, d in zip(token.tolist(), done.tolist(), strict=True)]
            if s.stop_tokens:
                done |= torch.isin(token, stops)
            if step == s.max_new_tokens - 1 or bool(done.all()):
                return
            if s.repetition_penalty != 1.0:  # `seen` is read by the penalty only
                seen[rows, token] = True
            pos = pos + 1
            logits = decode_step(token, pos)

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig = SamplingConfig(), *,
                 generator: torch.Generator | None = None) -> list[list[int]]:
        """Each prompt's new tokens, up to and including its stop token."""
        outputs: list[list[int]] = [[] for _ in prompts]
        for step_tokens in self.stream(prompts, sampling, generator=generator):
            for row, token in enumerate(step_tokens):
                if token is not None:
                    outputs[row].append(token)
        return outputs
