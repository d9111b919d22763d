"""align/rl.py against TRL 1.16's real trainers: `GRPOTrainer` and `RLOOTrainer` are built offline on a tiny
`LlamaForCausalLM`, and their own methods give the reference values: `_compute_loss` (loss, then every
parameter's gradient after backward, and the logged clip fraction, entropy and KL) and
`_generate_and_score_completions` (the advantages, from a reward function that returns fixed rewards).
llmlab's side is rl.py's functions on log-probs from `logprobs.model_logits` + `token_logprobs`, on a deep copy
of the same weights (TRL patches the forward of the model it is given with its fused LM head).

Correspondence (TRL -> llmlab):

    GRPO loss_type="grpo"                 aggregate(..., "sequence")
    GRPO "dapo"; "bnpo" (one micro-batch) aggregate(..., "token"), n_tokens = num_items_in_batch
    GRPO "dr_grpo"                        aggregate(..., "constant"), max_tokens = max_completion_length
    GRPO epsilon, epsilon_high            clipped_policy_loss(clip_low, clip_high)
    GRPO beta > 0                         + beta * kl_estimate(logp, ref_logp, "k3") per token, before aggregate
      (use_bias_correction_kl=False; TRL's default True multiplies that term by the ratio pi / pi_old, which
      rl.py does not do: test_trl_default_bias_corrected_kl pins the difference)
    GRPO scale_rewards group/batch/none   group_advantages(scale=...)
    RLOO advantages                       rloo_advantages(rewards - beta * sum_t k1(old, ref), G)
    RLOO normalize_advantages             (A - mean) / (Bessel std + 1e-4), written out here: rl.whiten
                                          divides by sqrt(var + eps) instead (compared with a looser tolerance)
    RLOO loss                             clipped_policy_loss on summed log-probs (B, 1), "sequence" mean

TRL's "bnpo" divides each micro-batch by its own token count, so it equals "token" only without gradient
accumulation; "grpo", "dapo" and "dr_grpo" also agree when the batch is split in two micro-batches and
llmlab is given the step's global counts.

The loss batch is written by hand (left-padded prompts of lengths 1-5, completions of lengths 1-6), so
lengths differ for sure; old log-probs are set so that the ratios pi / pi_old cycle through 0.6 ... 1.4 (RATIOS):
tokens clip on both sides, and some (1.25 on a positive advantage) only without clip-higher.

Tolerance: loss 1e-6 absolute; gradients 1e-5 absolute + 1e-4 relative (fp32; TRL's chunked fused LM head
and llmlab's logsumexp round differently); advantages 1e-5.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from llmlab.align.logprobs import model_logits, token_logprobs  # noqa: E402
from llmlab.align.rl import (  # noqa: E402
    aggregate,
    clipped_policy_loss,
    entropy,
    group_advantages,
    kl_estimate,
    masked_mean,
    rloo_advantages,
)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers 5 renames inside trl
ALPHABET = "abcdefghijklmnopqrstuvwxyz ?:.0123456789"
PROMPTS = ["what is 2 plus 3? ", "reverse abc: "]
G = 4  # num_generations
B = G * len(PROMPTS)
MAX_LEN = 8  # max_completion_length; batches are padded to their longest completion, here 6
REWARDS = [1.0, 0.0, 0.0, 1.0, 0.5, 2.0, 1.0, 0.0]  # fixed, per completion, in batch order
PROMPT_LENGTHS = [3, 5, 2, 4, 5, 1, 3, 4]
COMPLETION_LENGTHS = [6, 2, 4, 1, 6, 3, 5, 6]
LOSS_TOL = {"rtol": 0.0, "atol": 1e-6}
GRAD_TOL = {"rtol": 1e-4, "atol": 1e-5}
ADV_TOL = {"rtol": 0.0, "atol": 1e-5}


def char_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """One token per character (a BPE without merges) plus <eos>, which is also the padding."""
    from tokenizers import Tokenizer, models

    vocab = {c: i for i, c in enumerate(ALPHABET)} | {"<eos>": len(ALPHABET)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.add_special_tokens(["<eos>"])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")


def fixed_rewards(completions, **kwargs) -> list[float]:
    """The reward function: REWARDS, whatever was generated."""
    assert len(completions) == len(REWARDS)
    return list(REWARDS)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    """(tokenizer, policy, reference): a 1-layer, 16-wide Llama with weights of std 0.2 (log-probs far from
    uniform) saved as the reference; the policy is it plus noise, loaded from its folder so that TRL,
    given beta > 0, loads that folder as its reference model (config._name_or_path)."""
    tok = char_tokenizer()
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                                   tie_word_embeddings=False, attention_dropout=0.0)
    torch.manual_seed(0)
    ref = transformers.LlamaForCausalLM(cfg).float()
    with torch.no_grad():
        for p in ref.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.2)
    ref_dir = tmp_path_factory.mktemp("rl-ref")
    ref.save_pretrained(ref_dir)
    policy = transformers.LlamaForCausalLM.from_pretrained(ref_dir).float()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return tok, policy.train(), ref.eval()


@pytest.fixture(scope="module")
def batch(setup) -> dict[str, torch.Tensor]:
    """The hand-written batch: left-padded prompts and right-padded completions (as TRL collates them),
    the advantages of REWARDS (both signs), and the reference's per-token log-probs."""
    tok, _, ref = setup
    pad, P = tok.pad_token_id, max(PROMPT_LENGTHS)
    g = torch.Generator().manual_seed(2)
    prompt_mask = (torch.arange(P)[None, :] >= P - torch.tensor(PROMPT_LENGTHS)[:, None]).long()  # left padding
    T = max(COMPLETION_LENGTHS)  # < MAX_LEN: dr_grpo's constant is max_completion_length, not the padded width
    completion_mask = (torch.arange(T)[None, :] < torch.tensor(COMPLETION_LENGTHS)[:, None]).long()
    prompt_ids = torch.randint(0, pad, (B, P), generator=g).masked_fill(prompt_mask == 0, pad)
    completion_ids = torch.randint(0, pad, (B, T), generator=g).masked_fill(completion_mask == 0, pad)
    inputs = {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
              "completion_mask": completion_mask,
              "advantages": group_advantages(torch.tensor(REWARDS), G)}
    with torch.no_grad():
        inputs["ref_per_token_logps"], _ = completion_logprobs(ref, inputs)
    return inputs


