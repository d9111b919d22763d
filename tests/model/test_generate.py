"""Sampling and generation: the sampler on hand-made distributions, the repetition penalty by hand
and against transformers, the KV-cache Engine against the naive oracle token for token, and greedy
Engine output against HF `generate(do_sample=False)` on the exported model.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from llmlab.errors import UserError
from llmlab.model.generate import (
    Engine,
    SamplingConfig,
    apply_repetition_penalty,
    generate_naive,
    sample_next_token,
)

from .conftest import tiny_model

PROMPTS = ([5, 17, 3, 40, 22, 9, 1], [8], [30, 2, 61, 7])  # lengths 7, 1, 4: two rows are left-padded




def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------- sampler


def test_temperature_zero_and_top_k_one_are_argmax() -> None:
    logits = torch.randn(6, 50, generator=seeded())
    want = logits.argmax(-1)
    assert torch.equal(sample_next_token(logits, temperature=0.0), want)
    for seed in range(5):
        assert torch.equal(sample_next_token(logits, generator=seeded(seed), temperature=1.5, top_k=1), want)
        assert torch.equal(sample_next_token(logits, generator=seeded(seed), top_p=1e-6), want)


def frequencies(logits: torch.Tensor, n: int = 40_000, **kwargs) -> torch.Tensor:
    draws = sample_next_token(logits.expand(n, -1), generator=seeded(7), **kwargs)
    return torch.bincount(draws, minlength=logits.shape[-1]).float() / n


@pytest.mark.parametrize(("top_p", "kept"), [(0.75, 2), (0.85, 3), (0.4, 1), (1.0, 4)])
def test_top_p_keeps_exactly_the_nucleus(top_p: float, kept: int) -> None:
    """probs [0.5, 0.3, 0.15, 0.05]: the nucleus is the shortest prefix whose mass reaches p, so
    p = 0.75 -> {0, 1} (0.5 < 0.75 <= 0.8), p = 0.85 -> {0, 1, 2}, p = 0.4 -> {0}. Tokens outside are
    never drawn; inside, frequencies follow the renormalised probabilities (40k draws: std <= 0.0025)."""
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    freq = frequencies(probs.log()[None], top_p=top_p)
    want = torch.zeros(4)
    want[:kept] = probs[:kept] / probs[:kept].sum()
    assert (freq[kept:] == 0).all()
    torch.testing.assert_close(freq, want, rtol=0, atol=0.015)


def test_top_k_keeps_the_k_largest() -> None:
    logits = torch.tensor([[0.1, 2.0, -1.0, 1.5, 0.3]])
    freq = frequencies(logits, top_k=2)
    want = torch.zeros(5)
    want[[1, 3]] = torch.tensor([2.0, 1.5]).softmax(0)
    torch.testing.assert_close(freq, want, rtol=0, atol=0.015)


def test_temperature_scales_the_logits() -> None:
    """logits [1, 2, 3] at T = 2 -> softmax([0.5, 1, 1.5]) = e^x / sum = [0.1863, 0.3072, 0.5065]."""
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    by_hand = torch.tensor([math.exp(x) for x in (0.5, 1.0, 1.5)])
    by_hand /= by_hand.sum()
    torch.testing.assert_close(by_hand, torch.tensor([0.1863, 0.3072, 0.5065]), rtol=0, atol=1e-4)
    torch.testing.assert_close(frequencies(logits, temperature=2.0), by_hand, rtol=0, atol=0.015)
    # the same generator state draws the same tokens from the hand-computed distribution
    n = 2000
    got = sample_next_token(logits.expand(n, -1), generator=seeded(3), temperature=2.0)
    want = torch.multinomial(by_hand.expand(n, -1), 1, generator=seeded(3)).squeeze(-1)
    assert torch.equal(got, want)


@pytest.mark.parametrize("kwargs", [{"temperature": -0.1}, {"top_p": 0.0}, {"top_p": 1.5}, {"top_k": 0}])
def test_invalid_sampler_arguments(kwargs: dict) -> None:
    with pytest.raises(UserError):
        sample_next_token(torch.zeros(1, 4), **kwargs)


def test_invalid_sampling_config() -> None:
    with pytest.raises(UserError, match="max_new_tokens"):
        SamplingConfig(max_new_tokens=-1)
    with pytest.raises(UserError, match="repetition_penalty"):
        SamplingConfig(repetition_penalty=0.0)


def test_repetition_penalty_by_hand_and_against_transformers() -> None:
    """penalty 2: seen logits 4 -> 2, -1 -> -2, 0 -> 0; unseen ones unchanged."""
    logits = torch.tensor([[4.0, -1.0, 0.0, 3.0, -2.0], [1.0, 1.0, -3.0, 0.5, 2.0]])
    seen = torch.tensor([[True, True, True, False, False], [False, False, True, True, True]])
    got = apply_repetition_penalty(logits, seen, 2.0)
    want = torch.tensor([[2.0, -2.0, 0.0, 3.0, -2.0], [1.0, 1.0, -6.0, 0.25, 1.0]])
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert apply_repetition_penalty(logits, seen, 1.0) is logits
    transformers = pytest.importorskip("transformers")
    ids = torch.tensor([[0, 1, 2, 1], [2, 3, 4, 4]])  # the seen tokens above, some twice
    for penalty in (1.3, 0.7):
        hf = transformers.RepetitionPenaltyLogitsProcessor(penalty)(ids, logits.clone())
        torch.testing.assert_close(apply_repetition_penalty(logits, seen, penalty), hf, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------- Engine vs naive


GREEDY = SamplingConfig(max_new_tokens=12, temperature=0.0)


@pytest.mark.parametrize("fields", [{}, {"n_kv_heads": 2}, {"n_kv_heads": 1, "sliding_window": 4}],
                         ids=["mha", "gqa", "mqa_window4"])
@pytest.mark.parametrize("sampling", [GREEDY, replace(GREEDY, repetition_penalty=1.5)], ids=["plain", "penalty"])
def test_engine_greedy_equals_naive(fields: dict, sampling: SamplingConfig) -> None:
    model = tiny_model(**fields)
    want = generate_naive(model, PROMPTS, sampling)
    assert all(len(w) == 12 for w in want)
    assert Engine(model).generate(PROMPTS, sampling) == want
    # and a row's output does not depend on the rest of the batch
    assert [Engine(model).generate([p], sampling)[0] for p in PROMPTS] == want


def test_engine_prefills_a_repeated_prompt_once() -> None:
    """G samples per prompt (online RL) repeat prompts: the engine prefills each distinct prompt once and
    copies its cache to the rows that share it. Greedy rows still equal the naive oracle's, row for row,
    with padding (lengths 7, 1, 4) and a stop token; sampled copies of one prompt draw their own tokens."""
    model = tiny_model(n_kv_heads=2)
    batch = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[2], PROMPTS[1], PROMPTS[0]]
    want = generate_naive(model, batch, GREEDY)
    shapes: list[tuple[int, ...]] = []
    hook = model.register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape)))
    assert Engine(model).generate(batch, GREEDY) == want
    hook.remove()
    assert shapes[0] == (3, 7) and set(shapes[1:]) == {(6, 1)}  # the prefill: 3 distinct prompts; decode: 6 rows
    assert Engine(model).generate(batch, GREEDY) == want  # without the hook: the static decode step
    stop = pick_stop([want[0], want[1]])
    assert Engine(model).generate(batch, replace(GREEDY, stop_tokens=(stop,))) == \
        generate_naive(model, batch, replace(GREEDY, stop_tokens=(stop,)))
    sampled = Engine(model).generate(batch, SamplingConfig(max_new_tokens=12, temperature=1.5), generator=seeded(3))
    assert len({tuple(sampled[i]) for i in (0, 2, 5)}) == 3


def pick_stop(rows: list[list[int]]) -> int:
    """A token row 0 emits early (step 1..4) that row 1 never emits: row 0 stops, row 1 runs on."""
    for t in rows[0][1:5]:
        if t not in rows[1] and t not in rows[0][:rows[0].index(t)]:
            return t
    raise AssertionError(f"no usable stop token in {rows}")


def test_stop_tokens_and_stream_yields_none_after_stop() -> None:
    model = tiny_model(seed=1, n_kv_heads=2)
    free = generate_naive(model, PROMPTS[:2], GREEDY)
    stop = pick_stop(free)
    sampling = replace(GREEDY, stop_tokens=(stop, 63))
    want = generate_naive(model, PROMPTS[:2], sampling)
    cut = free[0].index(stop) + 1
    assert want[0] == free[0][:cut] and want[1] == free[1]
    steps = list(Engine(model).stream(PROMPTS[:2], sampling))
    assert len(steps) == 12
    assert [s[0] for s in steps[:cut]] == want[0] and all(s[0] is None for s in steps[cut:])
    assert [s[1] for s in steps] == want[1]
    assert Engine(model).generate(PROMPTS[:2], sampling) == want


def test_engine_ends_when_every_row_stops() -> None:
    model = tiny_model()
    first = generate_naive(model, PROMPTS, replace(GREEDY, max_new_tokens=1))
    sampling = replace(GREEDY, stop_tokens=tuple({t[0] for t in first}))
    assert list(Engine(model).stream(PROMPTS, sampling)) == [[t[0] for t in first]]


def test_engine_sampling_equals_naive_with_the_same_seed() -> None:
    model = tiny_model(n_kv_heads=2)
    sampling = SamplingConfig(max_new_tokens=16, temperature=0.9, top_k=20, top_p=0.9, repetition_penalty=1.2)
    for seed, prompt in enumerate(PROMPTS):
        want = generate_naive(model, [prompt], sampling, generator=seeded(seed))
        assert Engine(model).generate([prompt], sampling, generator=seeded(seed)) == want


def test_vocab_limit_never_samples_past_the_tokenizer() -> None:
    """A model wider than its tokenizer (ids 0..9 only): greedy and sampled ids stay below 10, with the
    repetition penalty on, and the engine still equals the naive generator."""
    model = tiny_model()
    sampling = SamplingConfig(max_new_tokens=24, temperature=1.5, repetition_penalty=1.3, vocab_limit=10)
    for seed, prompt in enumerate(PROMPTS):
        want = generate_naive(model, [prompt], sampling, generator=seeded(seed))
        assert Engine(model).generate([prompt], sampling, generator=seeded(seed)) == want
        assert all(t < 10 for t in want[0])
    greedy = Engine(model).generate(list(PROMPTS), SamplingConfig(max_new_tokens=8, temperature=0, vocab_limit=10))
    assert all(t < 10 for row in greedy for t in row)
    unlimited = Engine(model).generate(list(PROMPTS), SamplingConfig(max_new_tokens=24, temperature=1.5),
                                       generator=seeded(0))
    assert any(t >= 10 for row in unlimited for t in row)  # so the limit is what kept them below


def test_bad_prompts_are_user_errors() -> None:
    model = tiny_model()
    with pytest.raises(UserError, match="max_seq_len"):
        Engine(model).generate([list(range(60))], replace(GREEDY, max_new_tokens=5))
    with pytest.raises(UserError, match="max_seq_len"):
        generate_naive(model, [list(range(60))], replace(GREEDY, max_new_tokens=5))
    with pytest.raises(UserError, match="at least one token"):
        Engine(model).generate([[1], []], GREEDY)
    with pytest.raises(UserError, match="vocabulary"):
        Engine(model).generate([[1, 64]], GREEDY)
    assert Engine(model).generate(PROMPTS, replace(GREEDY, max_new_tokens=0)) == [[], [], []]


# ---------------------------------------------------------------------- against transformers


@pytest.mark.parametrize("fields", [{"n_kv_heads": 2}, {"sliding_window": 4, "n_kv_heads": 2}],
                         ids=["gqa", "mistral_window4"])
def test_engine_greedy_equals_hf_generate(fields: dict, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from llmlab.model.hf_io import export_hf

    model = tiny_model(seed=2, **fields)
    hf = transformers.AutoModelForCausalLM.from_pretrained(export_hf(model, tmp_path), dtype=torch.float32).eval()
    P = max(len(p) for p in PROMPTS)
    ids = torch.zeros(len(PROMPTS), P, dtype=torch.long)
    mask = torch.zeros(len(PROMPTS), P, dtype=torch.long)
    for row, p in enumerate(PROMPTS):
        ids[row, P - len(p):] = torch.tensor(p)
        mask[row, P - len(p):] = 1
    out = hf.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=12, min_new_tokens=12,
                      eos_token_id=None, pad_token_id=0)
    assert Engine(model).generate(PROMPTS, GREEDY) == out[:, P:].tolist()
