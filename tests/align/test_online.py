"""The online RL trainers (`llmlab grpo | rloo | ppo`, align/online.py) end to end, on the tiny model.

The math of align/rl.py is tested in test_rl.py; here, what the trainer builds around it:

- layout: log-probs, and PPO's values (shared head and separate critic), gathered from a padded batch
  into response layout equal a single unpadded forward of each row, for an llmlab model and for an HF
  LlamaForCausalLM built from a config;
- rollouts: seeded by an explicit torch.Generator; each response ends at its stop token or at
  max_new_tokens, and `closed` says which;
- accumulation: one step with train.micro_batch_size=1 gives the weights (and logged loss, grad norm)
  of one forward over the whole batch, in float64, for grpo, rloo and ppo (critic and shared head);
- resume: a run stopped after step 3 and resumed from its step-2 checkpoint ends with the weights
  (PPO: and the critic) and the metric rows of an uninterrupted run;
- rewards, the CLI's bad inputs, the logged metrics and the evaluation, the commands' end-of-run evaluation
  against the start model (eval/online_run.py, checked against policies.answer), the adaptive KL coefficient,
  the reward-hacking detector, HF policies and LoRA; torchrun with 2 processes (slow).

Most runs use `stopper_dir`: the tiny random model changed so that it often closes its turn (a random
model almost never does), so that responses in one batch differ in length and some are not closed.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import math
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

import llmlab.align.online as online_module
from conftest import kill_after_step, subprocess_environment
from llmlab.align.config import GRPOConfig, PPOConfig, RewardConfig, RLOOConfig
from llmlab.align.generation import cut_at_stop
from llmlab.align.logprobs import token_logprobs
from llmlab.align.models import ChatTokenizer, is_llmlab, load_policy
from llmlab.align.online import (
    Forward,
    Rollouts,
    collate_rollouts,
    layout_mask,
    online,
    prompt_sets,
    response_layout,
    sample_rollouts,
)
from llmlab.align.onpolicy import Prompt, task_world_prompts
from llmlab.align.reward_model import (
    load_reward_model,
    reward_model_from_policy,
    save_reward_model,
    score_texts,
)
from llmlab.align.rewards import Rewards, Scored
from llmlab.align.value import PolicyWithValue
from llmlab.cli import main
from llmlab.config import load_config
from llmlab.errors import UserError
from llmlab.eval.online_run import finish_online_run
from llmlab.eval.policies import answer, interval, summarise
from llmlab.runs import json_safe
from llmlab.stats import wilson_interval
from llmlab.train.session import Session

CPU = torch.device("cpu")
CONFIGS = {"grpo": GRPOConfig, "rloo": RLOOConfig, "ppo": PPOConfig}
TIMING = ("time", "rollout_s", "step_s")  # the only logged values allowed to differ between equal runs


# ---------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def stopper_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model, made to close its turn often: embedding coordinate 0 is 1 for every token and 1.6 for
    the end-of-turn token. The head is tied, so every logit gains h_0 (the same for all tokens: no effect)
    and the end token's 0.6 h_0 more, where h_0 > 0 after the final norm (coordinate 0 dominates the
    residual stream). At temperature 1 a batch of 8-token responses then has lengths from 1 to 8, where
    the random model's almost all run to 8."""
    from llmlab.model.io import load_model, save_model

    model, tok = load_model(tiny_model_dir)
    end = ChatTokenizer(tok).eos_ids[0]
    with torch.no_grad():
        model.embed.weight[:, 0] = 1.0
        model.embed.weight[end, 0] = 1.6
    directory = tmp_path_factory.mktemp("stopper")
    save_model(model, directory, tok)
    return directory


