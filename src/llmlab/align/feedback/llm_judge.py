"""A local language model as a judge: its preference read from the log-probabilities of option tokens.

Following RL-CAI (Bai et al. 2022, "Constitutional AI", https://arxiv.org/abs/2212.08073, sec. 4.1), the
model is shown the request, a question (a rubric, or a constitutional principle's comparison question)
and the options, and its answer turn is opened for it:

    user       Consider this request: ... <question> (A) <response a> (B) <response b> Answer with A or B.
    assistant  The better response is (|A      log p("A" | context)
                                       |B      log p("B" | context)

The label is the normalised probability of the options, softmax(log p(A), log p(B))[A]: a soft label,
nothing parsed from free text. Pairwise judgments are always made in both orders (`judges.both_orders`),
which cancels the model's position bias and records, per verdict, whether the choice survived the swap.
Scoring one response asks the same way for ("yes", "no") and reads P(yes).

`option_logprobs` is the pure part (a model, contexts and option ids in; (N, K) summed log-probs out),
batched over right-padded sequences. A context too long for the model keeps its end (the question, the
options and the answer's opening), as `generation.prompt_ids` does for answers. `judgment_chat` writes the SFT chats that teach a (small) model this format from labelled pairs
(`llmlab cai judge-data`). Left out: chain-of-
thought before the label (the optional rationale is generated apart, and never changes the label) and
few-shot examples (a 256-token context has no room for them).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from llmlab.align.feedback.base import Score, Verdict, both_orders, check_lengths
from llmlab.align.generation import chat_responses
from llmlab.align.logprobs import model_logits, sequence_logprobs
from llmlab.align.models import ChatTokenizer, context_length, load_policy

DEFAULT_RUBRIC = ("Which response is more helpful, correct and harmless? A good response answers a "
                  "benign question correctly and briefly, and refuses only requests that would reveal or "
                  "help steal another person's secrets.")
COMPARE_PREFIX, COMPARE_OPTIONS = "The better response is (", ("A", "B")
SCORE_PREFIX, SCORE_OPTIONS = "The answer is (", ("yes", "no")


def compare_message(prompt: str, a: str, b: str, question: str) -> str:
    """The user turn that asks to compare a (shown first, as A) with b."""
    return (f"Consider this request:\n{prompt}\n\n{question}\n(A) {a}\n(B) {b}\n"
            "Answer with A or B.")


def score_message(prompt: str, response: str, question: str) -> str:
    """The user turn that asks whether one response is good."""
    return f"Consider this request:\n{prompt}\n\nResponse: {response}\n\n{question}\nIs the response good? yes or no."


@torch.no_grad()
def option_logprobs(model: nn.Module, contexts: Sequence[Sequence[int]], options: Sequence[Sequence[int]], *,
                    pad_id: int, batch_size: int = 16, device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, K) float64: log p(options[k] | contexts[n]), summed over the option's tokens.

    Every (context, option) is one right-padded sequence; the option's tokens are the masked ones, so
    `logprobs.sequence_logprobs` scores them as it scores a DPO response. A context whose sequence would
    not fit the model's context keeps its end."""
    if not options or any(not o for o in options):
        raise ValueError("every option needs at least one token")
    keep = context_length(model) - max(len(o) for o in options)
    seqs = [(list(c)[-keep:], list(o)) for c in contexts for o in options]
    was_training = model.training
    model.eval()
    out: list[torch.Tensor] = []
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start: start + batch_size]
        T = max(len(c) + len(o) for c, o in chunk)
        ids = torch.full((len(chunk), T), pad_id, dtype=torch.long)
        attention = torch.zeros((len(chunk), T), dtype=torch.long)
        mask = torch.zeros((len(chunk), T), dtype=torch.bool)
        for row, (c, o) in enumerate(chunk):
            ids[row, : len(c) + len(o)] = torch.tensor(c + o)
            attention[row, : len(c) + len(o)] = 1
            mask[row, len(c): len(c) + len(o)] = True
        ids, attention, mask = ids.to(device), attention.to(device), mask.to(device)
        logits = model_logits(model, ids, attention)
        total, _ = sequence_logprobs(logits, ids, mask)
        out.append(total.double().cpu())
    model.train(was_training)
    return torch.cat(out).view(len(contexts), len(options))


def option_probabilities(logps: torch.Tensor) -> torch.Tensor:
    """Each row's options normalised to probabilities: softmax over the options only (RL-CAI's soft label).

    >>> option_probabilities(torch.tensor([[-1.0, -1.0], [0.0, -float("inf")]])).tolist()
    [[0.5, 0.5], [1.0, 0.0]]
    """
    return torch.softmax(logps.double(), dim=-1)


