"""`llmlab tokenizer stats|compare|sweep|extend` and the new `train` options, end to end."""

import json
import subprocess
import sys

import pytest

from llmlab.cli import main
from llmlab.data.multilingual import code_mixed, language_corpus


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi")
    (root / "en.txt").write_text(language_corpus("en", 20_000, seed=0), encoding="utf-8")
    (root / "hi.txt").write_text(language_corpus("hi", 2_000, seed=0), encoding="utf-8")
    (root / "dom.txt").write_text("\n".join(code_mixed(60, seed=0)), encoding="utf-8")
    for name, args in {"plain": ["--input", str(root / "en.txt")],
                       "balanced": ["language_alpha=0.3", "pre_tokenizer=script", "--language-input",
                                    f"en={root / 'en.txt'}", f"hi={root / 'hi.txt'}"]}.items():
        assert main(["tokenizer", "train", "--vocab-size", "400", "--out", str(root / name), "--quiet",
                     "workers=1", *args]) == 0
    return root


def test_language_balanced_training_logs_the_shares(files):
    log = (files / "balanced" / "log.txt").read_text()
    assert "language shares" in log and "hi" in log


def test_stats_writes_table_json_and_histogram(files, capsys):
    out = files / "stats"
    assert main(["tokenizer", "stats", "--out", str(out), "--quiet", "eval_sentences=20", "--tokenizer",
                 str(files / "plain"), str(files / "balanced")]) == 0
    printed = capsys.readouterr().out
    assert "builtin:hi" in printed and "Premium" in printed
    report = json.loads((out / "stats.json").read_text())
    assert report["premium"]["plain"]["en"] == 1.0
    assert report["premium"]["balanced"]["hi"] < report["premium"]["plain"]["hi"]
    assert (out / "token_lengths.png").stat().st_size > 0


def test_compare_prints_tokens_and_writes_html(files, capsys):
    out = files / "cmp"
    assert main(["tokenizer", "compare", "--text", "मैं कल office जाऊँगा <b>", "--out", str(out), "--quiet",
                 "--tokenizer", str(files / "plain"), str(files / "balanced")]) == 0
    printed = capsys.readouterr().out
    assert "balanced (" in printed and "|" in printed
    page = (out / "compare.html").read_text()
    assert "<b>" not in page and "&lt;" in page and page.count("<h2>") == 2  # the text is escaped


def test_sweep_bpe_grid(files, capsys):
    out = files / "sweep"
    assert main(["tokenizer", "sweep", "--algos", "bpe", "--vocab-sizes", "300,1k", "--out", str(out), "--quiet",
                 "--input", str(files / "en.txt"), "--eval", str(files / "dom.txt")]) == 0
    rows = json.loads((out / "sweep.json").read_text())
    assert [r["vocab_size"] for r in rows] == [300, 1024]
    assert rows[1]["bytes_per_token"] > rows[0]["bytes_per_token"]
    assert (out / "compression.png").stat().st_size > 0 and "| bpe | 300 |" in (out / "sweep.md").read_text()


def test_extend_learns_domain_tokens(files, capsys):
    out = files / "ext"
    assert main(["tokenizer", "extend", "--tokenizer", str(files / "plain"), "--domain", str(files / "dom.txt"),
                 "--num-tokens", "10", "--out", str(out), "--quiet"]) == 0
    assert "fewer" in capsys.readouterr().out
    old = json.loads((files / "plain" / "tokenizer.json").read_text())["model"]["vocab"]
    new = json.loads((out / "tokenizer.json").read_text())["model"]["vocab"]
    assert all(new[t] == i for t, i in old.items()) and len(new) == len(old) + 10


@pytest.mark.parametrize(("args", "phrase"), [
    (["tokenizer", "stats"], "tokenizer is required"),
    (["tokenizer", "stats", "--tokenizer", "/nonexistent"], "/nonexistent"),
    (["tokenizer", "compare", "--tokenizer", "x"], "exactly one of --text and --input"),
    (["tokenizer", "sweep", "--algos", "bpe,nope"], "unknown algorithm 'nope'"),
    (["tokenizer", "sweep", "--vocab-sizes", "4q"], "'4q'"),
    (["tokenizer", "extend", "--tokenizer", "x"], "exactly one of --num-tokens"),
    (["tokenizer", "extend", "--tokenizer", "x", "--num-tokens", "5"], "--domain"),
    (["tokenizer", "train", "language_alpha=0.3"], "per-language inputs"),
    (["tokenizer", "train", "--language-input", "en.txt"], "not LANG=FILE"),
    (["tokenizer", "train", "--algo", "wordpiece", "--pre-tokenizer", "script"], "BERT's pre-tokenizer"),
    (["tokenizer", "train", "byte_fallback=true"], "byte-level BPE has every byte"),
    (["tokenizer", "train", "--algo", "unigram", "score=frequency"], "algo=wordpiece only"),
    (["tokenizer", "train", "--algo", "unigram", "normalizer=lowercase"], "algo=bpe only"),
    (["tokenizer", "train", "--algo", "wordpiece", "special_tokens=<s>"], "needs [UNK]"),
])
def test_bad_inputs_are_one_line_errors(args, phrase, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and phrase in err, err


def test_extend_refuses_a_token_that_spans_chunks(files, capsys):
    assert main(["tokenizer", "extend", "--tokenizer", str(files / "plain"), "--tokens", "foo bar",
                 "--out", str(files / "e2"), "--quiet"]) == 2
    assert "spans pre-tokenizer chunks" in capsys.readouterr().err


def test_new_commands_do_not_import_heavy_modules():
    code = ("import sys; from llmlab.cli import build_parser; import llmlab.tokenizers.commands, "
            "llmlab.tokenizers.analysis, llmlab.tokenizers.strategies, llmlab.tokenizers.extend; "
            "print([m for m in ('torch', 'numpy', 'matplotlib') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("args", [
    ["--algo", "bpe", "--pre-tokenizer", "script"],
    ["--algo", "unigram", "--pre-tokenizer", "script", "byte_fallback=true"],  # the hybrid
    ["--algo", "unigram"],
    ["--algo", "wordpiece", "score=frequency"],
], ids=["bpe-script", "unigram-script-bytes", "unigram", "wordpiece-frequency"])
def test_train_each_algo_then_encode_and_hf_agree(args, tmp_path, capsys):
    """Train on the built-in corpus, encode with `tokenizer encode --ids`, and HF `tokenizers` gives the same ids."""
    tokenizers = pytest.importorskip("tokenizers")
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--vocab-size", "600", "--out", str(out), "--quiet", *args,
                 "corpus_chars=20000"]) == 0  # key=value overrides last, in one group
    sample = "Omar goes to the park at 7 o'clock, then Anna reads 12 books.\n" + code_mixed(3, seed=5)[1]
    capsys.readouterr()
    assert main(["tokenizer", "encode", "--tokenizer", str(out), "--text", sample, "--ids", "--quiet"]) == 0
    ids = [int(i) for i in capsys.readouterr().out.split()]
    hf = tokenizers.Tokenizer.from_file(str(out / "tokenizer.json"))
    assert ids and hf.encode(sample, add_special_tokens=False).ids == ids
    assert f"algo: {args[1]}" in (out / "config.yaml").read_text()
    assert ('"Split"' in (out / "tokenizer.json").read_text()) == ("script" in args)
