"""`llmlab tokenizer train|encode|decode` end to end, and their error paths."""

import json

import pytest

from llmlab.cli import main

CORPUS = "\n".join(
    f"The {w} jumped over {n} lazy dogs near the river bank, said the {w} keeper." for w in
    ("quick", "brown", "small", "happy", "sleepy", "clever") for n in range(12)
) + "\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    corpus = root / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    out = root / "run"
    assert main(["tokenizer", "train", "--vocab-size", "320", "--input", str(corpus), "--out", str(out),
                 "--quiet", "workers=1"]) == 0
    return out


def test_train_writes_a_run_folder_with_an_hf_tokenizer(trained):
    for name in ("config.yaml", "metrics.jsonl", "log.txt", "tokenizer.json", "vocab.txt"):
        assert (trained / name).is_file(), name
    data = json.loads((trained / "tokenizer.json").read_text())
    assert data["model"]["type"] == "BPE"
    assert len(data["model"]["merges"]) == 320 - 256 - 1
    metrics = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["merges"] == 63 and metrics[-1]["vocab_size"] == 320


def test_encode_then_decode_round_trips(trained, capsys):
    text = "The quick dogs jumped, said the keeper. 🙂"
    assert main(["tokenizer", "encode", "--tokenizer", str(trained), "--text", text, "--ids"]) == 0
    out = capsys.readouterr()
    ids = out.out.split()
    assert all(i.isdigit() for i in ids) and "bytes/token" in out.err
    assert main(["tokenizer", "decode", "--tokenizer", str(trained), "--ids", " ".join(ids)]) == 0
    assert capsys.readouterr().out == text + "\n"


def test_encode_shows_tokens_and_honours_allowed_special(trained, capsys):
    assert main(["tokenizer", "encode", "--tokenizer", str(trained), "--text", "the river<|endoftext|>",
                 "--ids", "--allowed-special", "all"]) == 0
    ids = [int(i) for i in capsys.readouterr().out.split()]
    assert ids[-1] == 319  # the special token, after 256 bytes and 63 merges
    assert main(["tokenizer", "encode", "--tokenizer", str(trained), "--text", "the river<|endoftext|>",
                 "--ids"]) == 0
    assert 319 not in [int(i) for i in capsys.readouterr().out.split()]  # text, not the special
    assert main(["tokenizer", "encode", "--tokenizer", str(trained), "--text", "the river"]) == 0
    assert "␣river" in capsys.readouterr().out  # tokens shown, spaces made visible


