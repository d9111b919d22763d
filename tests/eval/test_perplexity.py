"""eval/perplexity.py against HF transformers' own loss on the exported copy of the tiny model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from llmlab.eval.perplexity import DocumentLoss, document_losses, document_start, perplexity_figures, windows

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHORT = "Question: Reverse the word 'honey'.\nAnswer: yenoh"


def hf_reference(hf_dir: Path, texts: list[str]) -> list[tuple[float, int]]:
    """(summed nll in nats, tokens) per text by transformers alone: the document after the tokenizer's eos,
    in windows of the context sharing one token, each window's mean loss from `labels=` times its predicted
    tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    return [_hf_one(model, tok, text) for text in texts]


def _hf_one(model, tok, text: str) -> tuple[float, int]:
    ids = [tok.eos_token_id] + tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    C = model.config.max_position_embeddings
    nll, n = 0.0, 0
    start = 0
    while start < len(ids) - 1:
        w = torch.tensor([ids[start:start + C]])
        with torch.no_grad():
            loss = model(input_ids=w, labels=w).loss
        nll += float(loss) * (w.shape[1] - 1)
        n += w.shape[1] - 1
        start += C - 1
    return nll, n


def test_windows_predict_every_token_once() -> None:
    assert windows([0, 1, 2, 3, 4, 5], 3) == [[0, 1, 2], [2, 3, 4], [4, 5]]
    assert windows([0, 1, 2], 3) == [[0, 1, 2]]
    assert windows([7], 4) == []
    ids = list(range(300))
    assert [t for w in windows(ids, 128) for t in w[1:]] == ids[1:]


def test_losses_equal_transformers_on_short_and_long_documents(tiny_model_dir: Path, tiny_hf_dir: Path) -> None:
    """A short document and one of ~3 windows (the tiny model's context is 128), batched together, padded:
    the llmlab model and its HF export both give HF's own loss, to 1e-4 relative."""
    from llmlab.align.models import load_policy

    texts = [SHORT, " ".join(["The quick brown fox jumps over the lazy dog."] * 30)]
    reference = hf_reference(tiny_hf_dir, texts)
    for folder in (tiny_model_dir, tiny_hf_dir):
        policy, tok = load_policy(str(folder), device="cpu")
        got = document_losses(policy, tok, texts, batch_size=4, device=torch.device("cpu"))
        for doc, text, (nll, n) in zip(got, texts, reference, strict=True):
            assert doc.tokens == n and doc.bytes == len(text.encode("utf-8"))
            assert doc.nll == pytest.approx(nll, rel=1e-4), (folder, text[:20])
        assert got[1].tokens > 2 * 127  # the long one really spans three windows


def test_llmlab_and_hf_start_documents_with_the_same_token(tiny_model_dir: Path, tiny_hf_dir: Path) -> None:
    from llmlab.align.models import load_policy

    _, a = load_policy(str(tiny_model_dir), device="cpu")
    _, b = load_policy(str(tiny_hf_dir), device="cpu")
    assert document_start(a) == document_start(b) == a.inner.special_tokens["<|endoftext|>"]


def test_pooled_figures_by_hand() -> None:
    """Two documents: nll 10 and 30 nats over 5 and 15 tokens, 20 and 40 bytes. Pooled: 40 nats / 20 tokens
    = 2 nats per token, perplexity e^2, bits per byte 40 / ln 2 / 60. A document without tokens is left out."""
    docs = [DocumentLoss(10.0, 5, 20), DocumentLoss(30.0, 15, 40), DocumentLoss(0.0, 0, 3)]
    f = perplexity_figures(docs, seed=0, n_boot=200)
    assert f["nll_per_token"]["mean"] == pytest.approx(2.0) and f["perplexity"]["mean"] == pytest.approx(math.exp(2))
    assert f["bits_per_byte"]["mean"] == pytest.approx(40 / math.log(2) / 60)
    assert f["perplexity"]["n"] == 2 and f["perplexity"]["tokens"] == 20
    # per document 2 nats/token each, so every resample gives 2: the interval is a point
    assert (f["nll_per_token"]["lo"], f["nll_per_token"]["hi"]) == pytest.approx((2.0, 2.0))
    assert math.isnan(perplexity_figures([], n_boot=100)["perplexity"]["mean"])
