"""Perplexity and bits per byte of a model (llmlab or HF) on held-out text, document by document.

Each document is scored as pretraining shows it: after the token that separates documents (llmlab's
<|endoftext|>, an HF tokenizer's bos or else eos), so every one of its tokens is predicted, the first
included. With nll the summed negative log-likelihood in nats,

    perplexity     exp(sum nll / sum tokens)         over the pooled tokens of all documents
    bits per byte  sum nll / ln 2 / sum UTF-8 bytes  comparable across tokenizers (a model with a
                                                     coarser tokenizer has fewer, harder tokens)

as train/pretrain.py's `evaluate` defines them on token files. A document longer than the model's
context is cut into consecutive windows that share one token (the last target of a window is the first
input of the next), so every token is scored once, but with the context of its own window only.
Intervals are the seeded bootstrap over documents (the figures are ratios, so documents are resampled
whole). Left out: sliding windows with overlap (a tighter perplexity for long documents).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from llmlab.align.logprobs import model_logits, sequence_logprobs
from llmlab.align.models import ChatTokenizer, context_length
from llmlab.errors import UserError
from llmlab.stats import bootstrap_interval
from llmlab.train.pretrain import eos_id


@dataclass(frozen=True)
class DocumentLoss:
    nll: float  # nats, summed over the document's tokens
    tokens: int
    bytes: int  # UTF-8 bytes of the document


def document_start(tok: ChatTokenizer) -> int:
    """The token a document follows in pretraining."""
    if tok.is_llmlab:
        return eos_id(tok.inner)
    for token_id in (tok.inner.bos_token_id, tok.inner.eos_token_id):
        if token_id is not None:
            return int(token_id)
    raise UserError(f"{tok.inner.name_or_path}: the tokenizer has no bos or eos token to start a document with")


def windows(ids: Sequence[int], context: int) -> list[list[int]]:
    """Consecutive windows of at most `context` ids sharing one id, which together predict ids[1:] once.

    >>> windows([0, 1, 2, 3, 4, 5], 3)
    [[0, 1, 2], [2, 3, 4], [4, 5]]
    """
    if context < 2:
        raise ValueError("a window needs at least two tokens")
    return [list(ids[a:a + context]) for a in range(0, len(ids) - 1, context - 1)]


@torch.no_grad()
def document_losses(model: nn.Module, tok: ChatTokenizer, texts: Sequence[str], *, batch_size: int,
                    device: torch.device, progress: Callable[[int], Any] | None = None) -> list[DocumentLoss]:
    """Each document's summed nll, token count and bytes (`progress(n)` after each batch of windows)."""
    model.eval()
    start = document_start(tok)
    cut = [(i, w) for i, text in enumerate(texts) for w in windows([start, *tok.encode(text)], context_length(model))]
    nll = [0.0] * len(texts)
    tokens = [0] * len(texts)
    for b in range(0, len(cut), batch_size):
        chunk = cut[b:b + batch_size]
        T = max(len(w) for _, w in chunk)
        ids = torch.full((len(chunk), T), tok.pad_id, dtype=torch.long)  # (B, T), right-padded
        mask = torch.zeros((len(chunk), T), dtype=torch.bool)
        for row, (_, w) in enumerate(chunk):
            ids[row, :len(w)] = torch.tensor(w)
            mask[row, :len(w)] = True
        ids, mask = ids.to(device), mask.to(device)
        logp, n = sequence_logprobs(model_logits(model, ids, mask.long()), ids, mask)  # (B,), (B,)
        for (i, _), lp, k in zip(chunk, logp.tolist(), n.tolist(), strict=True):
            nll[i] -= lp
            tokens[i] += int(k)
        if progress is not None:
            progress(len(chunk))
    return [DocumentLoss(nll[i], tokens[i], len(text.encode("utf-8"))) for i, text in enumerate(texts)]


def _pooled(docs: Sequence[DocumentLoss], which: str) -> float:
    nll = sum(d.nll for d in docs)
    if which == "perplexity":
        return math.exp(min(nll / sum(d.tokens for d in docs), 700.0))
    if which == "nll_per_token":
        return nll / sum(d.tokens for d in docs)
    return nll / math.log(2) / sum(d.bytes for d in docs)


def perplexity_figures(docs: Sequence[DocumentLoss], *, seed: int = 0, n_boot: int = 2000) -> dict[str, dict[str, float]]:
    """{"perplexity", "nll_per_token", "bits_per_byte"}: each {"n" (documents), "tokens", "mean", "lo", "hi"}
    with the 95% bootstrap interval over documents; NaNs without documents."""
    docs = [d for d in docs if d.tokens]
    out = {}
    for which in ("perplexity", "nll_per_token", "bits_per_byte"):
        value = _pooled(docs, which) if docs else math.nan
        lo, hi = bootstrap_interval(docs, n_boot=n_boot, seed=seed, stat=lambda s, w=which: _pooled(s, w))
        out[which] = {"n": len(docs), "tokens": sum(d.tokens for d in docs), "mean": value, "lo": lo, "hi": hi}
    return out


def bits_per_byte(doc: DocumentLoss) -> float:
    """One document's bits per byte (what paired differences between models compare)."""
    return doc.nll / math.log(2) / doc.bytes
