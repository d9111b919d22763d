"""The glue between DPOConfig and the losses (llmlab.align.preference) and the loss table it reads.

The bug these guard against: `--loss cdpo` (or robust) with default settings trained plain sigmoid DPO,
because the config's label_smoothing defaulted to 0, where both losses reduce to sigmoid.

Hand-worked case, one pair, beta 1, h = (pc - pr) - (rc - rr) = (-1 - -2) - (-1.5 - -1.5) = 1, and
L(x) = -log sigma(x), so that -log sigma(-x) = L(x) + x:

    sigmoid      L(1)                                    = log(1 + e^-1)           = 0.313262
    cdpo  0.1    0.9 L(1) + 0.1 (L(1) + 1)  = L(1) + 0.1 = 0.413262
    robust 0.1   (0.9 L(1) - 0.1 (L(1) + 1)) / 0.8 = L(1) - 0.1 / 0.8 = 0.313262 - 0.125 = 0.188262
"""

from __future__ import annotations

import math
import typing

import pytest
import torch

from llmlab.align.config import DPOConfig, LossName
from llmlab.align.dpo import DEFAULT_LABEL_SMOOTHING, LOSSES, soft_label_loss
from llmlab.align.preference import loss_kwargs, nll_weight_of, preference_loss, require_soft_labels
from llmlab.config import load_config, to_yaml
from llmlab.errors import ConfigError, UserError

SIGMOID_1 = math.log1p(math.exp(-1.0))  # L(1) = 0.313262


def cfg(**fields) -> DPOConfig:
    return DPOConfig(model="x", **fields)


def pair() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sums (2,), counts (2,), ref (2,)): the hand-worked pair, chosen first."""
    sums = torch.tensor([-1.0, -2.0], dtype=torch.float64)
    return sums, torch.ones(2), torch.tensor([-1.5, -1.5], dtype=torch.float64)


def test_loss_names_in_config_are_the_table() -> None:
    """`--loss` choices (config's Literal) and the table name the same losses, in the same order."""
    assert typing.get_args(LossName) == tuple(LOSSES)


@pytest.mark.parametrize("name", ["cdpo", "robust"])
def test_label_smoothing_resolves_to_the_loss_default(name: str) -> None:
    assert DEFAULT_LABEL_SMOOTHING == 0.1
    assert cfg(loss=name).label_smoothing == 0.1
    assert cfg(loss=name, label_smoothing=0.25).label_smoothing == 0.25
    assert cfg().label_smoothing is None  # sigmoid takes none


@pytest.mark.parametrize(("name", "expected"), [("sigmoid", SIGMOID_1), ("cdpo", SIGMOID_1 + 0.1),
                                                ("robust", SIGMOID_1 - 0.125)])
def test_default_config_losses_on_the_hand_worked_pair(name: str, expected: float) -> None:
    """With nothing but loss= set, cdpo and robust differ from sigmoid (see the module docstring)."""
    loss, stats = preference_loss(cfg(loss=name, beta=1.0), *pair())
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert stats["margin"].item() == pytest.approx(1.0)  # beta (pc - rc) - beta (pr - rr) = 0.5 + 0.5


def test_label_smoothing_zero_with_cdpo_or_robust_is_refused() -> None:
    for name in ("cdpo", "robust"):
        with pytest.raises(ConfigError, match="is plain sigmoid DPO") as e:
            load_config(DPOConfig, None, ["model=x", f"loss={name}", "label_smoothing=0"])
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", [n for n, s in LOSSES.items() if "label_smoothing" not in s.params])
def test_label_smoothing_with_another_loss_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=f"applies to the cdpo and robust losses, not to {name}") as e:
        load_config(DPOConfig, None, ["model=x", f"loss={name}", "label_smoothing=0.1"])
    assert "\n" not in str(e.value)


def test_out_of_range_label_smoothing_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"must be in \(0, 0.5\)"):
        cfg(loss="robust", label_smoothing=0.5)


def test_configs_saved_with_label_smoothing_zero_still_load() -> None:
    """Runs saved before label_smoothing could be unset wrote 0.0 with every loss; for the losses that
    take none it still means none (resume must load them)."""
    assert cfg(loss="sigmoid", label_smoothing=0.0).label_smoothing == 0.0


