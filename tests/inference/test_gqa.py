"""MHA -> GQA conversion: the pooling against float64 NumPy loops and hand cases, the grouping against
the model's own (query head h reads kv head h // group), whole-model identities, the quality
measures, the uptraining config, `llmlab convert gqa` end to end on a tiny pretrain run, and bad input.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import one_thread
from llmlab.cli import main
from llmlab.config import load_config, to_yaml
from llmlab.errors import UserError
from llmlab.inference.config import GQAConvertConfig, GQAEvalConfig
from llmlab.inference.convert import uptrain_config
from llmlab.inference.gqa import (
    convert_model,
    convert_state,
    first_head_of_group,
    kv_bytes_per_token,
    mean_pool_heads,
)
from llmlab.inference.quality import (
    gate_failures,
    greedy_agreement,
    held_out_prompts,
    markdown_table,
    top1_agreement,
)
from llmlab.model.config import ModelConfig
from llmlab.model.llama import Transformer
from llmlab.train.config import PretrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CFG = ModelConfig(vocab_size=61, d_model=64, n_layers=2, n_heads=8, max_seq_len=32, attention="naive")


def model(cfg: ModelConfig = CFG, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(cfg).eval()


def logits(m: Transformer, seed: int = 1) -> torch.Tensor:
    idx = torch.randint(0, m.cfg.vocab_size, (2, 13), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return m(idx).logits


# ---------------------------------------------------------------------- pooling one projection


def numpy_pool(w: np.ndarray, n_heads: int, groups: int, method: str) -> np.ndarray:
    """The reference, in float64 loops: group j is heads j*n/G .. (j+1)*n/G - 1, each D rows of w."""
    D, size = w.shape[0] // n_heads, n_heads // groups
    out = []
    for j in range(groups):
        heads = [w[h * D:(h + 1) * D] for h in range(j * size, (j + 1) * size)]
        out.append(sum(heads) / size if method == "mean" else heads[0])
    return np.concatenate(out)


@pytest.mark.parametrize("groups", [1, 2, 4, 8])
@pytest.mark.parametrize(("method", "fn"), [("mean", mean_pool_heads), ("first", first_head_of_group)])
def test_pooling_matches_numpy_loops(groups: int, method: str, fn) -> None:
    """A (8 heads x D 4, d_model 6) weight and its (32,) bias, float64: every G dividing 8."""
    rng = np.random.default_rng(groups)
    for shape in [(32, 6), (32,)]:
        w = rng.standard_normal(shape)
        got = fn(torch.from_numpy(w), 8, groups)
        assert got.shape == (groups * 4, *shape[1:])
        np.testing.assert_allclose(got.numpy(), numpy_pool(w, 8, groups, method), rtol=1e-12, atol=1e-15)


def test_pooling_hand_case() -> None:
    """4 heads of D = 1 (rows 1, 3, 5, 7), G = 2: groups {1, 3}, {5, 7}: mean [2, 6], first [1, 5]."""
    w = torch.tensor([[1.0], [3.0], [5.0], [7.0]])
    assert mean_pool_heads(w, 4, 2).flatten().tolist() == [2.0, 6.0]
    assert first_head_of_group(w, 4, 2).flatten().tolist() == [1.0, 5.0]


@pytest.mark.parametrize(("n_heads", "groups", "message"), [
    (8, 3, "n_kv_heads (3) must divide the model's 8 key/value heads"),
    (8, 16, "n_kv_heads must be between 1 and the model's 8 key/value heads, got 16"),
    (8, 0, "n_kv_heads must be between 1 and the model's 8 key/value heads, got 0"),
])
def test_impossible_groups_are_one_line(n_heads: int, groups: int, message: str) -> None:
    with pytest.raises(UserError) as e:
        mean_pool_heads(torch.zeros(n_heads * 2, 3), n_heads, groups)
    assert str(e.value) == message


# ---------------------------------------------------------------------- the whole model


def test_state_dict_layout_with_bias() -> None:
    """In the fused qkv (d_model q rows, then k, then v rows) only k and v change, pooled like the NumPy
    reference; the bias too (qkv_bias); every other tensor is the original object."""
    cfg = replace(CFG, qkv_bias=True)
    m = model(cfg)
    with torch.no_grad():
        for block in m.blocks:
            block.attn.qkv.bias.normal_()
    state = m.state_dict()
    new, new_cfg = convert_state(state, cfg, 2, method="mean")
    assert new_cfg == replace(cfg, n_kv_heads=2)
    for name, t in state.items():
        if ".attn.qkv." not in name:
            assert new[name] is t
            continue
        w = t.double().numpy()
        q, k, v = w[:64], w[64:128], w[128:]
        want = np.concatenate([q, numpy_pool(k, 8, 2, "mean"), numpy_pool(v, 8, 2, "mean")])
        np.testing.assert_allclose(new[name].double().numpy(), want, rtol=1e-6, atol=1e-7)
    converted = Transformer(new_cfg)
    converted.load_state_dict(new)  # the shapes are those of a model built with n_kv_heads = 2


def test_g_equal_to_heads_is_the_identity() -> None:
    m = model(replace(CFG, attention="sdpa"))
    for method in ("mean", "first"):
        c = convert_model(m, 8, method=method)
        assert c.cfg.kv_heads == 8
        assert torch.equal(logits(c), logits(m))


def with_shared_heads(m: Transformer, groups: int) -> Transformer:
    """`m` with the k and v heads of each group made equal (copies of the group's first): a GQA model
    written out as MHA. The weights are rounded to multiples of 2^-12 first (|w| < 1), so a sum of up
    to 8 of them is exact in float32 in any order, and so is its mean."""
    D, size = m.cfg.head_dim, m.cfg.n_heads // groups
    with torch.no_grad():
        for block in m.blocks:
            w = block.attn.qkv.weight
            w.copy_(torch.round(w * 2**12) / 2**12)
            for start in (m.cfg.d_model, m.cfg.d_model + m.cfg.n_heads * D):  # k rows, then v rows
                for h in range(m.cfg.n_heads):
                    first = h // size * size
                    w[start + h * D: start + (h + 1) * D] = w[start + first * D: start + (first + 1) * D]
    return m


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_mean_of_identical_heads_keeps_the_logits_exactly(groups: int) -> None:
    """When the heads of each group of consecutive heads are equal, both poolings give those heads back
    (the mean of 2, 4, 8 equal floats is exact), and the GQA model computes what the MHA one did:
    the backends give query head h the kv head h // (n_heads / G). Pooling interleaved heads (h % G,
    torch's `repeat`) would mix different heads here and change the logits."""
    m = with_shared_heads(model(), groups)
    want = logits(m)
    kv = m.blocks[0].attn.qkv.weight[64:72]  # the first group's shared k head
    for method in ("mean", "first"):
        c = convert_model(m, groups, method=method)
        assert torch.equal(c.blocks[0].attn.qkv.weight[64:72], kv)
        assert torch.equal(logits(c), want)
        assert c.blocks[0].attn.qkv.weight.shape == (64 + 2 * groups * 8, 64)


@pytest.mark.parametrize("backend", ["sdpa", "flash"])
def test_shared_heads_under_the_fused_backends(backend: str) -> None:
    """sdpa (`enable_gqa`) and flash (packed groups) group query heads as naive does: the GQA model
    computes the MHA one's logits, up to the different kernels' rounding."""
    m = with_shared_heads(model(replace(CFG, attention=backend)), 2)
    torch.testing.assert_close(logits(convert_model(m, 2)), logits(m), rtol=1e-5, atol=1e-5)


def test_mean_of_different_heads_changes_the_logits() -> None:
    """The contrast to the exact case: on random heads the pooled model is a different model."""
    m = model()
    assert not torch.allclose(logits(convert_model(m, 2)), logits(m), atol=1e-3)


def test_pooling_a_gqa_model_again_is_pooling_once() -> None:
    """Means of equal-sized groups compose: 8 -> 4 -> 2 heads is 8 -> 2 (a GQA checkpoint pools further)."""
    m = model()
    twice = convert_model(convert_model(m, 4), 2)
    once = convert_model(m, 2)
    torch.testing.assert_close(twice.blocks[1].attn.qkv.weight, once.blocks[1].attn.qkv.weight, rtol=1e-6,
                               atol=1e-7)
    with pytest.raises(UserError, match="between 1 and the model's 4 key/value heads, got 8"):
        convert_model(convert_model(m, 4), 8)


def test_converted_model_keeps_tied_head_and_dtype() -> None:
    m = model().to(torch.float64)
    c = convert_model(m, 2, method="first")
    assert c.head.weight is c.embed.weight and c.embed.weight.dtype == torch.float64 and not c.training


def test_kv_bytes_per_token_is_the_engines_cache() -> None:
    """2 (k, v) x 2 layers x G heads x 8 dims x 4 bytes, and what `new_cache` allocates per position."""
    for groups in (8, 2, 1):
        c = convert_model(model(), groups)
        cache = c.new_cache(3, 20)
        assert kv_bytes_per_token(c.cfg, 4) == 2 * 2 * groups * 8 * 4
        assert (cache.k.nbytes + cache.v.nbytes) / (3 * 20) == kv_bytes_per_token(c.cfg, 4)


# ---------------------------------------------------------------------- quality measures and the gate


def test_greedy_agreement_hand_cases() -> None:
    assert greedy_agreement([[1, 2, 3]], [[1, 5, 3]]) == pytest.approx(2 / 3)
    assert greedy_agreement([[1, 2], [4, 4]], [[1, 2], [4, 4]]) == 1.0
    assert greedy_agreement([[1, 2, 3, 4]], [[1, 2]]) == 0.5  # a position not reached differs
    assert held_out_prompts(list(range(10)), 3, 2) == [[0, 1], [2, 3], [4, 5]]
    assert top1_agreement(torch.tensor([[1, 2], [3, 4]]), torch.tensor([[1, 0], [3, 0]])) == 0.5


def test_gate_failures_and_table() -> None:
    """ppl 10 -> 12 is a ratio of 1.2: over 1.1, under 1.25; agreement 0.5 under 0.6."""
    original = {"model": "original", "n_kv_heads": 8, "val_loss": 2.3026, "val_ppl": 10.0, "val_bpb": 1.0,
                "top1_agreement": 1.0, "greedy_agreement": 1.0, "kv_bytes_per_token": 1024, "tokens_per_s_b1": 100.0}
    final = {**original, "model": "mean G=2", "n_kv_heads": 2, "val_ppl": 12.0, "top1_agreement": 0.75,
             "greedy_agreement": 0.5, "kv_bytes_per_token": 256}
    assert gate_failures(original, final, GQAEvalConfig()) == []
    failures = gate_failures(original, final, GQAEvalConfig(max_ppl_ratio=1.1, min_agreement=0.6,
                                                            min_top1_agreement=0.8))
    assert failures == ["perplexity 12.000 is 1.200x the original's 10.000 (eval.max_ppl_ratio=1.1)",
                        "greedy agreement 0.500 is below eval.min_agreement=0.6",
                        "top-1 agreement 0.750 is below eval.min_top1_agreement=0.8"]
    assert gate_failures(original, final, GQAEvalConfig(max_ppl_ratio=1.25, min_agreement=0.5,
                                                        min_top1_agreement=0.75)) == []
    table = markdown_table([original, final])
    assert "| mean G=2 | 2 | 2.3026 | 12.000 | 1.200 | 1.0000 | 0.750 | 0.500 | 256 | 0.25 | 100 |" in table


# ---------------------------------------------------------------------- the uptraining config


def test_uptrain_config_repeats_the_pretraining_recipe(tmp_path: Path) -> None:
    """A pretrain run of 400 steps (warmup 40): 5% is 20 steps with warmup 2; train.* and data.* given now
    win, except train.max_steps (the steps are uptrain_steps'); resume is cleared."""
    run_cfg = load_config(PretrainConfig, None, ["train.max_steps=400", "train.warmup_steps=40", "train.lr=3e-3",
                                                 "train.batch_size=12", "data.corpus_chars=50000",
                                                 "resume=old/ckpt"])
    (tmp_path / "config.yaml").write_text(to_yaml(run_cfg))
    cfg = GQAConvertConfig(model=str(tmp_path), n_kv_heads=2)
    steps, up = uptrain_config(cfg)
    assert steps == 20 and up.train.max_steps == 20 and up.train.warmup_steps == 2
    assert up.train.lr == 3e-3 and up.train.batch_size == 12 and up.data.corpus_chars == 50000 and up.resume == ""
    steps, up = uptrain_config(replace(cfg, uptrain_fraction=0.1),
                               ("train.lr=1e-4", "train.max_steps=7", "n_kv_heads=2"),
                               {"data.input": ["a.txt"]})
    assert steps == 40 and up.train.max_steps == 40 and up.train.lr == 1e-4 and up.data.input == ("a.txt",)
    assert uptrain_config(replace(cfg, uptrain_steps=0))[0] == 0


def test_uptrain_steps_are_required_without_a_pretrain_run(tmp_path: Path) -> None:
    cfg = GQAConvertConfig(model=str(tmp_path), n_kv_heads=2)
    with pytest.raises(UserError, match=r"not an `llmlab pretrain` run folder.*give uptrain_steps=N"):
        uptrain_config(cfg)
    steps, up = uptrain_config(replace(cfg, uptrain_steps=5, train=replace(cfg.train, lr=1e-4)))
    assert steps == 5 and up.train.max_steps == 5 and up.train.lr == 1e-4


# ---------------------------------------------------------------------- `llmlab convert gqa`

EVAL = ["eval.batches=1", "eval.prompts=3", "eval.prompt_tokens=6", "eval.new_tokens=6", "eval.speed_tokens=4",
        "eval.repeats=1", "eval.speed_batches=[1,2]"]


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> Path:
    """20 steps of a 4-head, 32-wide model on the built-in corpus (5% of it: 1 uptraining step)."""
    from llmlab.train.pretrain import pretrain

    root = tmp_path_factory.mktemp("gqa")
    cfg = load_config(PretrainConfig, None, [
        "model.d_model=32", "model.n_layers=2", "model.n_heads=4", "model.max_seq_len=64",
        f"data.tokenizer={tiny_tokenizer_dir}", f"data.cache_dir={root / 'cache'}", "data.corpus_chars=60000",
        "data.val_fraction=0.1", "train.seq_len=32", "train.batch_size=4", "train.max_steps=20",
        "train.warmup_steps=2", "train.eval_every=20", "train.eval_batches=1", "train.checkpoint_every=20",
        "train.log_every=10", "train.sample_tokens=0", "train.device=cpu"])
    with one_thread():
        return pretrain(cfg, out=root / "pt", quiet=True)


def test_convert_end_to_end(pretrain_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """G = 2 from a 4-head run: 1 uptraining step (5% of 20, warmup 0.1 -> 0) from the converted weights;
    three rows; the original's loss is its pretraining run's last eval (same batches, same code), its
    agreement 1; KV bytes halve; the final model in OUT is the uptrained one, with 2 kv heads."""
    from llmlab.model.io import load_model

    out = tmp_path / "gqa2"
    code = main(["convert", "gqa", "--model", str(pretrain_run), "--kv-heads", "2", "--out", str(out), "--quiet",
                 *EVAL])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "gqa.json").read_text())
    rows = report["rows"]
    assert [r["model"] for r in rows] == ["original", "mean G=2, 0 steps", "mean G=2, 1 steps"]
    assert report["uptrain_steps"] == 1 and report["gate"] == {"asked": False, "max_ppl_ratio": None,
                                                               "min_agreement": None, "min_top1_agreement": None,
                                                               "failures": []}
    pt_eval = [json.loads(line) for line in (pretrain_run / "metrics.jsonl").read_text().splitlines()
               if "val_loss" in line][-1]
    assert rows[0]["val_loss"] == pytest.approx(pt_eval["val_loss"], abs=1e-4)
    assert rows[0]["greedy_agreement"] == 1.0 and 0.0 <= rows[1]["greedy_agreement"] <= 1.0
    assert rows[0]["top1_agreement"] == 1.0 and 0.0 < rows[1]["top1_agreement"] < 1.0
    assert [r["kv_bytes_per_token"] for r in rows] == [2 * 2 * 4 * 8 * 4, 2 * 2 * 2 * 8 * 4, 2 * 2 * 2 * 8 * 4]
    assert all(r["tokens_per_s_b1"] > 0 and r["tokens_per_s_b2"] > 0 for r in rows)
    log = (out / "uptrain" / "log.txt").read_text()
    assert f"weights from {out / 'converted'}" in log
    final, _ = load_model(out)
    uptrained, _ = load_model(out / "uptrain")
    converted, _ = load_model(out / "converted")
    assert final.cfg.kv_heads == 2
    assert torch.equal(final.blocks[0].attn.qkv.weight, uptrained.blocks[0].attn.qkv.weight)
    assert not torch.equal(final.blocks[0].attn.qkv.weight, converted.blocks[0].attn.qkv.weight)
    assert "| mean G=2, 1 steps | 2 |" in (out / "gqa.md").read_text()