def completion_logprobs(model, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """llmlab's per-token log-probs (B, T) of the completion tokens and the entropies (B, T) of the
    positions that predict them."""
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)  # (B, P + T)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    T = inputs["completion_ids"].shape[1]
    logits = model_logits(model, ids, attention)  # (B, P + T, V)
    return token_logprobs(logits, ids)[:, -T:], entropy(logits[:, -T - 1:-1])


RATIOS = [1.25, 0.75, 1.4, 0.9, 1.1, 0.6, 1.32]  # pi / pi_old, cycled over the batch's tokens


def old_logprobs(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Old log-probs that put the ratio pi / pi_old of the masked tokens, row by row, through RATIOS: 0.6 and
    0.75 clip on negative advantages, 1.25 clips under epsilon_high = 0.2 and not 0.28, 1.32 and 1.4 under
    both on positive advantages. 0 on padding."""
    with torch.no_grad():
        logp, _ = completion_logprobs(model, inputs)
    mask = inputs["completion_mask"].bool()
    log_ratio = torch.zeros_like(logp)
    n = int(mask.sum())
    log_ratio[mask] = torch.tensor(RATIOS * (n // len(RATIOS) + 1))[:n].log()
    return (logp - log_ratio) * mask


def quiet() -> None:
    logging.getLogger("trl").setLevel(logging.ERROR)
    logging.getLogger("transformers").setLevel(logging.ERROR)


def grpo_trainer(tmp_path: Path, tok, policy, **config):
    quiet()
    # subtle: TRL 1.16 defaults use_bias_correction_kl=True (the KL term times the ratio pi / pi_old, DeepSeek-V3.2);
    # the plain GRPO k3 term is use_bias_correction_kl=False (see test_trl_default_bias_corrected_kl)
    config = {"per_device_train_batch_size": B, "use_bias_correction_kl": False, **config}
    args = trl.GRPOConfig(output_dir=str(tmp_path / "grpo"), report_to="none", use_cpu=True, bf16=False,
                          gradient_checkpointing=False, num_generations=G, max_completion_length=MAX_LEN,
                          logging_steps=1, **config)
    trainer = trl.GRPOTrainer(model=policy, reward_funcs=fixed_rewards, args=args,
                              train_dataset=datasets.Dataset.from_list([{"prompt": p} for p in PROMPTS * G]),
                              processing_class=tok)
    trainer.current_gradient_accumulation_steps = args.gradient_accumulation_steps  # set by Trainer.train's loop
    return trainer


def rloo_trainer(tmp_path: Path, tok, policy, **config):
    quiet()
    args = trl.RLOOConfig(output_dir=str(tmp_path / "rloo"), report_to="none", use_cpu=True, bf16=False,
                          gradient_checkpointing=False, num_generations=G, max_completion_length=MAX_LEN,
                          per_device_train_batch_size=B, logging_steps=1, **config)
    trainer = trl.RLOOTrainer(model=policy, reward_funcs=fixed_rewards, args=args,
                              train_dataset=datasets.Dataset.from_list([{"prompt": p} for p in PROMPTS * G]),
                              processing_class=tok)
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def generation_inputs() -> list[dict[str, str]]:
    """A generation batch as TRL's sampler gives it: each prompt G times in a row."""
    return [{"prompt": p} for p in PROMPTS for _ in range(G)]


def assert_same_grads(ours, theirs) -> None:
    named = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert p.grad is not None and named[name].grad is not None, name
        assert float(p.grad.abs().max()) > 0, name
        torch.testing.assert_close(p.grad, named[name].grad, **GRAD_TOL, msg=lambda m, n=name: f"{n}: {m}")


def last_metrics(trainer) -> dict[str, float]:
    return {k: v[-1] for k, v in trainer._metrics["train"].items()}


# ---------------------------------------------------------------------- GRPO loss and gradients

NORMALISATION = {"grpo": "sequence", "dapo": "token", "bnpo": "token", "dr_grpo": "constant"}
GRPO_CASES = [  # (loss_type, beta, epsilon_high): every loss with and without KL, clip-higher on and off
    ("grpo", 0.0, None), ("grpo", 0.1, 0.28),
    ("dapo", 0.0, 0.28), ("dapo", 0.1, None),
    ("bnpo", 0.0, None), ("bnpo", 0.1, 0.28),
    ("dr_grpo", 0.0, 0.28), ("dr_grpo", 0.1, None),
]


def llmlab_grpo_loss(model, inputs: dict[str, torch.Tensor], old: torch.Tensor, *, normalisation: str, beta: float,
                     clip_high: float | None, n_sequences: int, n_tokens: int, kl_times_ratio: bool = False):
    """(loss share, stats) of rl.py on one (micro-)batch, with the step's global counts. kl_times_ratio:
    weigh the KL term by pi / pi_old, as TRL's use_bias_correction_kl (composed here; rl.py has no such option)."""
    logp, ent = completion_logprobs(model, inputs)
    mask = inputs["completion_mask"]
    per_token, clipped = clipped_policy_loss(logp, old, inputs["advantages"], clip_low=0.2, clip_high=clip_high)
    kl = kl_estimate(logp, inputs["ref_per_token_logps"], "k3")
    if kl_times_ratio:
        kl = kl * torch.exp(logp - old)
    if beta:
        per_token = per_token + beta * kl
    loss = aggregate(per_token, mask, normalisation, n_sequences=n_sequences, n_tokens=n_tokens, max_tokens=MAX_LEN)
    stats = {"clip_ratio/region_mean": masked_mean(clipped, mask), "entropy": masked_mean(ent.detach(), mask),
             "kl": masked_mean(kl.detach(), mask)}
    return loss, stats


@pytest.mark.parametrize(("loss_type", "beta", "epsilon_high"), GRPO_CASES)
def test_grpo_loss_and_gradients_match_trl(tmp_path: Path, setup, batch, loss_type: str, beta: float,
                                           epsilon_high: float | None) -> None:
    tok, policy, _ = setup
    theirs, ours = copy.deepcopy(policy), copy.deepcopy(policy)
    trainer = grpo_trainer(tmp_path, tok, theirs, loss_type=loss_type, beta=beta, epsilon=0.2,
                           epsilon_high=epsilon_high)
    old = old_logprobs(ours, batch)
    n_tokens = int(batch["completion_mask"].sum())
    inputs = {**batch, "old_per_token_logps": old, "num_items_in_batch": torch.tensor(n_tokens)}
    trl_loss = trainer._compute_loss(theirs, inputs)
    trl_loss.backward()
    loss, stats = llmlab_grpo_loss(ours, inputs, old, normalisation=NORMALISATION[loss_type], beta=beta,
                                   clip_high=epsilon_high, n_sequences=B, n_tokens=n_tokens)
    loss.backward()
    torch.testing.assert_close(loss, trl_loss.detach(), **LOSS_TOL)
    assert_same_grads(ours, theirs)
    metrics = last_metrics(trainer)
    clip = float(stats["clip_ratio/region_mean"])
    assert 0.05 < clip < 0.6  # the case really clips, and not everything
    assert clip == pytest.approx(metrics["clip_ratio/region_mean"], abs=1e-6)
    with torch.no_grad():  # clip-higher is exercised: epsilon_high = 0.28 clips fewer tokens than 0.2 would
        _, symmetric = clipped_policy_loss(completion_logprobs(ours, inputs)[0], old, inputs["advantages"])
    symmetric_clip = float(masked_mean(symmetric, inputs["completion_mask"]))
    assert (clip < symmetric_clip) if epsilon_high else (clip == symmetric_clip)
    assert float(stats["entropy"]) == pytest.approx(metrics["entropy"], abs=1e-5)
    if beta:
        assert float(stats["kl"]) == pytest.approx(metrics["kl"], abs=1e-6)
        assert metrics["kl"] > 1e-3  # the reference really differs


def test_trl_default_bias_corrected_kl(tmp_path: Path, setup, batch) -> None:
    """TRL 1.16's default use_bias_correction_kl=True weighs the per-token k3 by the ratio pi / pi_old
    (differentiable, so even on-policy, ratio 1, the gradient changes). llmlab's GRPO term is the plain k3,
    so its loss and gradients differ from TRL's default ones: on this batch (grpo, beta 0.1) the losses are
    0.110499 and 0.110524 and the gradients differ by up to 6.3e-3 (the largest is ~0.4). Composing rl.py's
    pieces with the ratio weight gives TRL's default exactly."""
    tok, policy, _ = setup
    theirs, ours, plain = copy.deepcopy(policy), copy.deepcopy(policy), copy.deepcopy(policy)
    trainer = grpo_trainer(tmp_path, tok, theirs, loss_type="grpo", beta=0.1, epsilon_high=0.28,
                           use_bias_correction_kl=True)
    old = old_logprobs(ours, batch)
    n_tokens = int(batch["completion_mask"].sum())
    inputs = {**batch, "old_per_token_logps": old, "num_items_in_batch": torch.tensor(n_tokens)}
    trl_loss = trainer._compute_loss(theirs, inputs)
    trl_loss.backward()
    counts = {"normalisation": "sequence", "beta": 0.1, "clip_high": 0.28, "n_sequences": B, "n_tokens": n_tokens}
    plain_loss, _ = llmlab_grpo_loss(plain, inputs, old, **counts)
    plain_loss.backward()
    loss, stats = llmlab_grpo_loss(ours, inputs, old, **counts, kl_times_ratio=True)
    loss.backward()
    torch.testing.assert_close(loss, trl_loss.detach(), **LOSS_TOL)
    assert_same_grads(ours, theirs)
    assert float(stats["kl"]) == pytest.approx(last_metrics(trainer)["kl"], abs=1e-6)
    # the plain k3 term (rl.py's GRPO) is not TRL's default
    named = dict(theirs.named_parameters())
    grad_gap = max(float((p.grad - named[k].grad).abs().max()) for k, p in plain.named_parameters())
    assert abs(float(plain_loss.detach() - trl_loss.detach())) > 1e-5 and grad_gap > 1e-3


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_grpo_micro_batches_match_trl_gradient_accumulation(tmp_path: Path, setup, batch, loss_type: str) -> None:
    """Two micro-batches of 4 (gradient_accumulation_steps = steps_per_generation = 2): the sum of TRL's two
    losses, and the accumulated gradients, equal the sum of llmlab's shares with the step's global counts
    (8 sequences, all 8 rows' tokens). The halves hold 13 and 20 tokens, so a per-micro-batch token mean
    would differ."""
    tok, policy, _ = setup
    theirs, ours = copy.deepcopy(policy), copy.deepcopy(policy)
    trainer = grpo_trainer(tmp_path, tok, theirs, loss_type=loss_type, beta=0.1, epsilon_high=0.28,
                           per_device_train_batch_size=B // 2, gradient_accumulation_steps=2)
    assert trainer.args.steps_per_generation == 2
    old = old_logprobs(ours, batch)
    n_tokens = int(batch["completion_mask"].sum())
    trl_total, total = 0.0, 0.0
    for half in (slice(0, B // 2), slice(B // 2, B)):
        inputs = {k: v[half] for k, v in batch.items()}
        inputs |= {"old_per_token_logps": old[half], "num_items_in_batch": torch.tensor(n_tokens)}
        trl_loss = trainer._compute_loss(theirs, inputs)
        trl_loss.backward()
        loss, _ = llmlab_grpo_loss(ours, inputs, old[half], normalisation=NORMALISATION[loss_type], beta=0.1,
                                   clip_high=0.28, n_sequences=B, n_tokens=n_tokens)
        loss.backward()
        trl_total, total = trl_total + trl_loss.detach(), total + loss.detach()
    torch.testing.assert_close(total, trl_total, **LOSS_TOL)
    assert_same_grads(ours, theirs)


def test_grpo_on_a_generated_batch_matches_trl(tmp_path: Path, setup) -> None:
    """TRL generates a batch itself (`_generate_and_score_completions`, beta > 0): its reference log-probs
    equal llmlab's on the scored tokens, and its on-policy loss (no old log-probs: ratio 1) and gradients
    equal llmlab's on that batch."""
    tok, policy, ref = setup
    theirs, ours = copy.deepcopy(policy), copy.deepcopy(policy)
    trainer = grpo_trainer(tmp_path, tok, theirs, loss_type="grpo", beta=0.1)
    out = trainer._generate_and_score_completions(generation_inputs())
    assert "old_per_token_logps" not in out
    mask = out["completion_mask"].bool()
    with torch.no_grad():
        ref_logp, _ = completion_logprobs(ref, out)
    torch.testing.assert_close(ref_logp[mask], out["ref_per_token_logps"][mask], rtol=0, atol=1e-5)
    trl_loss = trainer._compute_loss(theirs, out)
    trl_loss.backward()
    with torch.no_grad():
        old, _ = completion_logprobs(ours, out)
    loss, _ = llmlab_grpo_loss(ours, out, old, normalisation="sequence", beta=0.1, clip_high=None, n_sequences=B,
                               n_tokens=int(out["num_items_in_batch"]))
    loss.backward()
    torch.testing.assert_close(loss, trl_loss.detach(), **LOSS_TOL)
    assert_same_grads(ours, theirs)


# ---------------------------------------------------------------------- GRPO advantages


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_grpo_advantages_match_trl(tmp_path: Path, setup, scale: str) -> None:
    """TRL's advantages of REWARDS (its generation and scoring code, scale_rewards=scale) equal
    group_advantages(REWARDS, G, scale=scale): group 1 [1, 0, 0, 1] -> +-0.5 / (0.57735 + 1e-4) with
    scale=group."""
    tok, policy, _ = setup
    trainer = grpo_trainer(tmp_path, tok, copy.deepcopy(policy), scale_rewards=scale)
    out = trainer._generate_and_score_completions(generation_inputs())
    expected = group_advantages(torch.tensor(REWARDS), G, scale=scale)
    torch.testing.assert_close(out["advantages"], expected, **ADV_TOL)
    if scale == "group":
        assert float(out["advantages"][0]) == pytest.approx(0.5 / (3**-0.5 + 1e-4), abs=1e-5)


# ---------------------------------------------------------------------- RLOO


def test_rloo_advantages_match_trl(tmp_path: Path, setup) -> None:
    """beta = 0: TRL's leave-one-out advantages of REWARDS equal rloo_advantages: group 1 [1, 0, 0, 1] ->
    [2/3, -2/3, -2/3, 2/3]."""
    tok, policy, _ = setup
    trainer = rloo_trainer(tmp_path, tok, copy.deepcopy(policy), beta=0.0)
    out = trainer._generate_and_score_completions(generation_inputs())
    expected = rloo_advantages(torch.tensor(REWARDS), G)
    torch.testing.assert_close(out["advantages"], expected, **ADV_TOL)
    torch.testing.assert_close(out["advantages"][:4], torch.tensor([2.0, -2.0, -2.0, 2.0]) / 3, **ADV_TOL)


def test_rloo_normalised_advantages_match_trl(tmp_path: Path, setup) -> None:
    """normalize_advantages=True: TRL whitens the batch's advantages as (A - mean) / (std + 1e-4) with the
    Bessel std. That expression on rloo_advantages equals TRL's; rl.whiten (1 / sqrt(var + eps)) differs
    from it by a relative ~1e-4 / std, so it is compared at 1e-3."""
    from llmlab.align.rl import whiten

    tok, policy, _ = setup
    trainer = rloo_trainer(tmp_path, tok, copy.deepcopy(policy), beta=0.0, normalize_advantages=True)
    out = trainer._generate_and_score_completions(generation_inputs())
    adv = rloo_advantages(torch.tensor(REWARDS), G)
    expected = (adv - adv.mean()) / (adv.std() + 1e-4)
    torch.testing.assert_close(out["advantages"], expected, **ADV_TOL)
    ones = torch.ones_like(adv)
    torch.testing.assert_close(out["advantages"], whiten(adv, ones, eps=0.0), rtol=1e-3, atol=1e-3)


def test_rloo_advantages_with_kl_in_the_reward_match_trl(tmp_path: Path, setup) -> None:
    """beta > 0: TRL charges each reward beta * sum over the completion of k1 = log pi_old - log pi_ref
    before the leave-one-out baseline; llmlab's log-probs of TRL's generated batch give the same."""
    tok, policy, ref = setup
    beta = 0.05
    theirs, ours = copy.deepcopy(policy), copy.deepcopy(policy)
    trainer = rloo_trainer(tmp_path, tok, theirs, beta=beta)
    out = trainer._generate_and_score_completions(generation_inputs())
    mask = out["completion_mask"]
    with torch.no_grad():
        old, _ = completion_logprobs(ours, out)
        ref_logp, _ = completion_logprobs(ref, out)
    torch.testing.assert_close((old * mask).sum(1), out["old_logps"], rtol=0, atol=1e-5)
    kl = (kl_estimate(old, ref_logp, "k1") * mask).sum(1)
    assert float(kl.abs().max()) > 0.05  # the penalty really moves the advantages
    expected = rloo_advantages(torch.tensor(REWARDS) - beta * kl, G)
    torch.testing.assert_close(out["advantages"], expected, **ADV_TOL)


@pytest.mark.parametrize("epsilon_high", [None, 0.28])
def test_rloo_loss_and_gradients_match_trl(tmp_path: Path, setup, batch, epsilon_high: float | None) -> None:
    """RLOO's loss is per sequence: ratio of the summed log-probs, clipped, mean over sequences; llmlab:
    clipped_policy_loss on (B, 1) summed log-probs, aggregate "sequence" over a (B, 1) mask."""
    tok, policy, _ = setup
    theirs, ours = copy.deepcopy(policy), copy.deepcopy(policy)
    trainer = rloo_trainer(tmp_path, tok, theirs, beta=0.0, epsilon=0.2, epsilon_high=epsilon_high)
    mask = batch["completion_mask"]
    with torch.no_grad():
        logp, _ = completion_logprobs(ours, batch)
    # sequence ratios [1.25, 0.75, 1.4, 0.9, 1.1, 0.6, 1.32, 1.24] on advantages [+, -, -, +, -, +, +, -]:
    # rows 1 (low) and 6 clip; row 0 too when epsilon_high = 0.2 -> clip fractions 2/8 and 3/8
    old = (logp * mask).sum(1) - torch.tensor([*RATIOS, 1.24]).log()  # (B,)
    adv = rloo_advantages(torch.tensor(REWARDS), G)
    inputs = {k: batch[k] for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")}
    inputs |= {"old_logps": old, "advantages": adv}
    trl_loss = trainer._compute_loss(theirs, inputs)
    trl_loss.backward()
    logp, _ = completion_logprobs(ours, inputs)
    seq = (logp * mask).sum(1, keepdim=True)  # (B, 1)
    per_seq, clipped = clipped_policy_loss(seq, old[:, None], adv, clip_low=0.2, clip_high=epsilon_high)
    ones = torch.ones_like(per_seq)
    loss = aggregate(per_seq, ones, "sequence", n_sequences=B, n_tokens=B, max_tokens=1)
    loss.backward()
    torch.testing.assert_close(loss, trl_loss.detach(), **LOSS_TOL)
    assert_same_grads(ours, theirs)
    metrics = last_metrics(trainer)
    assert float(clipped.mean()) == (2 / 8 if epsilon_high else 3 / 8)
    assert float(clipped.mean()) == pytest.approx(metrics["clip_ratio/region_mean"], abs=1e-6)
