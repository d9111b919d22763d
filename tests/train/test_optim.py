"""param_groups (which tensors decay) and clip_and_step (clip, step, poisoned steps), by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from llmlab.model.config import ModelConfig
from llmlab.model.llama import Transformer
from llmlab.train.optim import build_adamw, clip_and_step, param_groups

# Every parameter of a one-block model, by name (named_parameters lists a tied head once, as embed).
MATRICES = {"blocks.0.attn.qkv.weight", "blocks.0.attn.o.weight", "blocks.0.mlp.gate_up.weight",
            "blocks.0.mlp.down.weight"}
VECTORS = {"blocks.0.attn_norm.weight", "blocks.0.mlp_norm.weight", "norm.weight"}


def tiny_model(**kw) -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig(vocab_size=16, d_model=8, n_layers=1, n_heads=2, max_seq_len=8, **kw))


def group_names(model: nn.Module, groups: list[dict]) -> tuple[set[str], set[str]]:
    name = {id(p): n for n, p in model.named_parameters()}
    return {name[id(p)] for p in groups[0]["params"]}, {name[id(p)] for p in groups[1]["params"]}


def test_tied_model_decays_exactly_the_block_matrices() -> None:
    """Tied: the head is the embedding's tensor, so it stays undecayed with it, and appears once."""
    model = tiny_model(tie_embeddings=True)
    groups = param_groups(model, 0.1)
    decay, no_decay = group_names(model, groups)
    assert decay == MATRICES
    assert no_decay == VECTORS | {"embed.weight"}
    assert (groups[0]["weight_decay"], groups[1]["weight_decay"]) == (0.1, 0.0)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))  # each tensor once


def test_untied_model_also_decays_the_output_head() -> None:
    """Untied: the head is an ordinary matrix (a Linear, not an Embedding) and decays; the embedding does not."""
    model = tiny_model(tie_embeddings=False)
    decay, no_decay = group_names(model, param_groups(model, 0.1))
    assert decay == MATRICES | {"head.weight"}
    assert no_decay == VECTORS | {"embed.weight"}


def test_biases_and_frozen_tensors() -> None:
    """qkv biases are vectors: no decay. A frozen tensor is in no group."""
    model = tiny_model(qkv_bias=True)
    model.blocks[0].attn.o.weight.requires_grad_(False)
    decay, no_decay = group_names(model, param_groups(model, 0.1))
    assert decay == MATRICES - {"blocks.0.attn.o.weight"}
    assert no_decay == VECTORS | {"embed.weight", "blocks.0.attn.qkv.bias"}


def test_build_adamw_on_cpu() -> None:
    model = tiny_model()
    opt = build_adamw(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert opt.param_groups[0]["betas"] == (0.9, 0.95)
    assert not opt.param_groups[0]["fused"]


def linear_with_grads(weight_grad: list[list[float]], bias_grad: list[float]) -> nn.Linear:
    torch.manual_seed(0)
    layer = nn.Linear(3, 2)
    layer.weight.grad = torch.tensor(weight_grad)
    layer.bias.grad = torch.tensor(bias_grad)
    return layer


def test_clip_returns_the_norm_before_clipping_and_steps_with_the_clipped_grads() -> None:
    """grads: weight [[3,0,0],[0,0,0]], bias [0,4] -> norm sqrt(9 + 16) = 5. With grad_clip 1 they are
    scaled by 1 / 5 (clip_grad_norm_ uses max_norm / (norm + 1e-6)); SGD at lr 0.1 then moves
    weight[0,0] by -0.1 * 3 / 5 = -0.06 and bias[1] by -0.1 * 4 / 5 = -0.08, nothing else."""
    layer = linear_with_grads([[3.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [0.0, 4.0])
    w0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    opt = torch.optim.SGD(layer.parameters(), lr=123.0)  # clip_and_step sets the lr it is given
    norm = clip_and_step(layer, opt, lr=0.1, grad_clip=1.0)
    assert norm == pytest.approx(5.0)
    expected_w = w0.clone()
    expected_w[0, 0] -= 0.06
    torch.testing.assert_close(layer.weight.detach(), expected_w, rtol=0, atol=1e-6)
    torch.testing.assert_close(layer.bias.detach(), b0 - torch.tensor([0.0, 0.08]), rtol=0, atol=1e-6)
    assert opt.param_groups[0]["lr"] == 0.1
    assert layer.weight.grad is None and layer.bias.grad is None


def test_no_clipping_below_the_threshold_or_when_disabled() -> None:
    """norm 5 with grad_clip 10, or grad_clip 0: the step uses the raw grads (-0.1 * 3 = -0.3)."""
    for clip in (10.0, 0.0):
        layer = linear_with_grads([[3.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [0.0, 4.0])
        w0 = layer.weight.detach().clone()
        norm = clip_and_step(layer, torch.optim.SGD(layer.parameters(), lr=1.0), lr=0.1, grad_clip=clip)
        assert norm == pytest.approx(5.0)
        assert float(layer.weight.detach()[0, 0] - w0[0, 0]) == pytest.approx(-0.3, abs=1e-6)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("grad_clip", [1.0, 0.0])
def test_non_finite_grads_change_nothing_and_are_zeroed(bad: float, grad_clip: float) -> None:
    """A poisoned gradient: the returned norm is not finite, no parameter moves, no AdamW state
    is created, and the grads are cleared so the next step starts clean."""
    layer = linear_with_grads([[1.0, bad, 0.0], [0.0, 0.0, 0.0]], [0.0, 1.0])
    before = [p.detach().clone() for p in layer.parameters()]
    opt = build_adamw(layer, lr=0.1, weight_decay=0.1, betas=(0.9, 0.95))
    norm = clip_and_step(layer, opt, lr=0.1, grad_clip=grad_clip)
    assert not math.isfinite(norm)
    for p, p0 in zip(layer.parameters(), before, strict=True):
        assert torch.equal(p.detach(), p0)
        assert p.grad is None
    assert not opt.state  # AdamW never stepped: no moments, no step count


def test_clip_norm_of_a_real_model_equals_the_norm_of_all_grads() -> None:
    """Global 2-norm over every parameter's grad (the tied tensor counted once), computed in float64."""
    model = tiny_model()
    x = torch.randint(0, 16, (2, 8))
    nn.functional.cross_entropy(model(x).logits.flatten(0, 1), x.flatten()).backward()
    expected = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in model.parameters()))
    opt = build_adamw(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    assert clip_and_step(model, opt, lr=1e-3, grad_clip=1.0) == pytest.approx(expected, rel=1e-5)
