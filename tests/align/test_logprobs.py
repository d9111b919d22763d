"""Sequence log-probs: against a float64 log_softmax, a hand-made mask, and with the head cropped to the
response rows (logits_to_keep) for llmlab and HF models."""

from __future__ import annotations

import pytest
import torch

from llmlab.align.logprobs import logits_to_keep, model_logits, nll_loss, sequence_logprobs, token_logprobs
from llmlab.model.config import ModelConfig
from llmlab.model.llama import Transformer


def test_token_logprobs_equal_float64_log_softmax() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g) * 3
    ids = torch.randint(0, 7, (2, 5), generator=g)
    ref = torch.log_softmax(logits.double(), -1)[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    torch.testing.assert_close(token_logprobs(logits, ids).double(), ref, atol=1e-6, rtol=0)


def test_sequence_logprobs_sum_only_the_masked_tokens() -> None:
    """Uniform logits over V = 4: every token has log-prob -log 4. Row 0 scores tokens 2 and 3 (2 tokens),
    row 1 token 1 only; position 0 can never be scored, so its mask bit is ignored."""
    logits = torch.zeros(2, 4, 4)
    ids = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    mask = torch.tensor([[False, False, True, True], [True, True, False, False]])
    sums, counts = sequence_logprobs(logits, ids, mask)
    torch.testing.assert_close(sums, torch.tensor([-2 * 1.3862944, -1.3862944]))
    assert counts.tolist() == [2.0, 1.0]


def test_logits_to_keep_covers_the_earliest_response() -> None:
    """T = 6; responses start at positions 3 and 4: the head must run from position 2, i.e. 4 rows."""
    mask = torch.tensor([[0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 1, 1]], dtype=torch.bool)
    assert logits_to_keep(mask) == 4


@pytest.mark.parametrize("kind", ["llmlab", "hf"])
def test_cropped_head_gives_the_same_logprobs(kind: str) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=4, max_seq_len=32)
    model = Transformer(cfg).eval()
    if kind == "hf":
        from transformers import LlamaConfig, LlamaForCausalLM

        model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=4)).eval()
    ids = torch.randint(0, 50, (3, 10))
    attention = torch.ones(3, 10, dtype=torch.long)
    attention[2, 8:] = 0  # right padding
    mask = torch.zeros(3, 10, dtype=torch.bool)
    mask[0, 5:], mask[1, 7:], mask[2, 4:8] = True, True, True
    with torch.no_grad():
        full = model_logits(model, ids, attention)
        cropped = model_logits(model, ids, attention, keep=logits_to_keep(mask))
    assert cropped.shape[1] == 10 - 3
    for a, b in zip(sequence_logprobs(full, ids, mask), sequence_logprobs(cropped, ids, mask), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(nll_loss(full, ids, mask), nll_loss(cropped, ids, mask), atol=1e-5, rtol=1e-5)