def test_missed_gate_fails_after_writing_the_table(tiny_model_dir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate's wiring, with the agreement forced to 0.25: exit 2, one line, the table written, the run
    marked failed. A model folder that is no pretrain run: no uptraining (--uptrain-steps 0), two rows,
    held out from the data.* given here."""
    import llmlab.inference.quality as quality

    monkeypatch.setattr(quality, "greedy_agreement", lambda reference, other: 0.25)
    out = tmp_path / "gated"
    code = main(["convert", "gqa", "--model", str(tiny_model_dir), "--kv-heads", "1", "--method", "first",
                 "--uptrain-steps", "0", "--out", str(out), "--quiet", "eval.min_agreement=0.9", *EVAL,
                 "data.corpus_chars=20000", "data.val_fraction=0.2", f"data.cache_dir={tmp_path / 'cache'}",
                 "train.seq_len=32", "train.batch_size=2", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == (f"error: GQA quality gate missed: greedy agreement 0.250 is below eval.min_agreement=0.9 "
                   f"(table: {out / 'gqa.md'})")
    report = json.loads((out / "gqa.json").read_text())
    assert [r["model"] for r in report["rows"]] == ["original", "first G=1, 0 steps"]
    assert json.loads((out / "status.json").read_text())["status"] == "failed"


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "{missing}", "--kv-heads", "2"], "error: {missing}: no such model folder"),
    (["--model", "{empty}", "--kv-heads", "2"], "error: {empty}: not a model folder (no model.yaml, no HF config.json)"),
    (["--model", "{model}", "--kv-heads", "3"], "error: n_kv_heads (3) must divide the model's 4 key/value heads"),
    (["--model", "{model}", "--kv-heads", "8"],
     "error: n_kv_heads must be between 1 and the model's 4 key/value heads, got 8"),
    (["--model", "{model}", "--kv-heads", "-1"], "error: n_kv_heads must be at least 1, got -1"),
    (["--model", "{model}"], "error: n_kv_heads is required (--kv-heads G: key/value heads after conversion)"),
    (["--model", "{model}", "--kv-heads", "2"],
     "error: --model {model}: not an `llmlab pretrain` run folder, so its pretraining steps are unknown; give "
     "uptrain_steps=N (0: no uptraining)"),
    (["--model", "{model}", "--kv-heads", "2", "--method", "last"], "error: config key 'method' expects one of"),
    (["--model", "{model}", "--kv-heads", "2", "data.tokenizer=x"],
     "error: data.tokenizer cannot be set: the model's own tokenizer is used"),
])
def test_bad_input_is_one_line_and_no_run_folder(args: list[str], message: str, tmp_path: Path,
                                                 tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    paths = {"missing": str(tmp_path / "missing"), "empty": str(tmp_path / "empty"), "model": str(tiny_model_dir)}
    out = tmp_path / "out"
    code = main(["convert", "gqa", *(a.format(**paths) for a in args), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(message.format(**paths)) and "\n" not in err
    assert not out.exists()
