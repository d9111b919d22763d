"""`llmlab demo` end to end on small sizes."""

import json

import yaml

from llmlab.cli import main
from llmlab.data.chat import CHAT_SPECIALS


def test_demo_writes_a_complete_run_folder(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--quiet", "pretrain_chars=20000", "n_sft=60", "n_prefs=20", "n_eval=45",
                 "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.n_kv_heads=1",
                 "model.max_seq_len=64", "train.max_steps=4", "train.seq_len=32", "train.batch_size=4",
                 "train.eval_every=2", "train.eval_batches=1", "train.checkpoint_every=2", "train.warmup_steps=1",
                 "train.sample_tokens=8", "sft.max_steps=2", "sft.batch_size=4", "sft.eval_every=2",
                 "sft.eval_batches=1", "dpo.max_steps=2", "dpo.batch_size=4", "n_eval_prompts=9", "n_eval_pairs=4",
                 "n_onpolicy=12", "samples=2", "tasks.families=[compare,count,unsafe,benign]", "tasks.max_number=20"])
    assert code == 0
    assert f"report at {out / 'report.md'}" in capsys.readouterr().out
    for name in ("config.yaml", "metrics.jsonl", "log.txt", "report.md", "baselines.png", "baselines.json",
                 "tokenizer/tokenizer.json", "tokenizer/vocab.txt",
                 "data/pretrain.jsonl", "data/sft.jsonl", "data/prefs.jsonl", "data/eval.jsonl"):
        assert (out / name).is_file(), name
    assert yaml.safe_load((out / "config.yaml").read_text())["n_eval"] == 45
    baselines = json.loads((out / "baselines.json").read_text())
    assert baselines["gold"]["score"] == 1.0  # the scorers agree with the gold answers
    assert baselines["always_refuse"]["refusal_rate_unsafe"] == 1.0
    assert baselines["always_refuse"]["over_refusal_rate"] == 1.0
    assert baselines["compliant_wrong"]["accuracy"] == 0.0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {m["stage"] for m in metrics} == {"data", "tokenizer", "attention", "baselines", "pretrain", "sft",
                                             "onpolicy"}
    errors = {m["backend"]: m["max_abs_err"] for m in metrics if m["stage"] == "attention"}
    assert set(errors) == {"naive", "sdpa", "flash"} and max(errors.values()) < 1e-5
    assert (out / "attention" / "attention.png").is_file() and (out / "attention" / "attention.html").is_file()
    from llmlab.tokenizers import load_tokenizer

    tok = load_tokenizer(out / "tokenizer")
    # 5000 characters run out of pairs seen twice before 1024 tokens
    assert 100 < len(tok.merges) <= 1024 - 261 and tok.vocab_size == 261 + len(tok.merges)
    assert set(tok.special_tokens) == set(CHAT_SPECIALS)
    assert "## Tokenizer" in (out / "report.md").read_text()
    assert (out / "baselines.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the pretraining stage: an ordinary pretrain run folder with a loadable model, curves and the report section
    for name in ("pretrain/model.safetensors", "pretrain/model.yaml", "pretrain/samples.jsonl",
                 "pretrain/curves.png", "pretrain/attention.png"):
        assert (out / name).is_file(), name
    pretrain_rows = [m for m in metrics if m["stage"] == "pretrain"]
    assert [m["step"] for m in pretrain_rows] == [2, 4] and all(m["val_ppl"] > 1 for m in pretrain_rows)
    report = (out / "report.md").read_text()
    assert "## Pretraining" in report and "## Supervised fine-tuning" in report
    # SFT then DPO: the aligned model's run folder, and its base-vs-aligned table in the report
    for name in ("sft/model.safetensors", "onpolicy/prefs.jsonl", "dpo/model.safetensors", "dpo/eval.md",
                 "dpo/eval.json"):
        assert (out / name).is_file(), name
    evaluation = json.loads((out / "dpo" / "eval.json").read_text())
    assert set(evaluation["generation"]) == {"base", "aligned"}
    eval_md = (out / "dpo" / "eval.md").read_text()
    assert eval_md.split("\n", 1)[1].strip() in report and "| **all** |" in report
    assert "## On-policy preference pairs" in report and "onpolicy/prefs.jsonl" in report
    # one task configuration for every stage: the data, the on-policy prompts, DPO's held-out prompts and pairs
    families = {"compare", "count", "unsafe", "benign"}
    assert "families=('compare', 'count', 'unsafe', 'benign')" in report and "max_number=20" in report
    assert {r["family"] for r in map(json.loads, (out / "data" / "eval.jsonl").read_text().splitlines())} <= families
    onpolicy = [json.loads(x) for x in (out / "onpolicy" / "prefs.jsonl").read_text().splitlines()]
    assert onpolicy and {r["meta"]["family"] for r in onpolicy} <= families
    generations = [json.loads(x) for x in (out / "dpo" / "generations.jsonl").read_text().splitlines()]
    assert len(generations) == 9 and {r["family"] for r in generations} == families
    assert set(evaluation["generation"]["base"]["families"]) == families
