"""Answers of a policy to chat prompts, batched: llmlab's KV-cache `Engine` for llmlab models, `generate`
for HF models. Greedy at temperature 0, sampled otherwise (seed with torch.manual_seed). Used by
sample-prefs, the evaluation after training, and the online RL rollouts to come.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from llmlab.align.models import ChatTokenizer, context_length, is_llmlab
from llmlab.model.generate import Engine, SamplingConfig


def chat_responses(model: nn.Module, tok: ChatTokenizer, prompts: Sequence[str], *, max_new_tokens: int,
                   batch_size: int, device: torch.device, temperature: float = 0.0,
                   top_p: float | None = None, progress: Callable[[int], object] | None = None) -> list[str]:
    """Each prompt as one user turn, answered (greedily at temperature 0, else sampled; seed with
    torch.manual_seed); the text up to the turn's closing token.

    A prompt too long for the model's context keeps its end (the question and the turn opening), so
    that every row still gets max_new_tokens of room (at most half the context), for llmlab and HF
    models alike. `progress(n)` is told of every n prompts answered (a progress bar's update)."""
    context = context_length(model)
    max_new_tokens = min(max_new_tokens, context // 2)
    keep = context - max_new_tokens
    answers: list[str] = []
    model.eval()
    for start in range(0, len(prompts), batch_size):
        ids = [tok.render_prompt(p)[-keep:] for p in prompts[start: start + batch_size]]
        if is_llmlab(model):
            new = _llmlab_generate(model, ids, tok, max_new_tokens, temperature, top_p)
        else:
            new = _hf_generate(model, ids, tok, max_new_tokens, device, temperature, top_p)
        for tokens in new:
            cut = next((i for i, t in enumerate(tokens) if t in tok.eos_ids), len(tokens))
            answers.append(tok.decode(tokens[:cut]).strip())
        if progress is not None:
            progress(len(ids))
    return answers


def _llmlab_generate(model: nn.Module, ids: list[list[int]], tok: ChatTokenizer, max_new_tokens: int,
                     temperature: float, top_p: float | None) -> list[list[int]]:
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                              stop_tokens=tok.eos_ids, vocab_limit=tok.inner.id_count)
    return Engine(model, pad_id=tok.pad_id).generate(ids, sampling)


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