class LLMJudge:
    """A local llmlab or HF model judging with a rubric (see the module doc). `questions` per call (one per
    pair) replace the rubric: the constitutional principles' comparison questions."""

    name = "llm"

    def __init__(self, model: nn.Module, tok: ChatTokenizer, *, rubric: str = DEFAULT_RUBRIC, batch_size: int = 16,
                 device: torch.device | str = "cpu", rationale_tokens: int = 0) -> None:
        self.model, self.tok, self.rubric = model, tok, rubric
        self.batch_size, self.device, self.rationale_tokens = batch_size, torch.device(device), rationale_tokens

    @classmethod
    def load(cls, path: str, **kwargs: Any) -> LLMJudge:
        """The judge of a model folder (llmlab or local HF causal LM)."""
        device = kwargs.get("device", "cpu")
        model, tok = load_policy(path, device=device)
        return cls(model.eval(), tok, **kwargs)

    def _contexts(self, messages: Sequence[str], prefix: str) -> list[list[int]]:
        return [self.tok.render_prompt(m) + self.tok.encode(prefix) for m in messages]

    def _option_ids(self, options: Sequence[str]) -> list[list[int]]:
        return [self.tok.encode(o) for o in options]

    def _rationales(self, messages: Sequence[str]) -> list[str]:
        """A short greedy explanation per message ("" when rationale_tokens is 0); it never sets the label."""
        if not self.rationale_tokens:
            return ["" for _ in messages]
        return chat_responses(self.model, self.tok, messages, max_new_tokens=self.rationale_tokens,
                              batch_size=self.batch_size, device=self.device)

    def _probabilities(self, messages: Sequence[str], prefix: str, options: Sequence[str]) -> torch.Tensor:
        logps = option_logprobs(self.model, self._contexts(messages, prefix), self._option_ids(options),
                                pad_id=self.tok.pad_id, batch_size=self.batch_size, device=self.device)
        return option_probabilities(logps)

    def compare_once(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str],
                     questions: Sequence[str] | None = None) -> list[Verdict]:
        """P(a, shown first, is better) in one order only: position bias included (use `compare`)."""
        check_lengths(prompts, a, b)
        questions = list(questions) if questions is not None else [self.rubric] * len(prompts)
        messages = [compare_message(p, x, y, q) for p, x, y, q in zip(prompts, a, b, questions, strict=True)]
        probs = self._probabilities(messages, COMPARE_PREFIX, COMPARE_OPTIONS)[:, 0]
        return [Verdict(float(p), f"P(A)={float(p):.3f}" + (f": {r}" if r else ""))
                for p, r in zip(probs, self._rationales(messages), strict=True)]

    def compare(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str], *,
                questions: Sequence[str] | None = None) -> list[Verdict]:
        """P(a is better than b), averaged over both orders; each verdict says whether it was consistent."""
        if questions is not None:
            check_lengths(prompts, questions)
        once = functools.partial(self.compare_once, questions=questions)
        return both_orders(once, prompts, a, b)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Score]:
        """P("yes") that the response is good under the rubric, normalised over ("yes", "no")."""
        check_lengths(prompts, responses)
        messages = [score_message(p, r, self.rubric) for p, r in zip(prompts, responses, strict=True)]
        probs = self._probabilities(messages, SCORE_PREFIX, SCORE_OPTIONS)[:, 0]
        return [Score(float(p), f"P(yes)={float(p):.3f}" + (f": {r}" if r else ""))
                for p, r in zip(probs, self._rationales(messages), strict=True)]


def judgment_chat(prompt: str, chosen: str, rejected: str, question: str, *, chosen_first: bool) -> dict[str, Any]:
    """An SFT chat that teaches the judge's own format: the comparison message with the chosen response shown
    first or second, answered by COMPARE_PREFIX + the chosen letter + ")". A model trained on these is read
    by `LLMJudge.compare` at exactly the tokens it was trained to write (tests/align/test_llm_judge.py)."""
    a, b = (chosen, rejected) if chosen_first else (rejected, chosen)
    letter = COMPARE_OPTIONS[0] if chosen_first else COMPARE_OPTIONS[1]
    return {"messages": [{"role": "user", "content": compare_message(prompt, a, b, question)},
                         {"role": "assistant", "content": f"{COMPARE_PREFIX}{letter})"}]}


def build_llm_judge(path: str) -> LLMJudge:
    """`llm=DIR` in `judges.build_judge`: the default rubric, on the CPU."""
    from llmlab.errors import UserError

    if not path:
        raise UserError("the llm judge needs a model folder: llm=DIR")
    return LLMJudge.load(path)
