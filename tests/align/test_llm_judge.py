"""The LLM judge: option log-probabilities against a float64 forward pass of the same model (llmlab) and
against transformers (the exported HF copy), both orders, scores, and the judge registry."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from llmlab.align.feedback.judges import build_judge, position_consistency
from llmlab.align.feedback.llm_judge import (
    COMPARE_OPTIONS,
    COMPARE_PREFIX,
    DEFAULT_RUBRIC,
    SCORE_OPTIONS,
    SCORE_PREFIX,
    LLMJudge,
    compare_message,
    judgment_chat,
    option_logprobs,
    option_probabilities,
    score_message,
)
from llmlab.align.generation import chat_responses
from llmlab.align.models import load_policy
from llmlab.errors import UserError

PROMPTS = ["What is 2 + 3?", "Tell me Ada Lovelace's password.", "Reverse the word 'safe'."]
SHORT = "Which is better?"  # the default rubric makes contexts longer than the tiny model's 128 tokens
A = ["5", "Her password is kite-77.", "efas"]
B = ["6", "I can't help with that.", "safe"]


def reference_logprob(model: torch.nn.Module, context: list[int], option: list[int]) -> float:
    """log p(option | context) from one unpadded float64 forward pass: sum over the option's tokens of
    log_softmax(logits at the position before the token)[token]."""
    ids = torch.tensor([context + option])
    with torch.no_grad():
        logits = model(ids).logits if not hasattr(model, "config") else model(input_ids=ids).logits
    logp = torch.log_softmax(logits[0].double(), dim=-1)
    return sum(float(logp[len(context) + j - 1, t]) for j, t in enumerate(option))


@pytest.fixture(scope="module")
def lab(tiny_model_dir: Path) -> LLMJudge:
    return LLMJudge.load(str(tiny_model_dir), batch_size=4)


def test_option_logprobs_equal_an_unpadded_float64_forward_pass(lab: LLMJudge, tiny_model_dir: Path) -> None:
    """Batched, right-padded, float32 log-probs of one- and multi-token options equal a float64 forward pass
    of each sequence alone (the same weights in double precision)."""
    ref_model, tok = load_policy(str(tiny_model_dir), device="cpu", dtype=torch.float64)
    ref_model.eval()
    contexts = [tok.render_prompt(compare_message(p, a, b, SHORT)) + tok.encode(COMPARE_PREFIX)
                for p, a, b in zip(PROMPTS, A, B, strict=True)]
    assert max(map(len, contexts)) + 3 < 128  # nothing cut: the reference sees the same tokens
    options = [tok.encode(o) for o in (*COMPARE_OPTIONS, "yes please")]
    assert len(options[2]) > 1  # a multi-token option is summed over its tokens
    got = option_logprobs(lab.model, contexts, options, pad_id=tok.pad_id, batch_size=4)
    want = torch.tensor([[reference_logprob(ref_model, c, o) for o in options] for c in contexts], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-5)
    assert got.shape == (3, 3) and bool((got < 0).all())


def test_hf_judge_matches_transformers_and_the_llmlab_judge(lab: LLMJudge, tiny_hf_dir: Path) -> None:
    """The exported HF copy, judged through transformers, gives the llmlab judge's probabilities; and the
    HF judge's P(A) is softmax over (A, B) of transformers' own float64 log-probs."""
    from transformers import AutoModelForCausalLM

    hf = LLMJudge.load(str(tiny_hf_dir), batch_size=2)
    got = hf.compare_once(PROMPTS, A, B, questions=[SHORT] * 3)
    ref = AutoModelForCausalLM.from_pretrained(str(tiny_hf_dir), dtype=torch.float64).eval()
    for v, p, a, b in zip(got, PROMPTS, A, B, strict=True):
        context = hf.tok.render_prompt(compare_message(p, a, b, SHORT)) + hf.tok.encode(COMPARE_PREFIX)
        la, lb = (reference_logprob(ref, context, hf.tok.encode(o)) for o in COMPARE_OPTIONS)
        want = 1 / (1 + torch.exp(torch.tensor(lb - la, dtype=torch.float64)))
        assert v.p_a == pytest.approx(float(want), abs=1e-5)
    for x, y in zip(got, lab.compare_once(PROMPTS, A, B, questions=[SHORT] * 3), strict=True):
        assert x.p_a == pytest.approx(y.p_a, abs=1e-5)


def test_compare_averages_both_orders_and_reports_consistency(lab: LLMJudge) -> None:
    first, swapped = lab.compare_once(PROMPTS, A, B), lab.compare_once(PROMPTS, B, A)
    verdicts = lab.compare(PROMPTS, A, B)
    for v, x, y in zip(verdicts, first, swapped, strict=True):
        assert v.p_a == pytest.approx((x.p_a + 1 - y.p_a) / 2, abs=1e-12)
        assert v.consistent == ((x.p_a > 0.5) == (1 - y.p_a > 0.5))
    assert position_consistency(verdicts) == sum(v.consistent for v in verdicts) / 3
    # a question per pair replaces the rubric: different contexts, different probabilities
    other = lab.compare(PROMPTS, A, B, questions=["Which is shorter?"] * 3)
    assert [v.p_a for v in other] != [v.p_a for v in verdicts]
    with pytest.raises(ValueError, match="equally long"):
        lab.compare(PROMPTS, A, B, questions=["one"])


def test_score_is_the_normalised_probability_of_yes(lab: LLMJudge) -> None:
    tok = lab.tok
    scores = lab.score(PROMPTS, A)
    contexts = [tok.render_prompt(score_message(p, r, DEFAULT_RUBRIC)) + tok.encode(SCORE_PREFIX)
                for p, r in zip(PROMPTS, A, strict=True)]
    logps = option_logprobs(lab.model, contexts, [tok.encode(o) for o in SCORE_OPTIONS], pad_id=tok.pad_id)
    want = torch.exp(logps[:, 0]) / torch.exp(logps).sum(dim=1)
    assert [s.value for s in scores] == pytest.approx(want.tolist(), abs=1e-12)
    assert all(0 < s.value < 1 and s.rationale.startswith("P(yes)=") for s in scores)


def test_a_context_longer_than_the_model_keeps_its_end(lab: LLMJudge) -> None:
    """The tiny model sees 128 tokens: a long request is cut from the left, the question and options kept."""
    long_prompt = "Facts: " + "Ada lives in Paris. " * 60 + "Question: where does Ada live?"
    tok = lab.tok
    context = tok.render_prompt(compare_message(long_prompt, "Paris", "Rome", DEFAULT_RUBRIC)) + tok.encode(COMPARE_PREFIX)
    assert len(context) > 128
    options = [tok.encode(o) for o in COMPARE_OPTIONS]
    got = option_logprobs(lab.model, [context], options, pad_id=tok.pad_id)
    kept = context[-(128 - 1):]
    ref = option_logprobs(lab.model, [kept], options, pad_id=tok.pad_id)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_rationale_is_the_greedy_answer_and_leaves_the_label_alone(lab: LLMJudge) -> None:
    talkative = LLMJudge(lab.model, lab.tok, rationale_tokens=5)
    with_reason, plain = talkative.compare_once(PROMPTS[:2], A[:2], B[:2]), lab.compare_once(PROMPTS[:2], A[:2], B[:2])
    assert [v.p_a for v in with_reason] == [v.p_a for v in plain]
    messages = [compare_message(p, a, b, DEFAULT_RUBRIC) for p, a, b in zip(PROMPTS[:2], A[:2], B[:2], strict=True)]
    reasons = chat_responses(lab.model, lab.tok, messages, max_new_tokens=5, batch_size=1, device=torch.device("cpu"))
    assert [v.rationale for v in with_reason] == [w.rationale + (f": {r}" if r else "")
                                                  for w, r in zip(plain, reasons, strict=True)]
    assert talkative.compare_once(PROMPTS[:2], A[:2], B[:2]) == with_reason  # greedy: the same twice


def test_option_probabilities_and_registry(tiny_model_dir: Path) -> None:
    probs = option_probabilities(torch.tensor([[-1.0, -2.0]]))
    assert probs[0, 0].item() == pytest.approx(1 / (1 + math.exp(-1.0)), abs=1e-12)
    judge = build_judge(f"llm={tiny_model_dir}")
    assert isinstance(judge, LLMJudge) and judge.name == "llm"
    with pytest.raises(UserError, match="llm=DIR"):
        build_judge("llm")
    with pytest.raises(UserError, match="no such model folder"):
        build_judge("llm=/no/such/dir")


def test_judgment_chats_train_exactly_the_tokens_the_judge_reads(lab: LLMJudge, tiny_hf_dir: Path) -> None:
    """A judge trained on judgment_chat rows is read at the tokens it was trained on: the chat's assistant
    turn, tokenized whole, starts with the judge's context ending (the prefix) and then the option's tokens."""
    hf = LLMJudge.load(str(tiny_hf_dir))
    for tok in (lab.tok, hf.tok):
        for first, letter in ((True, "A"), (False, "B")):
            chat = judgment_chat("What is 2 + 3?", "5", "6", SHORT, chosen_first=first)
            user, reply = chat["messages"]
            assert user["content"] == compare_message("What is 2 + 3?", *(("5", "6") if first else ("6", "5")), SHORT)
            want = tok.encode(COMPARE_PREFIX) + tok.encode(letter)
            assert tok.render_response(reply["content"])[: len(want)] == want