@pytest.fixture(scope="module")
def stopper_hf_dir(stopper_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model as an HF Llama folder, with llmlab's chat template."""
    from llmlab.model.hf_io import export_hf
    from llmlab.model.io import load_model

    model, tok = load_model(stopper_dir)
    return export_hf(model, tmp_path_factory.mktemp("stopper-hf"), tok)


@pytest.fixture(scope="module")
def rm_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reward model folder (`save_reward_model`) on the tiny trunk, with a seeded random head."""
    policy, tok = load_policy(str(tiny_model_dir), device="cpu")
    torch.manual_seed(1)
    return save_reward_model(reward_model_from_policy(policy), tok, tmp_path_factory.mktemp("rm"))


TINY_RUN = ["train.max_steps=1", "train.batch_size=4", "rollout.samples=2", "rollout.max_new_tokens=8",
            "eval.n_prompts=0", "sample_every=0", "train.device=cpu", "data.n=16", "train.lr=1e-3"]


def tiny_config(algo: str, model: Path, *changes: str) -> Any:
    """The config of a tiny run of `algo` (later changes win over TINY_RUN's)."""
    return load_config(CONFIGS[algo], None, [f"model={model}", *TINY_RUN, *changes])


def run_online(algo: str, model: Path, out: Path, *changes: str) -> Path:
    """One tiny run of `algo`: the trainer alone, without the commands' end-of-run evaluation."""
    return online(tiny_config(algo, model, *changes), out=out, quiet=True)


def metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


def train_rows(run: Path) -> list[dict]:
    return [r for r in metrics(run) if "loss" in r]


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of every safetensors file under a run folder (policy, critic, value head), by path."""
    return {f"{p.relative_to(folder)}:{k}": v for p in sorted(folder.glob("**/*.safetensors"))
            if "checkpoints" not in p.parts and "hf" not in p.parts for k, v in load_file(str(p)).items()}


# ---------------------------------------------------------------------- response layout


def test_response_layout_by_hand() -> None:
    """T = 6 positions, so log-probs cover C = 5 targets (column c scores token c + 1). Row 0: prompt 2,
    response 3 -> response token j is token 2 + j, column 1 + j: x[0, 1:4]. Row 1: prompt 4, response 1 ->
    column 3, then 0 past the response's end."""
    batch = collate_rollouts([[1, 2], [1, 2, 3, 4]], [[5, 6, 7], [8]], pad_id=0)
    assert batch["ids"].tolist() == [[1, 2, 5, 6, 7], [1, 2, 3, 4, 8]]
    assert batch["response_mask"].tolist() == [[False, False, True, True, True], [False, False, False, False, True]]
    assert batch["prompt_len"].tolist() == [2, 4] and batch["response_len"].tolist() == [3, 1]
    batch["ids"] = torch.cat([batch["ids"], torch.zeros(2, 1, dtype=torch.long)], dim=1)  # T = 6: one more pad
    x = torch.arange(10.0).view(2, 5)
    assert response_layout(x, batch, 3).tolist() == [[1.0, 2.0, 3.0], [8.0, 0.0, 0.0]]
    # logits kept for the last C = T - shortest prompt = 4 positions only (the trainer's logits_to_keep):
    # the same columns of the same values
    assert response_layout(x[:, 1:], batch, 3).tolist() == [[1.0, 2.0, 3.0], [8.0, 0.0, 0.0]]
    assert layout_mask([[5, 6, 7], [8]], 3).tolist() == [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]


def _hf_llama() -> torch.nn.Module:
    """A tiny transformers LlamaForCausalLM from a config (random, seeded; untied head; grouped KV heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(3)
    config = LlamaConfig(vocab_size=400, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=False)
    return LlamaForCausalLM(config).train()


def _layout_rows(tok: ChatTokenizer) -> tuple[list[list[int]], list[list[int]]]:
    """Prompts of three lengths; responses of 1, 9 and 4 tokens, two closed by the end token."""
    end = tok.eos_ids[0]
    prompts = [tok.render_prompt(p) for p in ("Hi", "Reverse the word 'bridge'. Answer in UPPERCASE.", "What is 2+3?")]
    responses = [[end], tok.encode("EGDIRB, I think it is")[:9], [*tok.encode("five"), end]]
    assert len({len(p) for p in prompts}) == 3 and [len(r) for r in responses] == [1, 9, len(responses[2])]
    return prompts, responses


def _direct(model: torch.nn.Module, ids: list[int], temperature: float, vocab_limit: int | None,
            value: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(per-token log-probs (T-1,), values (T,) or None) of one unpadded row, from a plain forward."""
    x = torch.tensor([ids])
    out = model(x, return_hidden=True) if is_llmlab(model) else model(input_ids=x, output_hidden_states=True)
    logits = out.logits[..., :vocab_limit] if vocab_limit else out.logits
    logp = token_logprobs(logits / temperature, x)[0]
    return logp, (value(x)[0] if value is not None else None)


@pytest.mark.parametrize("value_model", [None, "shared", "separate"])
@pytest.mark.parametrize("kind", ["llmlab", "hf"])
def test_response_layout_equals_each_row_alone(kind: str, value_model: str | None, tiny_model_dir: Path) -> None:
    """Forward (the trainer's per-token pass) on a right-padded batch of 3 rows, the rows given out of order
    (idx [2, 0, 1]): column j of row b is response token j's log-prob under the sampling temperature (0.7)
    and its value, read at the position before it, as a single unpadded forward of that row gives them
    (token_logprobs on the full logits; values from the last hidden state); 0 past the response's end."""
    policy, tok = load_policy(str(tiny_model_dir), device="cpu")
    vocab_limit = tok.inner.id_count
    if kind == "hf":
        policy, vocab_limit = _hf_llama(), None
    model: torch.nn.Module = policy
    value: Callable[[torch.Tensor], torch.Tensor] | None = None
    if value_model == "shared":
        model = PolicyWithValue(policy, None)
        torch.nn.init.normal_(model.value_head.bias)  # a non-zero bias, so a misplaced column shows

        def value(x: torch.Tensor) -> torch.Tensor:
            out = policy(x, return_hidden=True) if is_llmlab(policy) else policy(input_ids=x, output_hidden_states=True)
            return model.value_head(out.hidden_states[-1]).squeeze(-1)
    elif value_model == "separate":
        torch.manual_seed(4)
        critic = reward_model_from_policy(copy.deepcopy(policy))
        with torch.no_grad():  # a critic whose trunk differs from the policy's
            for p in critic.trunk.parameters():
                p.add_(0.05 * torch.randn_like(p))
        model = PolicyWithValue(policy, critic)

        def value(x: torch.Tensor) -> torch.Tensor:
            return critic.score(critic.hidden_states(x, torch.ones_like(x))).squeeze(-1)

    cfg = load_config(GRPOConfig, None, ["model=unused", "rollout.temperature=0.7"])
    fwd = Forward(cfg, tok, CPU, contextlib.nullcontext(), vocab_limit)
    prompts, responses = _layout_rows(tok)
    W = max(map(len, responses))
    r = Rollouts([Prompt("x", None, None)] * 3, prompts, responses, ["x"] * 3, [True] * 3,
                 mask=layout_mask(responses, W))
    idx = [2, 0, 1]
    with torch.no_grad():
        logp, ent, values = fwd(model, r, idx, want_entropy=True)
        assert logp.shape == ent.shape == (3, W)
        assert (values is None) == (value_model is None)
        for row, i in enumerate(idx):
            P, R = len(prompts[i]), len(responses[i])
            direct, direct_values = _direct(policy, prompts[i] + responses[i], 0.7, vocab_limit, value)
            torch.testing.assert_close(logp[row, :R], direct[P - 1: P - 1 + R], atol=1e-5, rtol=1e-5)
            assert not logp[row, R:].any() and not ent[row, R:].any() and ent[row, :R].gt(0).all()
            if values is not None:
                torch.testing.assert_close(values[row, :R], direct_values[P - 1: P - 1 + R], atol=1e-5, rtol=1e-5)
                assert not values[row, R:].any()


# ---------------------------------------------------------------------- rollouts


def _rollouts(model: torch.nn.Module, tok: ChatTokenizer, seed: int) -> Rollouts:
    """4 task-world prompts x 4 responses of at most 8 tokens, generated together."""
    return sample_rollouts(model, tok, task_world_prompts(4, seed=0), samples=4, max_new_tokens=8, temperature=1.0,
                           top_p=1.0, batch_size=64, device=CPU, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", ["llmlab", "hf"])
def test_rollouts_are_a_function_of_the_generator(kind: str, stopper_dir: Path, stopper_hf_dir: Path) -> None:
    model, tok = load_policy(str(stopper_dir if kind == "llmlab" else stopper_hf_dir), device="cpu")
    a, b, other = _rollouts(model, tok, 7), _rollouts(model, tok, 7), _rollouts(model, tok, 8)
    assert a.response_ids == b.response_ids and a.texts == b.texts and a.closed == b.closed
    assert a.response_ids != other.response_ids
    assert model.training  # generation leaves the mode as it found it


def _check_stops(r: Rollouts, tok: ChatTokenizer, max_new_tokens: int) -> None:
    for ids, closed, text in zip(r.response_ids, r.closed, r.texts, strict=True):
        assert 1 <= len(ids) <= max_new_tokens
        assert not any(t in tok.eos_ids for t in ids[:-1]), ids  # nothing after the stop token
        assert closed == (ids[-1] in tok.eos_ids)
        assert closed or len(ids) == max_new_tokens  # an open response ran out of tokens
        assert text == tok.decode(cut_at_stop(ids, tok.eos_ids)).strip()


def test_rollouts_end_at_a_stop_token_or_max_new_tokens(stopper_dir: Path) -> None:
    """16 responses (4 prompts x G=4, consecutive) generated together: each ends at its first stop token
    (closed) or after max_new_tokens (open); the texts are the tokens before the stop."""
    model, tok = load_policy(str(stopper_dir), device="cpu")
    r = _rollouts(model, tok, 7)
    prompts = task_world_prompts(4, seed=0)
    assert [p.text for p in r.prompts] == [p.text for p in prompts for _ in range(4)]
    assert r.prompt_ids == [tok.render_prompt(p.text) for p in prompts for _ in range(4)]
    assert len(r) == 16 and any(r.closed) and not all(r.closed)
    assert len({len(x) for x in r.response_ids}) >= 4  # lengths differ within the batch
    _check_stops(r, tok, 8)


def test_hf_rollouts_end_at_a_stop_token_or_max_new_tokens(stopper_hf_dir: Path) -> None:
    """As above for an HF policy (HF generate): the same 16 rows generated together. Here the pad token
    (<|endoftext|>) is also a stop token, so the rows even count as closed: [.., 399, 395, 395, ...]."""
    model, tok = load_policy(str(stopper_hf_dir), device="cpu")
    r = _rollouts(model, tok, 7)
    assert any(r.closed)  # some rows met a stop token
    _check_stops(r, tok, 8)


# ---------------------------------------------------------------------- accumulation is exact


def _double_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every model online() loads or builds (policy, reference, value function) becomes float64."""

    def doubled(fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            return (out[0].double(), *out[1:]) if isinstance(out, tuple) else out.double()
        return wrapper

    for name in ("load_trainee", "load_policy", "with_value"):
        monkeypatch.setattr(online_module, name, doubled(getattr(online_module, name)))


ACCUMULATION = {
    "grpo": ("grpo", []),
    "grpo-token-2x2": ("grpo", ["loss_norm=token", "epochs=2", "minibatches=2", "entropy_coef=0.01"]),
    "rloo": ("rloo", []),
    "ppo-critic": ("ppo", []),
    "ppo-shared": ("ppo", ["value_model=shared"]),
}


@pytest.mark.parametrize("case", list(ACCUMULATION))
def test_micro_batches_of_one_give_the_whole_batch_step(case: str, stopper_dir: Path, rm_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """One step on 4 prompts x 2 responses of different lengths (reward: a reward model's score, so every
    group has advantages), as micro-batches of one prompt and as one forward per minibatch (micro 0), in
    float64: the same logged loss, grad norm and statistics (within 1e-6: log-probs, entropies and values
    are float32), and the same saved weights (policy, and PPO's critic or value head). Weights alone would
    not do: AdamW's first step is lr * g / |g|, blind to a wrong overall scale of the gradient, which the
    loss and grad norm show. PPO makes 2 epochs x 2 minibatches of updates; "grpo-token-2x2" the same with
    the token-mean loss and an entropy bonus."""
    algo, extra = ACCUMULATION[case]
    _double_models(monkeypatch)
    runs = [run_online(algo, stopper_dir, tmp_path / f"micro{m}", f"train.micro_batch_size={m}", "reward.gold=0",
                       "reward.rm=1", f"reward.reward_model={rm_dir}", *extra) for m in (1, 0)]
    (one,), (whole,) = train_rows(runs[0]), train_rows(runs[1])
    assert one["response_len"] < 8 and one["updates"] == whole["updates"]  # lengths differ; same number of updates
    for key in ("loss", "grad_norm", "entropy", "clip_frac", "approx_kl", "kl", "reward", *(
            ("value_loss", "explained_var") if algo == "ppo" else ())):
        assert one[key] == pytest.approx(whole[key], rel=1e-6, abs=1e-7), key  # log-probs, values are float32
    a, b = weights(runs[0]), weights(runs[1])
    base = load_file(str(stopper_dir / "model.safetensors"))
    policy_keys = {f"model.safetensors:{k}" for k in base}
    assert a.keys() == b.keys()
    assert policy_keys < set(a) if algo == "ppo" else policy_keys == set(a)
    for k in a:
        double = a[k].dtype == torch.float64  # all but the critic's score head, which is saved in float32
        assert double or k == "critic/score.safetensors:weight", k
        torch.testing.assert_close(a[k], b[k], rtol=1e-7 if double else 1e-6, atol=1e-10 if double else 1e-8, msg=k)
    moved = max(float((a[f"model.safetensors:{k}"] - v.double()).abs().max()) for k, v in base.items())
    assert moved > 1e-4  # the step did change the weights


# ---------------------------------------------------------------------- resume


class Killed(Exception):
    """Stands for a SIGKILL in the middle of a run (tests/align/test_trainers.py does the real one)."""


RESUME = {
    "grpo": ["kl_coef=0.1"],
    "ppo": ["target_kl=0.001", "kl_horizon=10"],  # the adaptive coefficient lives in the checkpoint's counters
    "ppo-shared": ["value_model=shared", "whiten=false"],
    "grpo-lora": ["lora.r=4"],  # the adapters come back from the checkpoint's trainable tensors
    "ppo-lora": ["lora.r=4", "value_model=shared"],
}


@pytest.mark.parametrize("case", list(RESUME))
def test_stopped_after_step_3_and_resumed_ends_as_an_uninterrupted_run(case: str, stopper_dir: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Run A: 4 steps, checkpoints every 2, held-out evaluation at steps 0, 2 and 4. Run B: the same, stopped
    by an exception right after logging step 3 (past the step-2 checkpoint), then `llmlab <algo> --resume B`.
    B's metric rows (training and evaluation) equal A's exactly, and so do the final weights, PPO's critic or
    value head included: a critic started afresh from the policy would differ."""
    algo = case.split("-")[0]
    changes = ["train.max_steps=4", "train.checkpoint_every=2", "train.eval_every=2", "eval.n_prompts=2", "eval.k=2",
               "train.lr=1e-2", *RESUME[case]]
    a = run_online(algo, stopper_dir, tmp_path / "A", *changes)
    real = Session.record

    def record(self: Session, step: int, row: dict) -> None:
        real(self, step, row)
        if step == 3 and "loss" in row:
            raise Killed

    with monkeypatch.context() as m:
        m.setattr(Session, "record", record)
        with pytest.raises(Killed):
            run_online(algo, stopper_dir, tmp_path / "B", *changes)
    assert [r["step"] for r in train_rows(tmp_path / "B")] == [1, 2, 3]
    assert main([algo, "--resume", str(tmp_path / "B"), "--quiet"]) == 0
    assert "resumed from" in (tmp_path / "B" / "log.txt").read_text()
    rows_a, rows_b = without_timing(metrics(a)), without_timing(metrics(tmp_path / "B"))
    assert [r["step"] for r in rows_b] == [0, 1, 2, 2, 3, 4, 4]  # eval rows at 0, 2 and 4
    assert rows_b == rows_a
    if case == "ppo":  # the coefficient changed at every step
        assert len({r["kl_coef"] for r in rows_a if "kl_coef" in r}) == 4
    wa, wb = weights(a), weights(tmp_path / "B")
    assert wa.keys() == wb.keys()
    expected = (() if algo == "grpo" else ("value_head.safetensors",) if "value_model=shared" in RESUME[case]
                else ("critic/model.safetensors", "critic/score.safetensors"))
    assert {k.split(":")[0] for k in wa} == {"model.safetensors", *expected}
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (tmp_path / "B" / "eval.json").is_file()  # the resumed command ends with the end-of-run evaluation


def test_resumed_run_lists_each_step_once_in_samples_jsonl(stopper_dir: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped while logging step 4 (step 3's samples are written, the last checkpoint is step 2's), then
    resumed: samples.jsonl should list steps 1 to 4 once each, as the uninterrupted run's does."""
    changes = ["train.max_steps=4", "train.checkpoint_every=2", "sample_every=1"]
    a = run_online("grpo", stopper_dir, tmp_path / "A", *changes)
    real = Session.record

    def record(self: Session, step: int, row: dict) -> None:
        real(self, step, row)
        if step == 4 and "loss" in row:
            raise Killed

    with monkeypatch.context() as m:
        m.setattr(Session, "record", record)
        with pytest.raises(Killed):
            run_online("grpo", stopper_dir, tmp_path / "B", *changes)
    assert main(["grpo", "--resume", str(tmp_path / "B"), "--quiet"]) == 0
    steps = lambda run: [json.loads(x)["step"] for x in (run / "samples.jsonl").read_text().splitlines()]  # noqa: E731
    assert steps(a) == [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4
    assert steps(tmp_path / "B") == steps(a)


@pytest.mark.slow
def test_sigkill_then_resume_ppo(stopper_dir: Path, tmp_path: Path) -> None:
    """The real thing for PPO (a subprocess SIGKILLed after logging step 3, then --resume in another):
    the weights, critic included, and the training rows equal an uninterrupted run's."""
    common = ["ppo", "--model", str(stopper_dir), "--quiet", "train.max_steps=4", "train.checkpoint_every=2",
              "train.batch_size=4", "rollout.max_new_tokens=8", "eval.n_prompts=0", "train.device=cpu", "data.n=16",
              "train.lr=1e-2"]
    assert main([*common, "--out", str(tmp_path / "A")]) == 0
    kill_after_step([*common, "--out", str(tmp_path / "B")], 3, tmp_path)
    resumed = subprocess.run([sys.executable, "-m", "llmlab", "ppo", "--resume", str(tmp_path / "B"), "--quiet"],
                             env=subprocess_environment(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert without_timing(train_rows(tmp_path / "B")) == without_timing(train_rows(tmp_path / "A"))
    wa, wb = weights(tmp_path / "A"), weights(tmp_path / "B")
    assert wa.keys() == wb.keys() and any(k.startswith("critic/") for k in wa)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


# ---------------------------------------------------------------------- rewards


def test_reward_is_the_weighted_sum_of_its_terms() -> None:
    """reward = 1.0 gold + 0.5 closed-and-non-empty - 0.1 tokens, by hand:
        "208", closed, 2 tokens        1.0 + 0.5 - 0.2 =  1.3
        "207", closed, 2 tokens        0.0 + 0.5 - 0.2 =  0.3
        "208", open, 8 tokens          1.0 + 0.0 - 0.8 =  0.2
        "", closed, 1 token            0.0 + 0.0 - 0.1 = -0.1   (empty: no format point)
    A prompt outside the task world has no gold score (nan), and with gold=0 adds nothing."""
    arithmetic = next(p for p in task_world_prompts(6, seed=0) if p.family == "arithmetic")
    assert arithmetic.text == "What is 8 * 26?" and arithmetic.gold == "208"
    rewards = Rewards(RewardConfig(gold=1.0, format=0.5, length=-0.1), device="cpu", batch_size=4)
    s = rewards([arithmetic] * 4, ["208", "207", "208", ""], [True, True, False, True], [2, 2, 8, 1])
    assert s.reward == pytest.approx([1.3, 0.3, 0.2, -0.1], abs=1e-12)
    assert s.gold == [1.0, 0.0, 1.0, 0.0] and all(math.isnan(x) for x in s.proxy) and s.refused == [0.0] * 4
    foreign = Prompt("Tell me a story.", None, None)
    s = Rewards(RewardConfig(gold=0.0, format=2.0), device="cpu", batch_size=4)(
        [foreign, arithmetic], ["I'm sorry, but I can't help with that.", "208"], [True, False], [9, 8])
    assert s.reward == [2.0, 0.0] and math.isnan(s.gold[0]) and s.gold[1] == 1.0 and s.refused == [1.0, 0.0]


def test_reward_model_term(rm_dir: Path) -> None:
    """rm=2 with gold=1: reward = gold + 2 x the reward model's score, which is logged as the proxy."""
    prompts = task_world_prompts(2, seed=0)
    responses = ["egdirb", "no idea"]
    s = Rewards(RewardConfig(gold=1.0, rm=2.0, reward_model=str(rm_dir)), device="cpu", batch_size=1)(
        prompts, responses, [True, True], [3, 3])
    rm, tok = load_reward_model(rm_dir)
    expected = score_texts(rm, tok, [(p.text, r) for p, r in zip(prompts, responses, strict=True)])
    assert s.proxy == pytest.approx(expected, abs=1e-6) and len(set(s.proxy)) == 2
    assert s.reward == pytest.approx([g + 2 * x for g, x in zip(s.gold, expected, strict=True)], abs=1e-6)


def test_an_hf_sequence_classification_folder_is_a_reward_model(rm_dir: Path) -> None:
    """RM/hf (an HF LlamaForSequenceClassification folder without reward_model.yaml) loads with
    load_reward_model and scores as the llmlab reward model it was exported from."""
    hf_folder = rm_dir / "hf"
    assert not (hf_folder / "reward_model.yaml").exists()
    pairs = [("What is 2+3?", "5"), ("Name a colour.", "Blue, I think.")]
    hf_rm, hf_tok = load_reward_model(hf_folder)
    assert not is_llmlab(hf_rm.trunk)
    rm, tok = load_reward_model(rm_dir)
    assert score_texts(hf_rm, hf_tok, pairs) == pytest.approx(score_texts(rm, tok, pairs), abs=1e-4)
    s = Rewards(RewardConfig(gold=0.0, rm=1.0, reward_model=str(hf_folder)), device="cpu", batch_size=2)(
        [Prompt(p, None, None) for p, _ in pairs], [r for _, r in pairs], [True, True], [2, 5])
    assert s.reward == pytest.approx(score_texts(rm, tok, pairs), abs=1e-4)


def test_gold_reward_on_a_foreign_prompt_is_one_line_naming_it() -> None:
    prompts = [*task_world_prompts(2, seed=0), Prompt("Tell me a story about a dragon.", None, None)]
    Rewards(RewardConfig(gold=0.0, format=1.0), device="cpu", batch_size=1).check_prompts(prompts)
    with pytest.raises(UserError) as e:
        Rewards(RewardConfig(gold=0.5), device="cpu", batch_size=1).check_prompts(prompts)
    message = str(e.value)
    assert "\n" not in message and "'Tell me a story about a dragon.'" in message and "reward.gold=0.5" in message


# ---------------------------------------------------------------------- the command line


def test_help_of_the_three_commands() -> None:
    llmlab = str(Path(sys.executable).parent / "llmlab")
    for algo in CONFIGS:
        result = subprocess.run([llmlab, algo, "--help"], capture_output=True, text=True, timeout=60,
                                env=subprocess_environment())
        assert result.returncode == 0, result.stderr
        assert f"usage: llmlab {algo}" in result.stdout
        for flag in ("--model", "--input", "--reward-model", "--kl-coef", "--samples", "--resume", "--max-steps"):
            assert flag in result.stdout, (algo, flag)


def test_print_config_resolves_each_algorithms_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    """GRPO charges k3 in the loss; RLOO and PPO k1 in the reward (resolved, so the saved config says so);
    PPO makes 2 epochs x 2 minibatches of token-mean updates over 2 responses per prompt."""
    expected = {
        "grpo": {"kl_in": "loss", "kl_estimator": "k3", "kl_coef": 0.04, "epochs": 1, "loss_norm": "sequence"},
        "rloo": {"kl_in": "reward", "kl_estimator": "k1", "kl_coef": 0.05, "epochs": 1},
        "ppo": {"kl_in": "reward", "kl_estimator": "k1", "kl_coef": 0.05, "epochs": 2, "minibatches": 2,
                "loss_norm": "token", "value_model": "separate"},
    }
    for algo, values in expected.items():
        assert main([algo, "--print-config"]) == 0
        cfg = yaml.safe_load(capsys.readouterr().out)
        assert cfg["algo"] == algo and {k: cfg[k] for k in values} == values, algo
        assert cfg["rollout"]["samples"] == (2 if algo == "ppo" else 4)
        assert {"gold", "rm", "reward_model", "format", "length"} <= set(cfg["reward"])
        assert {"window", "min_rise", "min_fall", "stop"} == set(cfg["hacking"])


BROKEN_PROMPTS = '{"prompt": "What is 2 + 3?"}\n{"prompt": "What is\n'
FOREIGN_PROMPTS = '{"prompt": "What is 2 + 3?"}\n{"prompt": "Tell me a story."}\n'

BAD = {  # name -> (arguments after `llmlab`, a piece of the error line)
    "missing-model": (["grpo", "--model", "missing"], "missing: no such model folder"),
    "unknown-key": (["grpo", "rollout.sampels=4"], "rollout.sampels"),
    "grpo-one-sample": (["grpo", "--samples", "1"], "rollout.samples must be at least 2"),
    "rloo-one-sample": (["rloo", "rollout.samples=1"], "rollout.samples must be at least 2"),
    "no-reward": (["grpo", "reward.gold=0"], "every weight is 0"),
    "rm-without-model": (["ppo", "reward.rm=1"], "reward.rm needs reward.reward_model"),
    "minibatches": (["ppo", "minibatches=3"], "minibatches (3) must divide train.batch_size (4"),
    "micro-batch-past-minibatch": (["ppo", "train.micro_batch_size=4"], "must divide each minibatch's 2 prompts"),
    "ppo-kl-in-loss": (["ppo", "kl_in=loss"], "kl_in=reward"),
    "hacking-window": (["grpo", "hacking.window=2"], "hacking.window must be at least 3"),
    "reward-model-not-one": (["grpo", "--reward-model", "{model}", "reward.rm=1"], "not a reward model folder"),
    "malformed-input": (["grpo", "--input", "broken.jsonl"], "broken.jsonl:2"),
    "foreign-input-with-gold": (["grpo", "--input", "foreign.jsonl"], "foreign.jsonl:2: not a task-world prompt"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_error_line(case: str, stopper_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Exit code 2 and one line `error: ...` on stderr that says what is wrong, no traceback, and no model
    written: each case has tiny settings, so one that wrongly starts training ends in seconds."""
    monkeypatch.delenv("LLMLAB_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.jsonl").write_text(BROKEN_PROMPTS)
    (tmp_path / "foreign.jsonl").write_text(FOREIGN_PROMPTS)
    argv, expected = BAD[case]
    argv = [a.format(model=stopper_dir) for a in argv]
    model = [] if "--model" in argv else ["--model", str(stopper_dir)]
    code = main([*argv, *model, "--out", str(tmp_path / "run"), "--quiet", "train.batch_size=4", "train.max_steps=1",
                 "rollout.max_new_tokens=2", "eval.n_prompts=0", "data.n=8", "train.device=cpu"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert expected in err, err
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_bad_input_in_a_subprocess(tmp_path: Path) -> None:
    """The same through the installed `llmlab` script: exit 2, one line, no traceback."""
    llmlab = str(Path(sys.executable).parent / "llmlab")
    result = subprocess.run([llmlab, "rloo", "--model", str(tmp_path / "missing"), "--samples", "1"],
                            capture_output=True, text=True, timeout=120, env=subprocess_environment(), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    assert "rollout.samples must be at least 2" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------------- metrics and evaluation

LOGGED = {"reward", "reward_std", "gold", "kl", "kl_coef", "entropy", "clip_frac", "approx_kl", "response_len",
          "refusal_rate", "flat_groups", "loss", "grad_norm", "lr", "updates", "rollout_s", "step_s"}
EVALUATED = {"eval/accuracy", "eval/score", "eval/pass@1", "eval/pass@2", "eval/kl", "eval/response_len",
             "eval/refusal_rate", "eval/n"}


@pytest.mark.parametrize("algo", list(CONFIGS))
def test_metrics_evaluation_and_samples(algo: str, stopper_dir: Path, tmp_path: Path) -> None:
    """Two steps with 4 held-out prompts (k=2 samples each): training rows at steps 1 and 2 with every logged
    statistic (PPO: value_loss, explained_var); evaluation rows at step 0 (where the policy is the reference:
    KL exactly 0) and at the end; samples.jsonl rows."""
    run = run_online(algo, stopper_dir, tmp_path / "run", "train.max_steps=2", "eval.n_prompts=4", "eval.k=2",
                     "sample_every=1", "train.eval_every=0")
    rows = metrics(run)
    train = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "eval/accuracy" in r]
    assert [r["step"] for r in train] == [1, 2] and [r["step"] for r in evals] == [0, 2]
    ppo = {"value_loss", "explained_var"} if algo == "ppo" else set()
    for r in train:
        assert LOGGED | ppo <= set(r), (LOGGED | ppo) - set(r)
        assert r["reward"] == pytest.approx(r["gold"])  # reward = 1.0 x gold
        assert 1 <= r["response_len"] < 8 and 0 <= r["refusal_rate"] <= 1 and r["entropy"] > 0
        assert r["updates"] == (4 if algo == "ppo" else 1) and r["lr"] == 1e-3
        assert all(math.isfinite(r[k]) for k in LOGGED | ppo)
    assert train[0]["kl"] == 0.0  # the first rollout's policy is the reference
    if algo != "ppo":  # one update that reuses the rollout: the ratio is 1
        assert train[0]["clip_frac"] == 0.0 and train[0]["approx_kl"] == 0.0
    for r in evals:
        assert set(r) >= EVALUATED and r["eval/n"] == 4
        assert 0 <= r["eval/pass@1"] <= r["eval/pass@2"] <= 1 and 0 <= r["eval/accuracy"] <= 1
    assert evals[0]["eval/kl"] == 0.0
    assert not (run / "eval.md").exists()  # the report is the commands' (eval/online_run.py), not the trainer's
    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [1] * 4 + [2] * 4
    assert all({"prompt", "response", "reward", "gold", "proxy"} <= set(s) for s in samples)
    log = (run / "log.txt").read_text()
    assert "step 0: held-out accuracy" in log and f"{algo}: 16 prompts (4 held out)" in log


def test_the_command_ends_with_the_evaluation_against_the_start_model(stopper_dir: Path, tmp_path: Path) -> None:
    """`llmlab grpo` is the trainer, then eval/online_run.py: the final policy (the run folder) and the starting
    model on the run's 6 held-out prompts (align.online.prompt_sets), greedily and eval.k=2 times sampled. Its
    figures equal those of policies.answer + summarise (the core of `llmlab eval`) on the same prompts, its
    greedy accuracies equal the trainer's own first and last eval/accuracy, and accuracy's interval is Wilson's."""
    out = tmp_path / "run"
    changes = [*TINY_RUN, "train.max_steps=2", "eval.n_prompts=6", "eval.k=2", "train.lr=1e-2"]
    assert main(["grpo", "--model", str(stopper_dir), "--out", str(out), "--quiet", *changes]) == 0
    cfg = tiny_config("grpo", stopper_dir, *changes)
    held = prompt_sets(cfg, print)[1]
    kw = dict(k=2, temperature=1.0, max_new_tokens=8, batch_size=cfg.rollout.batch_size, seed=0)
    expected = summarise({"base": answer(str(stopper_dir), held, **kw), "aligned": answer(str(out), held, **kw)},
                         baseline="base")
    saved = json.loads((out / "eval.json").read_text())
    gen = saved["generation"]
    assert gen == json.loads(json.dumps(json_safe(expected)))
    base, aligned = gen["base"], gen["aligned"]
    assert base["accuracy"]["n"] == 6 and sum(f["n"] for f in base["families"].values()) == 6
    assert (base["accuracy"]["lo"], base["accuracy"]["hi"]) == pytest.approx(
        wilson_interval(round(base["accuracy"]["mean"] * 6), 6))
    assert base["pass@1"]["n"] == 6 and aligned["vs_baseline"]["against"] == "base"
    evals = [r for r in metrics(out) if "eval/accuracy" in r]
    assert saved["in_loop"] == {"start": evals[0], "end": evals[-1]} and [r["step"] for r in evals] == [0, 2]
    assert base["accuracy"]["mean"] == evals[0]["eval/accuracy"]
    assert aligned["accuracy"]["mean"] == evals[-1]["eval/accuracy"]
    text = (out / "eval.md").read_text()
    assert text.startswith(f"# grpo: the final policy against {stopper_dir}")
    assert "| policy | n | gold accuracy [95% CI] | vs baseline (paired ± SE) | pass@1 | pass@2 |" in text
    assert f"| aligned | 6 | {interval(aligned['accuracy'])} | " in text and "| kl | 0.000 |" in text
    records = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in records] == [p.text for p in held]
    assert (out / "family_scores.png").is_file()


@pytest.mark.parametrize("rollout_temperature", [
    1.0,
    0.5,
])
def test_eval_kl_is_the_kl_of_the_sampled_answers(rollout_temperature: float, stopper_dir: Path, tiny_model_dir: Path,
                                                  tmp_path: Path) -> None:
    """eval/kl at step 0, with a reference that is not the policy (the tiny model the stopper was made from):
    the mean over held-out prompts of the mean over their k answers (sampled at eval.temperature=1, after
    the greedy ones, from a generator seeded with train.seed) of sum_t log pi(y_t) - log pi_ref(y_t), both
    at the temperature the answers were sampled at, recomputed here row by row."""
    run = run_online("grpo", stopper_dir, tmp_path / "run", f"reference_model={tiny_model_dir}", "eval.n_prompts=3",
                     "eval.k=2", "eval.temperature=1.0", f"rollout.temperature={rollout_temperature}")
    (row,) = [r for r in metrics(run) if r["step"] == 0]
    policy, tok = load_policy(str(stopper_dir), device="cpu")
    ref, _ = load_policy(str(tiny_model_dir), device="cpu")
    held = task_world_prompts(3, seed=0, split="eval", stream="online-eval")
    generator = torch.Generator().manual_seed(0)
    settings = dict(max_new_tokens=8, top_p=1.0, batch_size=64, device=CPU, generator=generator)
    sample_rollouts(policy, tok, held, samples=1, temperature=0.0, **settings)  # the greedy answers come first
    sampled = sample_rollouts(policy, tok, held, samples=2, temperature=1.0, **settings)
    kl = 0.0
    with torch.no_grad():
        for p, r in zip(sampled.prompt_ids, sampled.response_ids, strict=True):
            P, R = len(p), len(r)
            logp = _direct(policy, p + r, 1.0, tok.inner.id_count)[0][P - 1: P - 1 + R]
            ref_logp = _direct(ref, p + r, 1.0, tok.inner.id_count)[0][P - 1: P - 1 + R]
            kl += float((logp - ref_logp).sum())
    assert kl != 0.0
    assert row["eval/kl"] == pytest.approx(kl / 2 / 3, rel=1e-4, abs=1e-6)


def test_adaptive_kl_moves_the_coefficient_toward_the_target(stopper_dir: Path, tmp_path: Path) -> None:
    """target_kl: after each step coef <- coef (1 + clip(kl / target - 1, -0.2, 0.2) x 4 / kl_horizon), 4 being
    the step's responses (4 prompts x 1: PPO needs no groups): it falls while the KL is under the target
    (step 1's is 0) and rises once it is over. The coefficient logged at step k is the one step k used."""
    run = run_online("ppo", stopper_dir, tmp_path / "run", "train.max_steps=5", "target_kl=0.002", "kl_horizon=10",
                     "kl_coef=0.1", "train.lr=1e-2", "rollout.samples=1")
    rows = train_rows(run)
    assert rows[0]["kl_coef"] == 0.1 and rows[0]["kl"] == 0.0
    directions = set()
    for now, after in itertools.pairwise(rows):
        error = min(max(now["kl"] / 0.002 - 1.0, -0.2), 0.2)
        assert after["kl_coef"] == pytest.approx(now["kl_coef"] * (1 + error * 4 / 10), rel=1e-12)
        directions.add((after["kl_coef"] > now["kl_coef"], now["kl"] > 0.002))
    assert {d for d, _ in directions} == {False, True} and all(up == over for up, over in directions)


def test_prompts_from_a_file(stopper_dir: Path, rm_dir: Path, tmp_path: Path) -> None:
    """--input rows: 4 task-world prompts and 4 others. With a reward model and reward.gold=0 all 8 are used,
    data.eval_fraction=0.25 holding 2 out, and the proxy is logged in training and evaluation. With the gold
    reward and data.strict=false the 4 others are skipped and listed in log.txt."""
    rows = [p.text for p in task_world_prompts(4, seed=3)] + ["Tell me a story.", "Hello!", "Write a poem.", "Why?"]
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": r}) + "\n" for r in rows))
    run = run_online("grpo", stopper_dir, tmp_path / "rm", f"data.input=[{data}]", "data.eval_fraction=0.25",
                     "eval.n_prompts=2", "eval.k=2", "train.batch_size=2", "reward.gold=0", "reward.rm=1",
                     f"reward.reward_model={rm_dir}")
    assert "grpo: 6 prompts (2 held out)" in (run / "log.txt").read_text()
    (row,) = train_rows(run)
    assert "proxy" in row and row["reward"] == pytest.approx(row["proxy"])
    evals = [r for r in metrics(run) if "eval/accuracy" in r]
    assert all("eval/proxy" in r for r in evals)
    cfg = tiny_config("grpo", stopper_dir, f"data.input=[{data}]", "data.eval_fraction=0.25", "eval.n_prompts=2",
                      "eval.k=2", "train.batch_size=2", "reward.gold=0", "reward.rm=1", f"reward.reward_model={rm_dir}")
    held = prompt_sets(cfg, print)[1]
    aligned = finish_online_run(cfg, run, quiet=True)["generation"]["aligned"]  # the end-of-run evaluation
    assert aligned["proxy"]["n"] == 2 and aligned["proxy"]["mean"] == pytest.approx(evals[-1]["eval/proxy"], rel=1e-5)
    assert aligned["accuracy"]["n"] == sum(p.family is not None for p in held)  # no gold figure for the others
    assert "proxy reward" in (run / "eval.md").read_text()
    run = run_online("grpo", stopper_dir, tmp_path / "gold", f"data.input=[{data}]", "data.strict=false",
                     "train.batch_size=2")
    log = (run / "log.txt").read_text()
    assert log.count("skipped row: ") == 4 and f"{data}:5: not a task-world prompt" in log
    assert "grpo: 4 prompts (0 held out)" in log


def test_stop_kl_ends_a_steps_updates_early(stopper_dir: Path, tmp_path: Path) -> None:
    """PPO's 2 epochs x 2 minibatches: with stop_kl=1e-9 the approximate KL to the rollout policy passes it as
    soon as one update has moved the weights, so each step makes fewer than its 4 updates."""
    run = run_online("ppo", stopper_dir, tmp_path / "run", "train.max_steps=2", "stop_kl=1e-9", "train.lr=1e-2")
    assert all(1 <= r["updates"] < 4 for r in train_rows(run))
    full = run_online("ppo", stopper_dir, tmp_path / "full", "train.max_steps=2", "train.lr=1e-2")
    assert [r["updates"] for r in train_rows(full)] == [4, 4]


def test_without_target_kl_the_coefficient_stays(stopper_dir: Path, tmp_path: Path) -> None:
    run = run_online("rloo", stopper_dir, tmp_path / "run", "train.max_steps=3", "kl_coef=0.3", "train.lr=1e-2")
    assert [r["kl_coef"] for r in train_rows(run)] == [0.3, 0.3, 0.3]


# ---------------------------------------------------------------------- the reward-hacking detector


class RisingProxyFallingGold(Rewards):
    """The reward model's term, with the proxy rising and the gold score falling by 0.1 a training step
    (a call with 8 responses: 4 prompts x 2; the evaluation's calls have 2)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0

    def __call__(self, prompts, responses, closed, lengths) -> Scored:
        real = super().__call__(prompts, responses, closed, lengths)
        assert not any(math.isnan(x) for x in real.proxy)  # the reward model scored them
        self.calls += len(prompts) == 8
        proxy = [0.1 * self.calls + x / 100 for x in real.proxy]  # still differs within a group
        return Scored(proxy, [1.0 - 0.1 * self.calls] * len(proxy), proxy, real.refused)


@pytest.mark.parametrize("stop", [False, True])
def test_divergence_detector_warns_and_stops(stop: bool, stopper_dir: Path, rm_dir: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """hacking.window=3: at step 3 the proxy has risen over 3 steps while the gold score fell. One warning in
    log.txt, `hacking: 1` on step 3's row only; with hacking.stop=true the run ends there (with its model
    and a held-out evaluation), else it goes on to step 5."""
    monkeypatch.setattr(online_module, "Rewards", RisingProxyFallingGold)
    run = run_online("grpo", stopper_dir, tmp_path / "run", "train.max_steps=5", "reward.gold=0", "reward.rm=1",
                     f"reward.reward_model={rm_dir}", "hacking.window=3", "hacking.min_rise=0", "hacking.min_fall=0",
                     f"hacking.stop={str(stop).lower()}", "eval.n_prompts=2", "eval.k=1")
    rows = train_rows(run)
    assert [r["step"] for r in metrics(run) if "eval/accuracy" in r] == [0, 3 if stop else 5]
    assert [r["step"] for r in rows] == ([1, 2, 3] if stop else [1, 2, 3, 4, 5])
    assert [r["proxy"] > 0 for r in rows] == [True] * len(rows)
    assert [r["gold"] for r in rows[:3]] == pytest.approx([0.9, 0.8, 0.7])
    assert [r.get("hacking") for r in rows] == [None, None, 1] + [None] * (len(rows) - 3)
    log = (run / "log.txt").read_text()
    warnings = [line for line in log.splitlines() if "reward hacking" in line]
    assert len(warnings) == 1 and "warning: step 3: reward hacking" in warnings[0] and "gold 0.700" in warnings[0]
    assert ("stopping at step 3: the divergence detector fired" in log) == stop
    assert (run / "model.safetensors").is_file()


def test_without_a_proxy_the_detector_stays_silent(stopper_dir: Path, tmp_path: Path) -> None:
    run = run_online("grpo", stopper_dir, tmp_path / "run", "train.max_steps=3", "hacking.window=3",
                     "hacking.min_rise=0", "hacking.min_fall=0")
    assert all("proxy" not in r and "hacking" not in r for r in train_rows(run))


# ---------------------------------------------------------------------- HF policies and LoRA


def test_grpo_on_an_hf_policy_saves_an_hf_folder(stopper_hf_dir: Path, rm_dir: Path, tmp_path: Path) -> None:
    """One GRPO step on the HF Llama folder (chat template in tokenizer_config.json), rewarded by a reward
    model: the run folder is an HF folder (safetensors, tokenizer with the template) that loads again, with
    weights moved by the step."""
    run = run_online("grpo", stopper_hf_dir, tmp_path / "run", "reward.gold=0", "reward.rm=1",
                     f"reward.reward_model={rm_dir}")
    assert (run / "config.json").is_file() and (run / "model.safetensors").is_file()
    assert not (run / "model.yaml").exists() and not list(run.glob("*.bin"))
    policy, tok = load_policy(str(run), device="cpu")
    assert not is_llmlab(policy) and tok.has_chat_template
    after, before = load_file(str(run / "model.safetensors")), load_file(str(stopper_hf_dir / "model.safetensors"))
    assert after.keys() == before.keys()
    assert max(float((after[k] - before[k]).abs().max()) for k in before) > 1e-4
    (row,) = train_rows(run)
    assert math.isfinite(row["loss"]) and row["grad_norm"] > 0


def test_a_length_penalty_trains_an_hf_policy(stopper_hf_dir: Path, tmp_path: Path) -> None:
    """The same model as an llmlab folder logs a mean response length of about 4 of 8 tokens and a non-zero
    gradient under reward.length=-0.1 (test_grpo_with_lora_trains_the_adapted_layers_only[llmlab])."""
    run = run_online("grpo", stopper_hf_dir, tmp_path / "run", "reward.gold=0", "reward.length=-0.1")
    (row,) = train_rows(run)
    assert row["response_len"] < 8 and row["flat_groups"] < 1 and row["grad_norm"] > 0


def test_ppo_on_an_hf_policy_with_a_shared_value_head(stopper_hf_dir: Path, tmp_path: Path) -> None:
    run = run_online("ppo", stopper_hf_dir, tmp_path / "run", "value_model=shared", "reward.gold=0",
                     "reward.length=-0.1")
    assert (run / "value_head.safetensors").is_file() and (run / "config.json").is_file()
    (row,) = train_rows(run)
    assert math.isfinite(row["value_loss"]) and row["updates"] == 4


@pytest.mark.parametrize("kind", ["llmlab", "hf"])
def test_grpo_with_lora_trains_the_adapted_layers_only(kind: str, stopper_dir: Path, stopper_hf_dir: Path,
                                                       rm_dir: Path, tmp_path: Path) -> None:
    """lora.r=4, 2 steps: the saved policy has the adapters folded into the target layers' weights (no LoRA
    tensors left), the other weights (embeddings, norms) exactly as they were. llmlab: a length penalty;
    HF: a reward model's score (see test_a_length_penalty_trains_an_hf_policy)."""
    model = stopper_dir if kind == "llmlab" else stopper_hf_dir
    reward = ["reward.length=-0.1"] if kind == "llmlab" else ["reward.rm=1", f"reward.reward_model={rm_dir}"]
    run = run_online("grpo", model, tmp_path / "run", "lora.r=4", "train.max_steps=2", "train.lr=1e-2",
                     "reward.gold=0", *reward)
    rows = train_rows(run)
    assert all(r["grad_norm"] > 0 for r in rows) and (kind == "hf" or rows[0]["response_len"] < 8)
    after, before = load_file(str(run / "model.safetensors")), load_file(str(model / "model.safetensors"))
    assert after.keys() == before.keys() and not any("lora" in k for k in after)
    changed = {k for k in before if not torch.equal(after[k], before[k])}
    targets = ("qkv", "o", "gate_up", "down") if kind == "llmlab" else ("proj",)
    assert changed and all(any(t in k.split(".")[-2] for t in targets) for k in changed), sorted(changed)
    assert not any("embed" in k or "norm" in k for k in changed)
    trained, total = re.search(r"([\d.]+)M of ([\d.]+)M parameters", (run / "log.txt").read_text()).groups()
    assert float(trained) < float(total) / 4


# ---------------------------------------------------------------------- 2 DDP processes == 1 process


PER_PROMPT_HOOK = '''
"""`python -m llmlab` with each prompt's G responses drawn from a generator of their own, seeded by the step and
the prompt's text, so that they do not depend on which process samples them (online.py seeds one generator
per (step, rank) for all of a process's prompts)."""
import sys, zlib
import torch
import llmlab.align.online as online
from llmlab.cli import main

real = online.sample_rollouts

def per_prompt(model, tok, prompts, *, generator, **kwargs):
    step = generator.initial_seed() // 1024  # train.seed 0: step * 1024 + rank
    parts = [real(model, tok, [p], generator=torch.Generator().manual_seed(step * 1_000_003 + zlib.crc32(
        p.text.encode())), **kwargs) for p in prompts]
    return online.Rollouts(*(sum((getattr(r, name) for r in parts), []) for name in
                             ("prompts", "prompt_ids", "response_ids", "texts", "closed")))

def doubled(fn):  # float64 models: what is left of the difference is float32 rounding in log-probs and rewards
    def wrapper(*args, **kwargs):
        model, *rest = fn(*args, **kwargs)
        return (model.double(), *rest)
    return wrapper

online.sample_rollouts = per_prompt
online.load_trainee, online.load_policy = doubled(online.load_trainee), doubled(online.load_policy)
raise SystemExit(main(sys.argv[1:]))
'''


@pytest.mark.slow
def test_two_ddp_processes_equal_one(stopper_dir: Path, rm_dir: Path, tmp_path: Path) -> None:
    """torchrun with 2 processes (gloo), 4 prompts per step split 2 + 2 (micro-batches of 1), gives the logged
    values and the weights of one process with all 4, over 2 steps. The rollouts are made independent of
    the process that samples them (PER_PROMPT_HOOK), since online.py's generator is per (step, rank); the
    reward is a reward model's score (every group has advantages), with the k3 KL and an entropy bonus in
    the loss, and responses of different lengths (a token-mean loss): the counts are global. Models in
    float64, and rollout.batch_size=1 so that the reward model scores each response unpadded: a group's
    two rewards can be close, and (r - mean) / (std + 1e-4) then magnifies float32 padding noise."""
    hook = tmp_path / "per_prompt_hook.py"
    hook.write_text(PER_PROMPT_HOOK)
    overrides = ["train.max_steps=2", "train.batch_size=4", "train.micro_batch_size=1", "rollout.samples=2",
                 "rollout.max_new_tokens=8", "rollout.batch_size=1", "loss_norm=token", "entropy_coef=0.01", "kl_coef=0.5",
                 "reward.gold=0", "reward.rm=1", f"reward.reward_model={rm_dir}", "eval.n_prompts=0",
                 "sample_every=0", "train.device=cpu", "data.n=16", "train.lr=1e-3"]
    argv = ["grpo", "--model", str(stopper_dir), "--quiet"]
    runs = {"one": [sys.executable, str(hook)],
            "two": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(hook)]}
    for name, launcher in runs.items():
        result = subprocess.run([*launcher, *argv, "--out", str(tmp_path / name), *overrides],
                                env=subprocess_environment(), capture_output=True, text=True, timeout=400)
        assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in (tmp_path / "two" / "log.txt").read_text()
    one, two = train_rows(tmp_path / "one"), train_rows(tmp_path / "two")
    assert [r["step"] for r in one] == [r["step"] for r in two] == [1, 2]
    for a, b in zip(one, two, strict=True):
        assert a["response_len"] == b["response_len"] and a["reward"] == b["reward"]  # the same rollouts
        for key in ("loss", "grad_norm", "entropy", "kl", "approx_kl", "clip_frac"):
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-9), (a["step"], key)
    assert 1 < one[0]["response_len"] < 8 and one[0]["grad_norm"] > 0 and one[1]["kl"] != 0
    wa, wb = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert wa[k].dtype == torch.float64, k
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-9, atol=1e-12, msg=k)


@pytest.mark.slow
def test_eval_report_families_under_two_processes(stopper_dir: Path, tmp_path: Path) -> None:
    """4 held-out prompts of 4 families: the in-loop evaluation takes 2 per process, but the end-of-run one
    (eval.json), on rank 0 alone, covers all 4; the other process ends without writing."""
    from llmlab.data.config import TaskConfig

    held = task_world_prompts(4, seed=0, split="eval", tasks=TaskConfig(), stream="online-eval")
    overrides = ["train.max_steps=1", "train.batch_size=2", "rollout.samples=2", "rollout.max_new_tokens=4",
                 "eval.n_prompts=4", "eval.k=1", "sample_every=0", "train.device=cpu", "data.n=8"]
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "llmlab", "grpo", "--model", str(stopper_dir), "--quiet", "--out",
                             str(tmp_path / "two"), *overrides],
                            env=subprocess_environment(), capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((tmp_path / "two" / "eval.json").read_text())
    assert saved["in_loop"]["end"]["eval/n"] == 4 and saved["generation"]["aligned"]["accuracy"]["n"] == 4
    assert set(saved["generation"]["base"]["families"]) == {p.family for p in held}
    assert len((tmp_path / "two" / "generations.jsonl").read_text().splitlines()) == 4


@pytest.mark.slow
def test_fewer_held_out_prompts_than_processes(stopper_dir: Path, tmp_path: Path) -> None:
    """eval.n_prompts=1 under 2 processes: rank 1 has no held-out prompt, which should only make it add zeros
    to the evaluation's sums."""
    overrides = ["train.max_steps=1", "train.batch_size=2", "rollout.samples=2", "rollout.max_new_tokens=4",
                 "eval.n_prompts=1", "eval.k=1", "sample_every=0", "train.device=cpu", "data.n=8"]
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "llmlab", "grpo", "--model", str(stopper_dir), "--quiet", "--out",
                             str(tmp_path / "two"), *overrides],
                            env=subprocess_environment(), capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["eval/n"] for r in metrics(tmp_path / "two") if "eval/n" in r] == [1.0, 1.0]
