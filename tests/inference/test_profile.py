"""`llmlab profile`: ops attributed to the model part they ran in, shares that partition the time, a valid
trace, and one-line errors for bad input."""

import json

import pytest
import torch

import llmlab.model.generate as generate_module
from llmlab.cli import main
from llmlab.inference.profile import (
    PARTS,
    PHASE_LABEL,
    OpTime,
    attribute,
    labelled_parts,
    part_table,
    profile_generation,
    random_prompts,
    top_ops,
)
from llmlab.model.config import ModelConfig
from llmlab.model.generate import Engine, SamplingConfig
from llmlab.model.llama import Transformer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def profiled():
    """A tiny GQA model (sdpa attention) profiled over a prefill of 2 prompts and 3 decode steps."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48,
                                    max_seq_len=32)).eval()
    engine = Engine(model)
    prof = profile_generation(engine, random_prompts(2, 5, 64, seed=0), SamplingConfig(max_new_tokens=4), seed=0)
    return prof, attribute(prof.events())


def parts_of(rows, fragment):
    return {r.part for r in rows if fragment in r.name}


def test_ops_are_attributed_to_their_part(profiled):
    """Each op lands in the part whose forward called it: the attention kernel under attention, SiLU under the
    MLP, the norm kernel under norm, the embedding lookup under embedding/head, the multinomial draw (temperature
    1) under sampling. Matmuls run in several parts, each under its own."""
    _, rows = profiled
    assert parts_of(rows, "scaled_dot_product") == {"attention"}
    assert parts_of(rows, "aten::silu") == {"mlp"}
    assert parts_of(rows, "rms_norm") == {"norm"}
    assert parts_of(rows, "aten::embedding") == {"embedding/head"}
    assert parts_of(rows, "aten::multinomial") == {"sampling"}
    assert {"attention", "mlp", "embedding/head"} <= parts_of(rows, "aten::linear")
    assert {r.phase for r in rows} == {"prefill", "decode"}
    # 2 layers x (1 prefill + 3 decode steps) attention kernels, half of them in the prefill
    sdpa = [r for r in rows if r.name == "aten::scaled_dot_product_attention"]
    assert len(sdpa) == 8 and sum(r.phase == "prefill" for r in sdpa) == 2


def test_self_times_partition_the_profiled_time(profiled):
    """Summed over every attributed row, self CPU times equal the total time of the phase scopes (the roots);
    the part shares add up to 1."""
    prof, rows = profiled
    roots = sum(e.cpu_time_total for e in prof.events() if e.name.startswith(PHASE_LABEL))
    assert sum(r.cpu_us for r in rows) == pytest.approx(roots, rel=1e-6)
    table = part_table(rows)
    assert [r["part"] for r in table] == list(PARTS)
    assert sum(r["cpu_share"] for r in table) == pytest.approx(1.0, abs=1e-9)
    assert all(r["device_share"] == 0 for r in table)  # CPU run: no device time


def test_part_table_and_top_ops_by_hand():
    """attention: 3 + 1 = 4 us, mlp 5 us, python 2 us -> total 11; shares 4/11, 5/11, 2/11. The top op is
    aten::mm in the mlp (5 us), then aten::mm in attention (3 us); the python row is not an op."""
    rows = [OpTime("aten::mm", "prefill", "attention", 3.0, 0.0), OpTime("aten::add", "decode", "attention", 1.0, 0.0),
            OpTime("aten::mm", "decode", "mlp", 5.0, 0.0), OpTime("llmlab.part:mlp", "decode", "python", 2.0, 0.0)]
    table = {r["part"]: r for r in part_table(rows)}
    assert table["attention"]["cpu_share"] == pytest.approx(4 / 11)
    assert table["attention"]["prefill_ms"] == pytest.approx(0.003) and table["attention"]["decode_ms"] == 0.001
    assert table["mlp"]["cpu_share"] == pytest.approx(5 / 11) and table["python"]["cpu_share"] == pytest.approx(2 / 11)
    assert table["norm"]["cpu_share"] == 0
    top = top_ops(rows, 2)
    assert [(r["op"], r["part"]) for r in top] == [("aten::mm", "mlp"), ("aten::mm", "attention")]
    assert top[0]["cpu_share"] == pytest.approx(5 / 11) and top[0]["calls"] == 1


def test_labels_leave_nothing_behind_and_change_no_output():
    """Greedy tokens are the same with and without the labels; afterwards no hook is left and the Engine's
    sampler is its own again."""
    torch.manual_seed(1)
    model = Transformer(ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, d_ff=48, max_seq_len=32)).eval()
    prompts, greedy = random_prompts(2, 4, 64, seed=1), SamplingConfig(max_new_tokens=5, temperature=0)
    sampler = generate_module._next_tokens
    plain = Engine(model).generate(prompts, greedy)
    with labelled_parts(model):
        assert generate_module._next_tokens is not sampler
        labelled = Engine(model).generate(prompts, greedy)
    assert labelled == plain
    assert generate_module._next_tokens is sampler
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("folder", ["tiny_model_dir", "tiny_hf_dir"])
def test_cli_writes_tables_json_and_a_trace(folder, request, tmp_path, capsys):
    """An llmlab model folder and the same model as an HF folder: tables on stdout, profile.md the same, a trace
    that is JSON with the labelled scopes among its traceEvents."""
    out = tmp_path / "prof"
    code = main(["profile", "--model", str(request.getfixturevalue(folder)), "--batch", "2", "--prompt-len", "6", "--new-tokens",
                 "3", "--out", str(out), "--quiet"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "| part | prefill ms |" in stdout and "| op | part |" in stdout and "decode:" in stdout
    trace = json.loads((out / "trace.json").read_text())
    names = {e.get("name") for e in trace["traceEvents"]}
    assert {"llmlab.phase:prefill", "llmlab.phase:decode", "llmlab.part:attention"} <= names
    result = json.loads((out / "profile.json").read_text())
    assert sum(p["cpu_share"] for p in result["parts"]) == pytest.approx(1.0, abs=1e-9)
    assert result["timing"]["decode_steps"] == 2 and result["memory"]["bytes"] > 0
    assert result["timing"]["forward_decode_ms_per_step"] > 0  # the profiled (labelled) step is timed too
    # 2 (K, V) * 2 layers * 2 rows * 4 kv heads * (6 + 3) positions * head_dim 8 * 4 bytes (fp32)
    assert result["kv_cache_bytes"] == 2 * 2 * 2 * 4 * 9 * 8 * 4
    assert (out / "profile.md").read_text() == stdout


@pytest.mark.parametrize(("argv", "phrase"), [
    (["--model", "{tmp}"], "not a model folder"),
    (["--model", "{tmp}/missing"], "no such model folder"),
    (["--model", "{model}", "--new-tokens", "1"], "new_tokens must be at least 2"),
    (["--model", "{model}", "--prompt-len", "120", "--new-tokens", "9"], "longer than the model's max_seq_len 128"),
    ([], "model is required"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_model_dir, tmp_path, capsys, argv, phrase):
    argv = [a.format(tmp=tmp_path, model=tiny_model_dir) for a in argv]
    assert main(["profile", *argv, "--out", str(tmp_path / "run")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and err.startswith("error:") and phrase in err, err