@pytest.mark.parametrize("name", ["sigmoid", "cdpo"])
def test_saved_config_round_trips(name: str, tmp_path) -> None:
    """The saved config holds the resolved value (cdpo: 0.1, sigmoid: null) and reloads to the same."""
    c = cfg(loss=name)
    (tmp_path / "config.yaml").write_text(to_yaml(c))
    assert load_config(DPOConfig, tmp_path / "config.yaml") == c


def test_loss_kwargs_come_from_the_table() -> None:
    assert loss_kwargs(cfg()) == {"beta": 0.1}
    assert loss_kwargs(cfg(loss="cdpo")) == {"beta": 0.1, "label_smoothing": 0.1}
    assert loss_kwargs(cfg(loss="simpo", simpo_gamma=0.3)) == {"beta": 0.1, "gamma": 0.3}
    assert loss_kwargs(cfg(loss="kto", kto_desirable_weight=2.0)) == {
        "beta": 0.1, "desirable_weight": 2.0, "undesirable_weight": 1.0}


def test_every_spec_names_real_config_fields_and_keywords() -> None:
    import dataclasses
    import inspect

    fields = {f.name for f in dataclasses.fields(DPOConfig)}
    for name, spec in LOSSES.items():
        keywords = inspect.signature(spec.fn).parameters
        assert set(spec.params) <= fields and spec.nll_weight_field in fields, name
        assert all(k in keywords for k in spec.params.values()), name
        assert set(spec.defaults) <= set(spec.params), name
        assert ("kl" in keywords) == spec.takes_kl, name


def test_nll_weight_of() -> None:
    assert nll_weight_of(cfg()) == 0.0
    assert nll_weight_of(cfg(rpo_alpha=0.5)) == 0.5
    assert nll_weight_of(cfg(loss="orpo")) == 1.0
    assert nll_weight_of(cfg(loss="orpo", orpo_sft_weight=0.0)) == 0.0
    with pytest.raises(ConfigError, match="orpo has its own NLL term: set orpo_sft_weight"):
        cfg(loss="orpo", rpo_alpha=1.0)


def random_batch(B: int = 3, T: int = 7, V: int = 11, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Logits and ids of 2B sequences whose last 4 tokens are the response, and their log-probs."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2 * B, T, V, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, V, (2 * B, T), generator=g)
    mask = torch.zeros(2 * B, T, dtype=torch.bool)
    mask[:, -4:] = True
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]  # (2B, T - 1)
    sums = (logp * mask[:, 1:]).sum(-1)
    ref = sums.detach() + 0.3 * torch.randn(2 * B, generator=g, dtype=torch.float64)
    return {"logits": logits, "ids": ids, "response_mask": mask, "sums": sums,
            "counts": mask[:, 1:].sum(-1), "ref": ref}


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_runs_through_the_glue_with_its_defaults(name: str) -> None:
    """Each loss, reached by name with a default config (ORPO: with its NLL term; KTO: with a KL estimate),
    gives a finite loss whose gradient reaches the logits, and the logged metrics."""
    spec = LOSSES[name]
    b = random_batch()
    ref = None if spec.reference_free else b["ref"]
    kl = torch.tensor(0.2, dtype=torch.float64) if spec.takes_kl else None
    loss, stats = preference_loss(cfg(loss=name), b["sums"], b["counts"], ref, logits=b["logits"],
                                  batch={"ids": b["ids"], "response_mask": b["response_mask"]}, kl=kl)
    assert loss.dim() == 0 and torch.isfinite(loss)
    (grad,) = torch.autograd.grad(loss, b["logits"])
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert {"rewards/chosen", "rewards/rejected", "margin", "accuracy", "logps/chosen", "logps/rejected"} <= set(stats)
    assert ("nll" in stats) == (name == "orpo") and ("kl" in stats) == (name == "kto")


def test_glue_passes_mean_logprobs_and_rpo_term() -> None:
    """IPO gets per-token means of both policy and reference; rpo_alpha adds alpha * mean chosen NLL."""
    b = random_batch()
    B, n = 3, b["counts"].double()
    sums, ref = b["sums"], b["ref"]
    loss, _ = preference_loss(cfg(loss="ipo", beta=0.5), sums, b["counts"], ref)
    expected, _, _ = LOSSES["ipo"].fn(sums[:B] / n[:B], sums[B:] / n[B:], ref[:B] / n[:B], ref[B:] / n[B:], beta=0.5)
    torch.testing.assert_close(loss, expected.mean())
    batch = {"ids": b["ids"], "response_mask": b["response_mask"]}
    with_nll, stats = preference_loss(cfg(rpo_alpha=2.0), sums, b["counts"], ref, logits=b["logits"], batch=batch)
    without, _ = preference_loss(cfg(), sums, b["counts"], ref)
    torch.testing.assert_close(with_nll, without + 2.0 * stats["nll"] / B)
    with pytest.raises(ValueError, match="needs the logits"):
        preference_loss(cfg(rpo_alpha=2.0), sums, b["counts"], ref)