@pytest.mark.parametrize(("args", "phrase"), [
    (["tokenizer", "train", "--input", "/nonexistent.txt", "--vocab-size", "300"], "no such file"),
    (["tokenizer", "train", "--vocab-size", "100"], "smaller than 256 bytes"),
    (["tokenizer", "train", "special_tokens=a,a"], "given twice"),
    (["tokenizer", "encode", "--tokenizer", "/nonexistent", "--text", "x"], "/nonexistent"),
    (["tokenizer", "encode", "--text", "x"], "tokenizer is required"),
    (["tokenizer", "decode", "--tokenizer", "x", "--ids", "1", "--input", "f"], "exactly one"),
])
def test_user_errors_are_one_line_with_exit_code_2(args, phrase, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and phrase in err


def test_non_utf8_input_names_the_byte_offset_or_is_replaced(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(CORPUS.encode() + b"caf\xe9 au lait\n")
    code = main(["tokenizer", "train", "--input", str(bad), "--vocab-size", "300", "--out", str(tmp_path / "r"),
                 "--quiet", "workers=1"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"byte offset {len(CORPUS.encode()) + 3}" in err and "--errors replace" in err
    assert not (tmp_path / "r").exists()  # checked before the run folder is made: nothing left behind
    assert main(["tokenizer", "train", "--input", str(bad), "--vocab-size", "300", "--out", str(tmp_path / "r2"),
                 "--errors", "replace", "--quiet", "workers=1"]) == 0


def test_decode_rejects_a_non_id(trained, capsys):
    assert main(["tokenizer", "decode", "--tokenizer", str(trained), "--ids", "1 x 2"]) == 2
    assert "not a token id: 'x'" in capsys.readouterr().err
    assert main(["tokenizer", "decode", "--tokenizer", str(trained), "--ids", "99999"]) == 2
    assert "99999" in capsys.readouterr().err


@pytest.mark.parametrize("how", [["--algo", "unigram", "--input"], ["--algo", "wordpiece", "--input"],
                                 ["--language-input"]])
def test_non_utf8_input_of_every_trainer_is_one_line_and_leaves_no_run_folder(tmp_path, capsys, how):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(CORPUS.encode() + b"caf\xe9 au lait\n")
    value = f"en={bad}" if how == ["--language-input"] else str(bad)
    assert main(["tokenizer", "train", *how, value, "--vocab-size", "300", "--out", str(tmp_path / "r"),
                 "--quiet"]) == 2
    lines = CORPUS.count("\n") + 1
    assert capsys.readouterr().err == (f"error: {bad}: not valid UTF-8 at byte offset {len(CORPUS.encode()) + 3} "
                                       f"(line {lines}); pass --errors replace to replace bad bytes\n")
    assert not (tmp_path / "r").exists()


def test_non_utf8_input_of_encode_decode_and_stats(trained, tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"12\n3\xff4\n")
    expected = f"error: {bad}: not valid UTF-8 at byte offset 4 (line 2)"
    assert main(["tokenizer", "encode", "--tokenizer", str(trained), "--input", str(bad)]) == 2
    assert capsys.readouterr().err == expected + "; pass errors=replace to replace bad bytes\n"
    assert main(["tokenizer", "decode", "--tokenizer", str(trained), "--input", str(bad)]) == 2
    assert capsys.readouterr().err == expected + "\n"
    assert main(["tokenizer", "stats", "--tokenizer", str(trained), "--eval", str(bad),
                 "--out", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err == expected + "\n"
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(("make", "phrase"), [
    (lambda p: p.write_bytes(b""), "file is empty; nothing to train on"),
    (lambda p: p.mkdir(), "is a directory, not a file"),
], ids=["empty", "folder"])
def test_train_input_that_is_empty_or_a_folder(tmp_path, capsys, make, phrase):
    path = tmp_path / "in.txt"
    make(path)
    assert main(["tokenizer", "train", "--input", str(path), "--vocab-size", "300", "--out",
                 str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == f"error: {path}: {phrase}\n"
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------- unigram: lossless by default

RARE = CORPUS * 30 + "wow! really~ ¤\n"  # '!', '~' and '¤' fall below character_coverage 0.9995


@pytest.mark.parametrize("fallback", [None, "false"])
def test_unigram_train_is_lossless_by_default_and_says_how_much_is_unknown(tmp_path, capsys, fallback):
    from llmlab.tokenizers.hf_io import load_tokenizer

    corpus = tmp_path / "rare.txt"
    corpus.write_text(RARE, encoding="utf-8")
    extra = [] if fallback is None else [f"byte_fallback={fallback}"]
    assert main(["tokenizer", "train", "--algo", "unigram", "--vocab-size", "400", "--input", str(corpus),
                 "--out", str(tmp_path / "u"), *extra]) == 0
    err = capsys.readouterr().err
    tok = load_tokenizer(tmp_path / "u")
    # independently of the count the command prints: which characters encode to <unk> on their own
    unknown = {c for c in set(RARE) if tok.unk_id in tok.encode(c)}
    if fallback is None:
        assert tok.byte_fallback and unknown == set()
        assert tok.decode(tok.encode(RARE)) == RARE
        assert ("0 characters of the training text map to <unk>: byte fallback is on (3 characters, e.g. "
                in err), err
    else:
        assert unknown == {"!", "~", "¤"}
        assert "3 characters of the training text (3 distinct, e.g. " in err
        assert "map to <unk>; byte_fallback=true keeps them" in err
        assert tok.decode(tok.encode(RARE)) != RARE
    metrics = [json.loads(line) for line in (tmp_path / "u" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["unknown_characters"] == (0 if fallback is None else 3)
