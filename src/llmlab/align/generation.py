"""Answers of a policy to chat prompts, batched: llmlab's KV-cache `Engine` for llmlab models, `generate`
for HF models. Greedy at temperature 0, sampled otherwise, from an explicit `torch.Generator` when one
is given (else torch's global generator). Used by sample-prefs, the evaluation after training, and the
online RL rollouts (`generate_ids` gives the token ids the RL losses are computed on).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from llmlab.align.models import ChatTokenizer, Message, context_length, is_llmlab
from llmlab.model.generate import Engine, SamplingConfig


def chat_responses(model: nn.Module, tok: ChatTokenizer, prompts: Sequence[str | list[Message]], *,
                   max_new_tokens: int, batch_size: int, device: torch.device, temperature: float = 0.0,
                   top_p: float | None = None, progress: Callable[[int], object] | None = None,
                   generator: torch.Generator | None = None) -> list[str]:
    """Each prompt (a string: one user turn; or a conversation so far, as SL-CAI's critique rounds)
    answered (greedily at temperature 0, else sampled; seed with torch.manual_seed); the text up to the
    turn's closing token.

    A prompt too long for the model's context keeps its end (the question and the turn opening), so
    that every row still gets max_new_tokens of room (at most half the context), for llmlab and HF
    models alike. `progress(n)` is told of every n prompts answered (a progress bar's update)."""
    ids = prompt_ids(model, tok, prompts, max_new_tokens)
    new = generate_ids(model, tok, ids, max_new_tokens=max_new_tokens, batch_size=batch_size, device=device,
                       temperature=temperature, top_p=top_p, progress=progress, generator=generator)
    return [tok.decode(cut_at_stop(tokens, tok.eos_ids)).strip() for tokens in new]


def prompt_ids(model: nn.Module, tok: ChatTokenizer, prompts: Sequence[str | list[Message]],
               max_new_tokens: int) -> list[list[int]]:
    """Each prompt rendered through the chat template up to the assistant's turn, cut to its end where
    prompt + max_new_tokens (at most half the context) would not fit the model's context."""
    context = context_length(model)
    keep = context - min(max_new_tokens, context // 2)
    return [tok.render_prompt(p)[-keep:] for p in prompts]


def cut_at_stop(tokens: Sequence[int], stops: Sequence[int]) -> list[int]:
    """The tokens before the first stop token."""
    return list(next((tokens[:i] for i, t in enumerate(tokens) if t in stops), tokens))


def through_stop(tokens: Sequence[int], stops: Sequence[int]) -> list[int]:
    """The tokens up to and including the first stop token."""
    return list(next((tokens[: i + 1] for i, t in enumerate(tokens) if t in stops), tokens))


def generate_ids(model: nn.Module, tok: ChatTokenizer, ids: Sequence[Sequence[int]], *, max_new_tokens: int,
                 batch_size: int, device: torch.device, temperature: float = 0.0, top_p: float | None = None,
                 progress: Callable[[int], object] | None = None,
                 generator: torch.Generator | None = None) -> list[list[int]]:
    """The new tokens of each prompt (ids), up to and including the stop token that closed it, in
    batches of `batch_size`. HF `generate` takes no generator: its global seed is drawn from it."""
    max_new_tokens = min(max_new_tokens, context_length(model) // 2)
    was_training = model.training
    model.eval()
    out: list[list[int]] = []
    for start in range(0, len(ids), batch_size):
        chunk = [list(x) for x in ids[start: start + batch_size]]
        if is_llmlab(model):
            out += _llmlab_generate(model, chunk, tok, max_new_tokens, temperature, top_p, generator)
        else:
            if generator is not None:
                torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            # HF pads a row that stopped early up to the batch's longest: keep it up to its stop token
            out += [through_stop(row, tok.eos_ids) for row in
                    _hf_generate(model, chunk, tok, max_new_tokens, device, temperature, top_p)]
        if progress is not None:
            progress(len(chunk))
    model.train(was_training)
    return out


def _llmlab_generate(model: nn.Module, ids: list[list[int]], tok: ChatTokenizer, max_new_tokens: int,
                     temperature: float, top_p: float | None, generator: torch.Generator | None) -> list[list[int]]:
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                              stop_tokens=tok.eos_ids, vocab_limit=tok.inner.id_count)
    return Engine(getattr(model, "module", model), pad_id=tok.pad_id).generate(ids, sampling, generator=generator)


@torch.inference_mode()
def _hf_generate(model: nn.Module, ids: list[list[int]], tok: ChatTokenizer, max_new_tokens: int,
                 device: torch.device, temperature: float, top_p: float | None) -> list[list[int]]:
    P = max(len(x) for x in ids)
    batch = torch.full((len(ids), P), tok.pad_id, dtype=torch.long)
    attention = torch.zeros((len(ids), P), dtype=torch.long)
    for row, x in enumerate(ids):  # left padding: every row's next token comes at the same position
        batch[row, P - len(x):] = torch.tensor(x)
        attention[row, P - len(x):] = 1
    sampling = ({"do_sample": True, "temperature": temperature, "top_p": top_p or 1.0, "top_k": 0}
                if temperature > 0 else {"do_sample": False})
    out = model.generate(input_ids=batch.to(device), attention_mask=attention.to(device), **sampling,
                         max_new_tokens=max_new_tokens, eos_token_id=list(tok.eos_ids) or None,
                         pad_token_id=tok.pad_id)
    return [row[P:].tolist() for row in out]