# ---------------------------------------------------------------------- soft labels (p_chosen)


def test_soft_labels_through_the_glue_by_hand() -> None:
    """The hand-worked pair with p_chosen 0.9: sigmoid is cDPO with eps 0.1, L(1) + 0.1 (the module
    docstring's cdpo line); cdpo's own eps 0.1 composes to eps' = 0.1 * 0.9 + 0.9 * 0.1 = 0.18, L(1) + 0.18."""
    p = torch.tensor([0.9], dtype=torch.float64)
    sigmoid, _ = preference_loss(cfg(beta=1.0), *pair(), p_chosen=p)
    cdpo, _ = preference_loss(cfg(loss="cdpo", beta=1.0), *pair(), p_chosen=p)
    assert sigmoid.item() == pytest.approx(SIGMOID_1 + 0.1, abs=1e-12)
    assert cdpo.item() == pytest.approx(SIGMOID_1 + 0.18, abs=1e-12)


def test_soft_ipo_through_the_glue_uses_the_means() -> None:
    """IPO's soft loss is soft_label_loss on the per-token means, as the hard one."""
    b = random_batch()
    B, n = 3, b["counts"].double()
    sums, ref, p = b["sums"], b["ref"], torch.tensor([0.6, 1.0, 0.8])
    loss, _ = preference_loss(cfg(loss="ipo", beta=0.5), sums, b["counts"], ref, p_chosen=p)
    expected, _, _ = soft_label_loss(LOSSES["ipo"].fn, p.double(), sums[:B] / n[:B], sums[B:] / n[B:],
                                     ref[:B] / n[:B], ref[B:] / n[B:], beta=0.5)
    torch.testing.assert_close(loss, expected.mean())


@pytest.mark.parametrize("name", list(LOSSES))
def test_p_chosen_of_one_is_the_hard_loss_exactly(name: str) -> None:
    """Rows without a soft label arrive as p_chosen = 1: every loss, refused ones included, is unchanged."""
    spec = LOSSES[name]
    b = random_batch()
    ref = None if spec.reference_free else b["ref"]
    batch = {"ids": b["ids"], "response_mask": b["response_mask"]}
    kl = torch.tensor(0.2, dtype=torch.float64) if spec.takes_kl else None
    hard, _ = preference_loss(cfg(loss=name), b["sums"], b["counts"], ref, logits=b["logits"], batch=batch, kl=kl)
    ones, _ = preference_loss(cfg(loss=name), b["sums"], b["counts"], ref, logits=b["logits"], batch=batch, kl=kl,
                              p_chosen=torch.ones(3))
    assert torch.equal(hard, ones)


@pytest.mark.parametrize(("fields", "phrase"), [
    ({"loss": "robust"}, "which loss robust does not take"),
    ({"loss": "kto"}, "which loss kto does not take"),
    ({"loss": "orpo"}, "orpo_sft_weight=1.0 would train on every chosen response"),
    ({"rpo_alpha": 0.5}, "rpo_alpha=0.5 would train on every chosen response"),
])
def test_soft_labels_are_refused_where_they_cannot_enter(fields: dict, phrase: str) -> None:
    """A loss that takes no soft labels is never silently trained on the hard ones: a one-line UserError
    that says how to go on (data.soft_labels=false)."""
    b = random_batch()
    spec = LOSSES[fields.get("loss", "sigmoid")]
    ref = None if spec.reference_free else b["ref"]
    kl = torch.tensor(0.2, dtype=torch.float64) if spec.takes_kl else None
    with pytest.raises(UserError, match=phrase) as e:
        preference_loss(cfg(**fields), b["sums"], b["counts"], ref, logits=b["logits"], kl=kl,
                        batch={"ids": b["ids"], "response_mask": b["response_mask"]},
                        p_chosen=torch.tensor([1.0, 0.7, 1.0]))
    assert "\n" not in str(e.value) and "data.soft_labels=false" in str(e.value)
    require_soft_labels(cfg(loss="orpo", orpo_sft_weight=0.0))  # ORPO's odds-ratio term alone takes them
