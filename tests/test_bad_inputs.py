"""The bad-input matrix of the light commands: 66 cases, each run through `llmlab.cli.main` in-process.

Rows are commands (data generate / score / validate, tokenizer train / encode / decode / stats, and
`--config` files); columns are the ways an input goes wrong: a missing file, an empty file, a folder
given as a file, a malformed JSONL line, non-UTF-8 bytes, a wrong type or a non-finite number in an
override, an unknown key, a duplicate YAML key, an abbreviated flag, an `--out` that is the wrong kind
of thing. Each case must:

- exit with code 2;
- print exactly one non-empty line on stderr, starting with `error:`, and no traceback;
- change no file: the test's folder (also the working directory, where default run folders would
  go) holds the same names and bytes before and after.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llmlab.cli import main

JSONL_ROW = '{"prompt": "Calculate 3 - 63.", "response": "-60"}\n'  # a task-world prompt: `data score` scores it
CORPUS = "The quick brown fox jumped over the lazy dog by the river bank.\n" * 20

# name -> bytes (None: a folder), written into each test's folder
FILES: dict[str, bytes | None] = {
    "good.jsonl": JSONL_ROW.encode(),
    "good.txt": CORPUS.encode(),
    "empty.jsonl": b"",
    "empty.txt": b"",
    "folder": None,
    "folder.jsonl": None,
    "malformed.jsonl": (JSONL_ROW + '{"prompt": "x", "response": \n').encode(),
    "latin1.jsonl": (JSONL_ROW + '{"prompt": "caf\xe9", "response": "x"}\n').encode("latin-1"),
    "latin1.txt": (CORPUS + "caf\xe9 au lait\n").encode("latin-1"),
    "latin1.yaml": "seed: 1\nout: caf\xe9.jsonl\n".encode("latin-1"),
    "dup.yaml": b"seed: 1\nn: 2\nseed: 3\n",
    "dup-nested.yaml": b"world:\n  seed: 1\n  n_people: 30\n  seed: 2\n",
    "not-json.json": b"{not json\n",
    "prefs.jsonl": b'{"prompt": "", "chosen": "a", "rejected": "b"}\n',
}

GEN = ["data", "generate", "--quiet"]
SCORE = ["data", "score", "--quiet"]
VALIDATE = ["data", "validate", "--schema", "responses"]
TRAIN = ["tokenizer", "train", "--vocab-size", "300", "--quiet", "workers=1"]
ENCODE = ["tokenizer", "encode", "--tokenizer", "{tok}"]
DECODE = ["tokenizer", "decode", "--tokenizer", "{tok}"]
STATS = ["tokenizer", "stats", "--tokenizer", "{tok}", "--quiet"]

CASES: dict[str, list[str]] = {
    # --config files, on a data and a tokenizer command
    "generate/config-missing": [*GEN, "--config", "missing.yaml"],
    "generate/config-folder": [*GEN, "--config", "folder"],
    "generate/config-not-utf8": [*GEN, "--config", "latin1.yaml"],
    "generate/config-duplicate-key": [*GEN, "--config", "dup.yaml"],
    "generate/config-duplicate-nested-key": [*GEN, "--config", "dup-nested.yaml"],
    "generate/config-not-yaml-mapping": [*GEN, "--config", "good.txt"],
    "train/config-duplicate-key": [*TRAIN, "--input", "good.txt", "--config", "dup.yaml"],
    "train/config-not-utf8": [*TRAIN, "--input", "good.txt", "--config", "latin1.yaml"],
    # data generate
    "generate/wrong-type": [*GEN, "n=many"],
    "generate/wrong-type-float-for-int": [*GEN, "seed=1.5"],
    "generate/wrong-type-flag": [*GEN, "--n", "ten"],
    "generate/nan": [*GEN, "prefs.label_noise=.nan"],
    "generate/inf": [*GEN, "world.eval_fraction=inf"],
    "generate/unknown-key": [*GEN, "nn=5"],
    "generate/unknown-nested-key": [*GEN, "prefs.length_bais=0.5"],
    "generate/out-folder": [*GEN, "--n", "3", "--out", "folder.jsonl"],
    "generate/out-under-a-file": [*GEN, "--n", "3", "--out", "good.txt/x.jsonl"],
    "generate/abbreviated-flag": [*GEN, "--se", "1"],
    "generate/unrecognised-word": [*GEN, "--kind", "eval", "stray"],
    # data score
    "score/missing": [*SCORE, "--input", "missing.jsonl"],
    "score/empty": [*SCORE, "--input", "empty.jsonl"],
    "score/folder": [*SCORE, "--input", "folder"],
    "score/malformed": [*SCORE, "--input", "malformed.jsonl"],
    "score/not-utf8": [*SCORE, "--input", "latin1.jsonl"],
    "score/wrong-type": [*SCORE, "--input", "good.jsonl", "strict=maybe"],
    "score/unknown-key": [*SCORE, "--input", "good.jsonl", "strickt=true"],
    "score/out-folder": [*SCORE, "--input", "good.jsonl", "--out", "folder"],
    "score/config-duplicate-key": [*SCORE, "--input", "good.jsonl", "--config", "dup.yaml"],
    # data validate
    "validate/missing": [*VALIDATE, "--input", "missing.jsonl"],
    "validate/empty": [*VALIDATE, "--input", "empty.jsonl"],
    "validate/folder": [*VALIDATE, "--input", "folder"],
    "validate/malformed": [*VALIDATE, "--input", "malformed.jsonl"],
    "validate/not-utf8": [*VALIDATE, "--input", "latin1.jsonl"],
    "validate/wrong-choice": [*VALIDATE, "--input", "good.jsonl", "schema=nope"],
    "validate/unknown-key": [*VALIDATE, "--input", "good.jsonl", "scheme=prefs"],
    "validate/prefs-strict": ["data", "validate", "--schema", "prefs", "--input", "prefs.jsonl", "strict=true"],
    # tokenizer train
    "train/missing": [*TRAIN, "--input", "missing.txt"],
    "train/empty": [*TRAIN, "--input", "empty.txt"],
    "train/folder": [*TRAIN, "--input", "folder"],
    "train/not-utf8": [*TRAIN, "--input", "latin1.txt"],
    "train/not-utf8-unigram": [*TRAIN, "--algo", "unigram", "--input", "latin1.txt"],
    "train/not-utf8-language": [*TRAIN, "--language-input", "en=latin1.txt"],
    "train/wrong-type": [*TRAIN, "--input", "good.txt", "vocab_size=big"],
    "train/inf": [*TRAIN, "language_alpha=.inf", "--language-input", "en=good.txt"],
    "train/unknown-key": [*TRAIN, "--input", "good.txt", "vocab=300"],
    "train/out-is-a-file": [*TRAIN, "--input", "good.txt", "--out", "good.jsonl"],
    "train/abbreviated-flag": [*TRAIN, "--input", "good.txt", "--vocab", "300"],
    # tokenizer encode
    "encode/tokenizer-missing": ["tokenizer", "encode", "--tokenizer", "missing", "--text", "x"],
    "encode/tokenizer-folder-without-one": ["tokenizer", "encode", "--tokenizer", "folder", "--text", "x"],
    "encode/tokenizer-malformed": ["tokenizer", "encode", "--tokenizer", "not-json.json", "--text", "x"],
    "encode/tokenizer-not-utf8": ["tokenizer", "encode", "--tokenizer", "latin1.txt", "--text", "x"],
    "encode/input-missing": [*ENCODE, "--input", "missing.txt"],
    "encode/input-folder": [*ENCODE, "--input", "folder"],
    "encode/input-not-utf8": [*ENCODE, "--input", "latin1.txt"],
    "encode/wrong-type": [*ENCODE, "--text", "x", "ids=maybe"],
    "encode/unknown-key": [*ENCODE, "--text", "x", "idz=true"],
    # tokenizer decode
    "decode/input-missing": [*DECODE, "--input", "missing.txt"],
    "decode/input-folder": [*DECODE, "--input", "folder"],
    "decode/input-not-utf8": [*DECODE, "--input", "latin1.txt"],
    "decode/not-an-id": [*DECODE, "--ids", "1 x 2"],
    "decode/unknown-key": [*DECODE, "--ids", "1", "id=1"],
    # tokenizer stats
    "stats/eval-missing": [*STATS, "--eval", "missing.txt"],
    "stats/eval-folder": [*STATS, "--eval", "folder"],
    "stats/eval-not-utf8": [*STATS, "--eval", "latin1.txt"],
    "stats/wrong-type": [*STATS, "top_n=ten"],
    "stats/out-is-a-file": [*STATS, "--out", "good.txt"],
}


def test_the_docstring_states_the_matrix_size() -> None:
    assert f": {len(CASES)} cases," in (__doc__ or "")


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small trained tokenizer, outside the folders the cases watch."""
    root = tmp_path_factory.mktemp("tok")
    (root / "corpus.txt").write_text(CORPUS, encoding="utf-8")
    assert main(["tokenizer", "train", "--vocab-size", "300", "--input", str(root / "corpus.txt"),
                 "--out", str(root / "run"), "--quiet", "workers=1"]) == 0
    return root / "run"


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root, with its bytes (None for a folder)."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("argv", list(CASES.values()), ids=list(CASES))
def test_bad_input_is_one_error_line_and_changes_nothing(argv: list[str], tok: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("LLMLAB_DEBUG", raising=False)
    for name, data in FILES.items():
        if data is None:
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_bytes(data)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code = main([arg.format(tok=tok) for arg in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    assert lines[0].startswith("error: ") and lines[0][len("error: "):].strip(), err
    assert snapshot(tmp_path) == before
