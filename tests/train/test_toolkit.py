"""The shared training toolkit's pieces by hand: the batch plan, the unit scale, the cadence, the
metric window, the per-step seed, the NaN policy and the checkpointer's LoRA tensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmlab.errors import TrainingDiverged, UserError
from llmlab.train.batches import plan_batches, unit_scale
from llmlab.train.checkpoint import restore, save_checkpoint, trainable_state
from llmlab.train.config import TrainConfig
from llmlab.train.distributed import DistInfo
from llmlab.train.step import Window, begin_step, due, finish_step, step_seed


@pytest.mark.parametrize("world_size", [1, 2, 4, 8])
def test_ranks_partition_the_global_batch(world_size: int) -> None:
    """Step 3 of batch 8 is global examples 24..31; rank r takes the r-th contiguous slice."""
    plan = plan_batches(8, 0, world_size)
    seen: list[int] = []
    for rank in range(world_size):
        first = plan.first_example(3, rank)
        seen += range(first, first + plan.per_rank)
    assert seen == list(range(24, 32))


def test_micro_batches_cover_the_process_batch() -> None:
    plan = plan_batches(16, 2, 2)  # 8 per process, micro-batches of 2
    assert (plan.per_rank, plan.micro, plan.accum) == (8, 2, 4)
    assert list(plan.micro_batches()) == [(0, 2, False), (2, 4, False), (4, 6, False), (6, 8, True)]
    assert list(plan_batches(4, 0, 1).micro_batches()) == [(0, 4, True)]


@pytest.mark.parametrize(("batch", "micro", "world", "match"), [
    (6, 0, 4, "multiple of the number of processes"),
    (8, 3, 1, "must divide the per-process batch"),
    (8, 4, 4, "must divide the per-process batch"),  # 2 per process
])
def test_impossible_splits_are_one_line_errors(batch: int, micro: int, world: int, match: str) -> None:
    with pytest.raises(UserError, match=match):
        plan_batches(batch, micro, world)


def test_unit_scale_gives_the_global_mean() -> None:
    """Two processes, units with losses [1, 2, 3] and [4]: each adds sum * 2 / 4; DDP's average over the
    2 processes gives (6 * 2 / 4 + 4 * 2 / 4) / 2 = 2.5 = mean(1, 2, 3, 4)."""
    info = DistInfo(rank=0, world_size=2)
    scale = unit_scale(4, info)
    assert (6 * scale + 4 * scale) / 2 == 2.5
    assert unit_scale(0, info) == 0.0


def test_due_runs_every_k_steps_and_at_the_end() -> None:
    assert [d for d in range(1, 11) if due(d, 4, 10)] == [4, 8, 10]
    assert [d for d in range(1, 11) if due(d, 0, 10)] == [10]


def test_window_means_and_resets() -> None:
    counters: dict = {}
    w = Window(counters)
    w.add({"loss": 1.0, "accuracy": 0.5})
    assert counters["window"] == {"sums": {"loss": 1.0, "accuracy": 0.5}, "steps": 1}  # what a checkpoint saves
    w = Window(counters)  # as after a resume from that checkpoint
    w.add({"loss": 3.0, "accuracy": 1.0})
    assert w.pop() == {"loss": 2.0, "accuracy": 0.75}
    assert w.pop() == {}


def test_step_seed_and_lr_are_functions_of_the_step() -> None:
    tc = TrainConfig(max_steps=10, warmup_steps=2, lr=1.0, min_lr_ratio=0.0)
    info = DistInfo(rank=1, world_size=2)
    assert step_seed(0, 3, 1) != step_seed(0, 3, 0) != step_seed(0, 4, 0)
    lr = begin_step(tc, 0, info)
    a = torch.rand(3)
    assert begin_step(tc, 0, info) == lr == 0.5  # warm-up: (0 + 1) / 2
    assert torch.equal(torch.rand(3), a)


def test_the_runs_seed_changes_what_a_cpu_generator_draws() -> None:
    """mt19937 (torch's CPU generator) reads only a seed's low 32 bits: each train.seed must change them.
    Seed 0 keeps its old step seeds (step * 1024 + rank), so earlier seed-0 runs reproduce."""
    draws = {seed: torch.rand(4, generator=torch.Generator().manual_seed(step_seed(seed, 7, 0))) for seed in range(4)}
    assert all(not torch.equal(draws[a], draws[b]) for a in draws for b in draws if a < b)
    assert all(0 <= step_seed(seed, step, rank) < 2**32 for seed in (0, 1, 2**40) for step in (0, 10**6)
               for rank in (0, 7))
    assert [step_seed(0, step, rank) for step, rank in ((0, 0), (3, 1), (500, 2))] == [0, 3073, 512002]


def _poisoned_layer() -> tuple[torch.nn.Linear, torch.optim.Optimizer]:
    layer = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(layer.parameters(), lr=1.0)
    (layer(torch.ones(1, 2)).sum() * float("nan")).backward()
    return layer, opt


def test_nan_stop_names_the_last_good_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "checkpoints" / "step-0000004").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step-0000004" / "trainer_state.pt").write_bytes(b"")
    layer, opt = _poisoned_layer()
    before = layer.weight.detach().clone()
    with pytest.raises(TrainingDiverged, match=r"step 5 .*step-0000004"):
        finish_step(layer, opt, float("nan"), train=TrainConfig(on_nan="stop"), lr=0.1, done=5, counters={},
                    run_dir=tmp_path, log=lambda m: None)
    assert torch.equal(layer.weight, before)


def test_nan_skip_counts_and_leaves_the_weights(tmp_path: Path) -> None:
    layer, opt = _poisoned_layer()
    before = layer.weight.detach().clone()
    counters: dict = {"nan_skips": 0}
    logged: list[str] = []
    result = finish_step(layer, opt, float("nan"), train=TrainConfig(on_nan="skip"), lr=0.1, done=5,
                         counters=counters, run_dir=tmp_path, log=logged.append)
    assert not result.applied and counters["nan_skips"] == 1 and "update skipped" in logged[0]
    assert torch.equal(layer.weight, before)
    assert all(p.grad is None for p in layer.parameters())


def test_a_finite_loss_with_finite_grads_steps(tmp_path: Path) -> None:
    layer = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(layer.weight)
    opt = torch.optim.SGD(layer.parameters(), lr=123.0)
    layer(torch.ones(1, 2)).sum().backward()  # grad = [1, 1], norm sqrt(2)
    norm, applied = finish_step(layer, opt, 0.0, train=TrainConfig(grad_clip=0.0), lr=0.5, done=1, counters={},
                                run_dir=tmp_path, log=lambda m: None)
    assert applied and norm == pytest.approx(2 ** 0.5)
    torch.testing.assert_close(layer.weight, torch.tensor([[-0.5, -0.5]]))


def test_lora_tensors_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    """Only the trainable tensors go into trainer_state.pt; restore puts them and the optimizer back."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    model[0].requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.ones(2, 3)).sum().backward()
    opt.step()
    saved = trainable_state(model)
    assert set(saved) == {"1.weight", "1.bias"}
    path = save_checkpoint(tmp_path, 7, write_model=lambda d: d.mkdir(), optimizer_state=opt.state_dict(), cfg=TrainConfig(),
                           counters={"nan_skips": 2}, keep=2, trainable=saved)
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    fresh[0].load_state_dict(model[0].state_dict())
    fresh[0].requires_grad_(False)
    fresh_opt = torch.optim.AdamW([p for p in fresh.parameters() if p.requires_grad], lr=0.1)
    step, counters = restore(path, fresh, fresh_opt)
    assert (step, counters) == (7, {"nan_skips": 2})
    for a, b in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(fresh_opt.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
