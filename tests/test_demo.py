"""`llmlab demo` end to end on small sizes."""

import json

import yaml

from llmlab.cli import main


def test_demo_writes_a_complete_run_folder(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--quiet", "pretrain_chars=5000", "n_sft=20", "n_prefs=20", "n_eval=45"])
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
    assert {m["stage"] for m in metrics} == {"data", "tokenizer", "attention", "baselines"}
    errors = {m["backend"]: m["max_abs_err"] for m in metrics if m["stage"] == "attention"}
    assert set(errors) == {"naive", "sdpa", "flash"} and max(errors.values()) < 1e-5
    assert (out / "attention" / "attention.png").is_file() and (out / "attention" / "attention.html").is_file()
    from llmlab.tokenizers import load_tokenizer

    tok = load_tokenizer(out / "tokenizer")
    # 5000 characters run out of pairs seen twice before 1024 tokens
    assert 100 < len(tok.merges) <= 1024 - 257 and tok.vocab_size == 257 + len(tok.merges)
    assert "<|endoftext|>" in tok.special_tokens
    assert "## Tokenizer" in (out / "report.md").read_text()
    assert (out / "baselines.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
