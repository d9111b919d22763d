"""llmlab's DPO losses equal TRL's `DPOTrainer` (trl 1.16) on the same model and the same batch: the loss,
the implicit rewards and every parameter's gradient.

Set-up: a tiny `LlamaForCausalLM` (fp32, weights drawn with std 0.2 so that log-probs are far from
uniform), a reference model that is the policy plus noise (so the rewards are not all zero), a
character-level tokenizer (so prompt + response tokenizes as prompt then response), and four preference
rows. TRL tokenizes and collates them (`input_ids` chosen-first-then-rejected, right-padded,
`completion_mask`); its `compute_loss` runs its fused LM head (chunked log-softmax, no logits tensor).
llmlab gets the same collated ids and computes log-probs with `model_logits` + `sequence_logprobs` on a
deep copy of the same policy, then the loss from `preference.preference_loss`, the trainer's own glue
(config -> loss function, per-token means, the NLL term), with a `DPOConfig` built for each case.

Correspondence (TRL loss_type -> llmlab): sigmoid -> sigmoid, ["sigmoid", "sft"] -> sigmoid + rpo_alpha,
hinge -> hinge, robust -> robust (TRL's `label_smoothing`), ipo -> ipo on per-token mean log-probs (TRL divides the log-ratios by the completion
lengths). cDPO has no TRL loss of its own in 1.16 (its `sigmoid` lost `label_smoothing`), but TRL's `aot`
with one pair per batch is exactly cDPO: AOT sorts the batch's log-ratios, and a batch of one is sorted.
Soft labels (p_chosen per pair) are cDPO with eps = 1 - p_chosen pair by pair: TRL's `aot`, one pair at a
time, with label_smoothing set to each pair's eps.
Rewards: TRL reports beta (log pi - log pi_ref) on summed log-probs for every loss; llmlab's IPO
reports them on the mean log-probs it was given, so IPO's rewards are compared on summed log-probs.

Tolerance: loss and rewards 1e-5 absolute; gradients 1e-5 absolute + 1e-4 relative (fp32; TRL's
chunked log-softmax and llmlab's logsumexp round differently).
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

from llmlab.align.config import DPOConfig  # noqa: E402
from llmlab.align.dpo import LOSSES  # noqa: E402
from llmlab.align.logprobs import model_logits, sequence_logprobs  # noqa: E402
from llmlab.align.preference import preference_loss  # noqa: E402

ALPHABET = "abcdefghijklmnopqrstuvwxyz ?:.0123456789"
ROWS = [
    {"prompt": "what is 2 plus 3? ", "chosen": "5.", "rejected": "the answer is 7."},
    {"prompt": "reverse abc: ", "chosen": "cba", "rejected": "abc"},
    {"prompt": "sort 3 1 2: ", "chosen": "1 2 3", "rejected": "3 2 1 ok"},
    {"prompt": "say hi: ", "chosen": "hi there.", "rejected": "no."},
]
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers 5 renames inside trl
LOSS_TOL = {"rtol": 0.0, "atol": 1e-5}
GRAD_TOL = {"rtol": 1e-4, "atol": 1e-5}


def char_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """One token per character (a BPE without merges) plus <eos>, which is also the padding."""
    from tokenizers import Tokenizer, models

    vocab = {c: i for i, c in enumerate(ALPHABET)} | {"<eos>": len(ALPHABET)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.add_special_tokens(["<eos>"])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")


def tiny_llama(vocab_size: int, seed: int) -> transformers.LlamaForCausalLM:
    cfg = transformers.LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   tie_word_embeddings=False, attention_dropout=0.0)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(cfg).float()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.2)
    return model


def trl_trainer(tmp_path: Path, policy, ref, tok, *, loss_type: str, beta: float, label_smoothing: float = 0.0,
                rpo_alpha: float = 0.0):
    """TRL's trainer for one loss; rpo_alpha > 0 adds its "sft" loss (the chosen tokens' mean NLL) with that
    weight, which is how TRL 1.16 spells RPO."""
    types, weights = ([loss_type, "sft"], [1.0, rpo_alpha]) if rpo_alpha else ([loss_type], None)
    args = trl.DPOConfig(output_dir=str(tmp_path / "trl"), beta=beta, loss_type=types, loss_weights=weights,
                         label_smoothing=label_smoothing, report_to="none", bf16=False, use_cpu=True,
                         activation_checkpointing=False, per_device_train_batch_size=len(ROWS), max_length=64,
                         dataset_num_proc=None, logging_steps=1)
    logging.getLogger("trl").setLevel(logging.ERROR)
    return trl.DPOTrainer(model=policy, ref_model=ref, args=args, processing_class=tok,
                          train_dataset=datasets.Dataset.from_list(ROWS))


def llmlab_loss(policy, ref, batch: dict[str, torch.Tensor], cfg: DPOConfig, p_chosen: torch.Tensor | None = None):
    """llmlab's side: log-probs of the collated batch, then the trainer's `preference_loss` under `cfg`
    (the loss it names on sums or per-token means, + rpo_alpha * the chosen responses' NLL);
    returns (loss, mean chosen reward, mean rejected reward), the rewards on summed log-probs as TRL's."""
    ids, attention, mask = batch["input_ids"], batch["attention_mask"], batch["completion_mask"].bool()
    logits = model_logits(policy, ids, attention)
    logp, n = sequence_logprobs(logits, ids, mask)
    with torch.no_grad():
        ref_logp, _ = sequence_logprobs(model_logits(ref, ids, attention), ids, mask)
    loss, stats = preference_loss(cfg, logp, n, ref_logp, logits=logits, batch={"ids": ids, "response_mask": mask},
                                  p_chosen=p_chosen)
    B = ids.shape[0] // 2
    if LOSSES[cfg.loss].mean_logprobs:  # its rewards are on the means it was given; TRL's on sums
        pc, pr, rc, rr = logp[:B], logp[B:], ref_logp[:B], ref_logp[B:]
        return loss, cfg.beta * (pc - rc).detach().mean(), cfg.beta * (pr - rr).detach().mean()
    return loss, stats["rewards/chosen"] / B, stats["rewards/rejected"] / B


def setup_models():
    tok = char_tokenizer()
    policy = tiny_llama(len(tok), seed=0).train()
    ref = copy.deepcopy(policy).eval()
    with torch.no_grad():  # the reference differs from the policy, so rewards and margins are not zero
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ours = copy.deepcopy(policy).train()  # llmlab's copy: TRL patches the forward of the model it is given
    return tok, policy, ref, ours


def compare(tmp_path: Path, trl_loss: str, ours_name: str, *, beta: float, rows: list[int] | None = None,
            rpo_alpha: float = 0.0, **kwargs) -> None:
    tok, policy, ref, ours = setup_models()
    trainer = trl_trainer(tmp_path, policy, copy.deepcopy(ref), tok, loss_type=trl_loss, beta=beta,
                          rpo_alpha=rpo_alpha, **kwargs)
    data = trainer.train_dataset
    groups = [[i] for i in rows] if rows is not None else [list(range(len(data)))]
    cfg = DPOConfig(model="unused", loss=ours_name, beta=beta, rpo_alpha=rpo_alpha, **kwargs)
    for group in groups:
        batch = trainer.data_collator([data[i] for i in group])
        policy.zero_grad(set_to_none=True)
        ours.zero_grad(set_to_none=True)
        trl_value = trainer.compute_loss(policy, batch)
        trl_value.backward()
        metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
        value, chosen, rejected = llmlab_loss(ours, ref, batch, cfg)
        value.backward()
        assert float(trl_value.detach()) > 0
        torch.testing.assert_close(value, trl_value.detach(), **LOSS_TOL)
        torch.testing.assert_close(chosen.mean().item(), metrics["rewards/chosen"], **LOSS_TOL)
        torch.testing.assert_close(rejected.mean().item(), metrics["rewards/rejected"], **LOSS_TOL)
        assert abs(metrics["rewards/chosen"]) > 1e-3  # the reference really differs
        theirs = dict(policy.named_parameters())
        for name, p in ours.named_parameters():
            assert p.grad is not None and theirs[name].grad is not None, name
            torch.testing.assert_close(p.grad, theirs[name].grad, **GRAD_TOL, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("name", ["sigmoid", "hinge", "ipo"])
def test_loss_rewards_and_gradients_match_trl(tmp_path: Path, name: str) -> None:
    compare(tmp_path, name, name, beta=0.1 if name != "ipo" else 0.5)


def test_rpo_sigmoid_plus_chosen_nll_matches_trl(tmp_path: Path) -> None:
    """RPO: DPO's sigmoid loss + alpha * mean NLL of the chosen tokens; TRL 1.16 writes it as
    loss_type=["sigmoid", "sft"], loss_weights=[1, alpha]. alpha = 2 so the NLL term's gradient is not
    lost in the tolerance next to DPO's."""
    compare(tmp_path, "sigmoid", "sigmoid", beta=0.1, rpo_alpha=2.0)


def test_robust_with_label_smoothing_matches_trl(tmp_path: Path) -> None:
    compare(tmp_path, "robust", "robust", beta=0.2, label_smoothing=0.2)


def test_cdpo_matches_trl_aot_on_single_pairs(tmp_path: Path) -> None:
    """TRL's AOT sorts the batch's policy and reference log-ratios separately; with one pair per batch that
    is the identity, and its loss is cDPO's -(1 - eps) log sigma(beta h) - eps log sigma(-beta h)."""
    compare(tmp_path, "aot", "cdpo", beta=0.2, label_smoothing=0.15, rows=[0, 1, 2, 3])


def test_soft_labels_are_trl_label_smoothing_per_pair(tmp_path: Path) -> None:
    """Soft labels p_chosen = (0.9, 1, 0.7, 0.55) on llmlab's sigmoid loss over the batch of four pairs, against
    TRL's cDPO (`aot` on one pair, as above) run pair by pair with label_smoothing = 1 - p_i: llmlab's mean
    loss is the mean of TRL's four losses and its gradient the mean of their gradients (each pair its own
    eps, which TRL's one global label_smoothing cannot do in one batch)."""
    p = [0.9, 1.0, 0.7, 0.55]
    tok, policy, ref, ours = setup_models()
    trainer = trl_trainer(tmp_path, policy, copy.deepcopy(ref), tok, loss_type="aot", beta=0.2)
    data = trainer.train_dataset
    policy.zero_grad(set_to_none=True)
    trl_total = torch.zeros(())
    for i, p_i in enumerate(p):
        trainer.label_smoothing = 1.0 - p_i
        value = trainer.compute_loss(policy, trainer.data_collator([data[i]])) / len(p)
        value.backward()
        trl_total += value.detach()
    batch = trainer.data_collator([data[i] for i in range(len(p))])
    ours.zero_grad(set_to_none=True)
    value, _, _ = llmlab_loss(ours, ref, batch, DPOConfig(model="unused", beta=0.2), p_chosen=torch.tensor(p))
    value.backward()
    with torch.no_grad():
        hard, _, _ = llmlab_loss(ours, ref, batch, DPOConfig(model="unused", beta=0.2))
    assert abs(float(hard) - float(value.detach())) > 1e-3  # the soft labels change the loss
    torch.testing.assert_close(value.detach(), trl_total, **LOSS_TOL)
    theirs = dict(policy.named_parameters())
    for name, param in ours.named_parameters():
        torch.testing.assert_close(param.grad, theirs[name].grad, **GRAD_TOL, msg=lambda m, n=name: f"{n}: {m}")


def test_llmlab_transformer_gives_the_same_loss(tmp_path: Path) -> None:
    """The same policy and reference imported into llmlab's own Transformer (model.hf_io.from_hf) give
    TRL's loss: log-prob extraction on llmlab models agrees too (forward only)."""
    from llmlab.model.hf_io import from_hf

    tok, policy, ref, _ = setup_models()
    policy.save_pretrained(tmp_path / "policy")
    ref.save_pretrained(tmp_path / "ref")
    ours, _ = from_hf(tmp_path / "policy")
    ours_ref, _ = from_hf(tmp_path / "ref")
    trainer = trl_trainer(tmp_path, policy, copy.deepcopy(ref), tok, loss_type="sigmoid", beta=0.1)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(ROWS))])
    with torch.no_grad():
        trl_value = trainer.compute_loss(policy, batch)
        value, _, _ = llmlab_loss(ours, ours_ref, batch, DPOConfig(model="unused", beta=0.1))
    torch.testing.assert_close(value, trl_value, **LOSS_TOL)
