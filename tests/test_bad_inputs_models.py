"""The bad-input matrix of the heavy commands: 157 cases, each run through `llmlab.cli.main` in-process.

tests/test_bad_inputs.py does the same for the light commands (data, tokenizer, `--config`); this file
covers the commands that load or train a model: pretrain, sft, rm train, rm score, dpo, sample-prefs,
eval-prefs, generate, chat, export-hf and `viz attention --model`. The columns are the ways their inputs
go wrong:

- `--model`: missing, an empty folder, a file, an HF folder with pickled `pytorch_model.bin` only, an
  llmlab folder with a truncated model.safetensors, a tokenizer.json that is not JSON (and, where the
  command needs one kind, the other kind of folder);
- `--input`: missing, empty, a folder, a malformed JSONL line (line 2, after a good row), non-UTF-8
  bytes (line 2), rows of another command's schema, a pair's soft label p_chosen outside [0, 1] (line 2), soft labels
  given to a loss that takes none (`dpo --loss kto`);
- impossible settings: `model.n_heads=3` with d_model 64, a max_length (pretrain: train.seq_len) past
  the model's 128 positions, `train.batch_size` not divisible by `train.micro_batch_size`, a `--resume`
  folder without a checkpoint, an `--out` that already holds a run, an unknown config key.

Each case must, as in tests/test_bad_inputs.py:

- exit with code 2;
- print exactly one non-empty line on stderr, starting with `error:`, and no traceback;
- change no file: the test's folder, which is also the working directory (where default run folders
  `runs/<command>-<time>/` and pretrain's token cache `.cache/` would go) and which holds copies of
  every model folder a case names, keeps every name and byte it had. The one thing a failing command
  may add is its own run folder, saying that it failed and why (status.json "failed" with the error
  shown): failed runs say so in their folder. Nothing else is left: no token cache, no output.

Every case runs with tiny settings (one step, a few rows, CPU), so that one that wrongly starts to train
ends in seconds. A first, stricter version (no run folder at all) failed 74 cases: 72 left a run folder
that says it failed, which is now the rule, 5 of them also a token cache of the bad input (now removed
on failure); and `export-hf` wrote over a run folder and over the model folder it read, exit 0 (now
refused).
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import pytest

from llmlab.cli import main
from test_bad_inputs import CORPUS, JSONL_ROW, snapshot

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CHAT_ROW = json.dumps({"messages": [{"role": "user", "content": "What is 2 + 3?"},
                                    {"role": "assistant", "content": "5"}]}) + "\n"
PAIR_ROW = json.dumps({"prompt": "What is 2 + 3?", "chosen": "5", "rejected": "6"}) + "\n"
TEXT_ROW = json.dumps({"text": CORPUS}) + "\n"
BROKEN_LINE = '{"prompt": "x", "chosen": \n'
LATIN1_LINE = '{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n'

# name -> bytes (None: a folder), written into each test's folder; the model folders are added by `files`
DATA_FILES: dict[str, bytes | None] = {
    "good.txt": CORPUS.encode(),
    "empty.txt": b"",
    "empty.jsonl": b"",
    "folder": None,
    "latin1.txt": (CORPUS + "caf\xe9 au lait\n").encode("latin-1"),
    "not-json.json": b"{not json\n",
    "text-malformed.jsonl": (TEXT_ROW + '{"text": \n').encode(),
    "chat.jsonl": (CHAT_ROW * 8).encode(),
    "chat-malformed.jsonl": (CHAT_ROW + '{"messages": [\n').encode(),
    "chat-latin1.jsonl": (CHAT_ROW + '{"messages": [{"role": "user", "content": "caf\xe9"}]}\n').encode("latin-1"),
    "pairs.jsonl": (PAIR_ROW * 8).encode(),
    "pairs-malformed.jsonl": (PAIR_ROW + BROKEN_LINE).encode(),
    "pairs-latin1.jsonl": (PAIR_ROW + LATIN1_LINE).encode("latin-1"),
    "pairs-p-chosen-1.5.jsonl": (PAIR_ROW + PAIR_ROW.replace("}", ', "p_chosen": 1.5}')).encode(),
    "pairs-soft.jsonl": (PAIR_ROW.replace("}", ', "p_chosen": 0.75}') * 8).encode(),
    "responses.jsonl": (JSONL_ROW * 4).encode(),  # {prompt, response}, a task-world prompt
    "responses-malformed.jsonl": (JSONL_ROW + '{"prompt": "x", "response": \n').encode(),
    "responses-latin1.jsonl": (JSONL_ROW + '{"prompt": "caf\xe9", "response": "x"}\n').encode("latin-1"),
}

# Good folders, copied into the test's folder under these names when a case names them:
# llm (tiny_model_dir), hf (tiny_hf_dir), tok (tiny_tokenizer_dir), oldrun (a finished pretrain run), rm (a reward model)
GOOD_FOLDERS = ("llm", "hf", "tok", "oldrun", "rm")

# ---------------------------------------------------------------------- the commands, with tiny settings

PRETRAIN = ["pretrain", "--quiet", "--device", "cpu", "--max-steps", "1", "model.d_model=32", "model.n_layers=1",
            "model.n_heads=4", "model.max_seq_len=32", "train.seq_len=32", "train.batch_size=2",
            "train.eval_batches=1", "data.corpus_chars=10000"]
PT = [*PRETRAIN, "--tokenizer", "tok"]
TINY_TRAIN = ["--quiet", "--device", "cpu", "--max-steps", "1", "data.n=8", "train.batch_size=2",
              "train.eval_batches=1"]
SFT = ["sft", *TINY_TRAIN]
RM = ["rm", "train", *TINY_TRAIN]
DPO = ["dpo", *TINY_TRAIN, "eval.n_pairs=2", "eval.n_prompts=2", "eval.max_new_tokens=2"]
RM_SCORE = ["rm", "score", "--device", "cpu"]
SAMPLE = ["sample-prefs", "--quiet", "--device", "cpu", "n=2", "--samples", "2", "max_new_tokens=2"]
EVAL = ["eval-prefs", "--quiet", "--device", "cpu", "--base", "llm", "data.n=4", "eval.n_pairs=2",
        "eval.n_prompts=2", "eval.max_new_tokens=2"]
GENERATE = ["generate", "--prompt", "What is", "--max-new-tokens", "2", "--device", "cpu"]
CHAT = ["chat", "--max-new-tokens", "2", "--device", "cpu"]  # stdin: "hello\n/exit\n"
EXPORT = ["export-hf", "--out", "exported"]
VIZ = ["viz", "attention", "--quiet", "--text", "The cat sat on the mat."]

# --model values that are not a usable model folder
BAD_MODELS = {
    "model-missing": "missing",
    "model-empty-folder": "folder",
    "model-is-a-file": "good.txt",
    "model-pickled-only": "pickled",  # HF config.json + tokenizer, weights only as pytorch_model.bin
    "model-truncated-weights": "truncated",  # llmlab model.yaml + tokenizer.json, model.safetensors cut in half
    "model-tokenizer-not-json": "badtok",  # llmlab model folder whose tokenizer.json is not JSON
}


def model_cases(name: str, base: list[str], *extra: str) -> dict[str, list[str]]:
    return {f"{name}/{case}": [*base, "--model", model, *extra] for case, model in BAD_MODELS.items()}


def input_cases(name: str, base: list[str], kind: str, wrong: str) -> dict[str, list[str]]:
    """--input: missing, empty, a folder, line 2 malformed, line 2 not UTF-8, rows of the `wrong` file's schema."""
    return {
        f"{name}/input-missing": [*base, "--input", "missing.jsonl"],
        f"{name}/input-empty": [*base, "--input", "empty.jsonl"],
        f"{name}/input-folder": [*base, "--input", "folder"],
        f"{name}/input-malformed-line-2": [*base, "--input", f"{kind}-malformed.jsonl"],
        f"{name}/input-not-utf8-line-2": [*base, "--input", f"{kind}-latin1.jsonl"],
        f"{name}/input-wrong-schema": [*base, "--input", wrong],
    }


def trainer_cases(name: str, base: list[str], kind: str, wrong: str) -> dict[str, list[str]]:
    """The rows shared by sft, rm train and dpo (which start from --model)."""
    on_llm = [*base, "--model", "llm"]
    return {
        **model_cases(name, base),
        **input_cases(name, on_llm, kind, wrong),
        f"{name}/max-length-past-context": [*on_llm, "max_length=4096"],
        f"{name}/micro-batch-not-dividing": [*on_llm, "train.batch_size=4", "train.micro_batch_size=3"],
        f"{name}/resume-empty-folder": [*base, "--resume", "folder"],
        f"{name}/resume-model-without-checkpoint": [*base, "--resume", "llm"],
        f"{name}/out-existing-run": [*on_llm, "--out", "oldrun"],
        f"{name}/unknown-key": [*on_llm, "lora.rank=4"],
    }


CASES: dict[str, list[str]] = {
    # pretrain
    "pretrain/input-missing": [*PT, "--input", "missing.txt"],
    "pretrain/input-empty": [*PT, "--input", "empty.txt"],
    "pretrain/input-folder": [*PT, "--input", "folder"],
    "pretrain/input-malformed-line-2": [*PT, "--input", "text-malformed.jsonl"],
    "pretrain/input-not-utf8": [*PT, "--input", "latin1.txt"],
    "pretrain/input-wrong-schema": [*PT, "--input", "chat.jsonl"],
    "pretrain/tokenizer-missing": [*PRETRAIN, "--tokenizer", "missing"],
    "pretrain/tokenizer-empty-folder": [*PRETRAIN, "--tokenizer", "folder"],
    "pretrain/tokenizer-not-json": [*PRETRAIN, "--tokenizer", "not-json.json"],
    "pretrain/tokenizer-folder-not-json": [*PRETRAIN, "--tokenizer", "badtok"],
    "pretrain/n-heads-not-dividing": [*PT, "model.d_model=64", "model.n_heads=3"],
    "pretrain/seq-len-past-context": [*PT, "train.seq_len=4096"],
    "pretrain/micro-batch-not-dividing": [*PT, "train.batch_size=4", "train.micro_batch_size=3"],
    "pretrain/resume-empty-folder": [*PT, "--resume", "folder"],
    "pretrain/resume-model-without-checkpoint": [*PT, "--resume", "llm"],
    "pretrain/out-existing-run": [*PT, "--out", "oldrun"],
    "pretrain/unknown-key": [*PT, "train.max_step=1"],
    # sft, rm train, dpo
    **trainer_cases("sft", SFT, "chat", wrong="pairs.jsonl"),
    **trainer_cases("rm-train", RM, "pairs", wrong="chat.jsonl"),
    **trainer_cases("dpo", DPO, "pairs", wrong="chat.jsonl"),
    "rm-train/input-p-chosen-out-of-range-line-2": [*RM, "--model", "llm", "--input", "pairs-p-chosen-1.5.jsonl"],
    "dpo/input-p-chosen-out-of-range-line-2": [*DPO, "--model", "llm", "--input", "pairs-p-chosen-1.5.jsonl"],
    "dpo/soft-labels-with-kto": [*DPO, "--model", "llm", "--input", "pairs-soft.jsonl", "--loss", "kto"],
    # rm score
    **model_cases("rm-score", RM_SCORE, "--prompt", "What is 2 + 3?", "--response", "5"),
    "rm-score/model-not-a-reward-model": [*RM_SCORE, "--model", "llm", "--prompt", "What is 2 + 3?",
                                          "--response", "5"],
    "rm-score/reward-model-truncated-weights": [*RM_SCORE, "--model", "rm-truncated", "--prompt", "What is 2 + 3?",
                                                "--response", "5"],
    "rm-score/reward-model-tokenizer-not-json": [*RM_SCORE, "--model", "rm-badtok", "--prompt", "What is 2 + 3?",
                                                 "--response", "5"],
    **input_cases("rm-score", [*RM_SCORE, "--model", "rm"], "responses", wrong="chat.jsonl"),
    "rm-score/max-length-past-context": [*RM_SCORE, "--model", "rm", "--input", "responses.jsonl", "max_length=4096"],
    "rm-score/unknown-key": [*RM_SCORE, "--model", "rm", "--input", "responses.jsonl", "batchsize=2"],
    # sample-prefs
    **model_cases("sample-prefs", SAMPLE),
    **input_cases("sample-prefs", [*SAMPLE, "--model", "llm"], "responses", wrong="chat.jsonl"),
    "sample-prefs/rm-scorer-not-a-reward-model": [*SAMPLE, "--model", "llm", "--scorer", "rm", "reward_model=llm"],
    "sample-prefs/out-existing-run": [*SAMPLE, "--model", "llm", "--out", "oldrun"],
    "sample-prefs/unknown-key": [*SAMPLE, "--model", "llm", "sample=2"],
    # eval-prefs
    **model_cases("eval-prefs", EVAL),
    "eval-prefs/base-missing": [*EVAL, "--model", "llm", "--base", "missing"],
    **input_cases("eval-prefs", [*EVAL, "--model", "llm"], "pairs", wrong="chat.jsonl"),
    "eval-prefs/input-p-chosen-out-of-range-line-2": [*EVAL, "--model", "llm", "--input", "pairs-p-chosen-1.5.jsonl"],
    "eval-prefs/max-length-past-context": [*EVAL, "--model", "llm", "max_length=4096"],
    "eval-prefs/out-existing-run": [*EVAL, "--model", "llm", "--out", "oldrun"],
    "eval-prefs/unknown-key": [*EVAL, "--model", "llm", "eval.n_pair=2"],
    # generate, chat
    **model_cases("generate", GENERATE),
    "generate/unknown-key": [*GENERATE, "--model", "llm", "max_new_token=2"],
    **model_cases("chat", CHAT),
    "chat/unknown-key": [*CHAT, "--model", "llm", "sytem=hi"],
    # export-hf
    **model_cases("export-hf", EXPORT),
    "export-hf/model-is-an-hf-folder": [*EXPORT, "--model", "hf"],
    "export-hf/out-existing-run": ["export-hf", "--model", "llm", "--out", "oldrun"],
    "export-hf/out-is-the-model-folder": ["export-hf", "--model", "llm", "--out", "llm"],
    "export-hf/out-is-a-file": ["export-hf", "--model", "llm", "--out", "good.txt"],
    "export-hf/unknown-key": [*EXPORT, "--model", "llm", "dtype=float16"],
    # viz attention --model
    **model_cases("viz-attention", VIZ),
    "viz-attention/layer-past-the-model": [*VIZ, "--model", "llm", "--layer", "7"],
    "viz-attention/out-existing-run": [*VIZ, "--model", "llm", "--out", "oldrun"],
    "viz-attention/unknown-key": [*VIZ, "--model", "llm", "n_head=2"],
}


def test_the_docstring_states_the_matrix_size() -> None:
    assert f": {len(CASES)} cases," in (__doc__ or "")


def tree(root: Path, prefix: str) -> dict[str, bytes | None]:
    """Every path under root as `prefix/relative`, with its bytes (None for a folder)."""
    out: dict[str, bytes | None] = {prefix: None}
    for p in sorted(root.rglob("*")):
        out[f"{prefix}/{p.relative_to(root)}"] = None if p.is_dir() else p.read_bytes()
    return out


@pytest.fixture(scope="session")
def bad_model_files(tiny_model_dir: Path, tiny_hf_dir: Path, reward_model: Path) -> dict[str, bytes | None]:
    """The bad model folders of BAD_MODELS and two broken reward models, as name -> bytes."""
    import torch
    from safetensors.torch import load_file

    files: dict[str, bytes | None] = {}
    # an HF folder whose weights are only pickled: never to be unpickled
    files.update({k: v for k, v in tree(tiny_hf_dir, "pickled").items() if not k.endswith(".safetensors")})
    buffer = io.BytesIO()
    torch.save(load_file(str(tiny_hf_dir / "model.safetensors")), buffer)
    files["pickled/pytorch_model.bin"] = buffer.getvalue()
    # an llmlab folder whose weights file stops half-way
    truncated = tree(tiny_model_dir, "truncated")
    weights = truncated["truncated/model.safetensors"]
    assert weights is not None
    truncated["truncated/model.safetensors"] = weights[: len(weights) // 2]
    files.update(truncated)
    # an llmlab folder whose tokenizer.json is not JSON
    files.update(tree(tiny_model_dir, "badtok"))
    files["badtok/tokenizer.json"] = b"{not json\n"
    # the same two breakages in a reward model (without its checkpoints: the folder is written per case)
    for name in ("rm-truncated", "rm-badtok"):
        files.update({k: v for k, v in tree(reward_model, name).items() if "/checkpoints" not in k})
    weights = files["rm-truncated/model.safetensors"]
    assert weights is not None
    files["rm-truncated/model.safetensors"] = weights[: len(weights) // 2]
    files["rm-badtok/tokenizer.json"] = b"{not json\n"
    return files


@pytest.fixture(scope="session")
def old_run(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> Path:
    """A finished tiny pretrain run (with a checkpoint), for --out naming an existing run folder."""
    from conftest import one_thread

    root = tmp_path_factory.mktemp("old-run")
    with one_thread():
        argv = [*PRETRAIN, "--tokenizer", str(tiny_tokenizer_dir), "--out", str(root / "run"),
                f"data.cache_dir={root / 'cache'}"]
        assert main(argv) == 0
    return root / "run"


@pytest.fixture(scope="session")
def reward_model(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A tiny reward model (one step of `rm train` on the tiny model), for `rm score --input`."""
    from conftest import one_thread

    root = tmp_path_factory.mktemp("reward-model")
    with one_thread():
        assert main([*RM, "--model", str(tiny_model_dir), "--out", str(root / "rm")]) == 0
    return root / "rm"


@pytest.mark.parametrize("argv", list(CASES.values()), ids=list(CASES))
def test_bad_input_is_one_error_line_and_changes_nothing(argv: list[str], request: pytest.FixtureRequest,
                                                          bad_model_files: dict[str, bytes | None],
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("LLMLAB_DEBUG", raising=False)
    for name, data in {**DATA_FILES, **bad_model_files}.items():
        if data is None:
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_bytes(data)
    sources = {"llm": "tiny_model_dir", "hf": "tiny_hf_dir", "tok": "tiny_tokenizer_dir", "oldrun": "old_run",
               "rm": "reward_model"}
    for name in GOOD_FOLDERS:
        if name in argv:
            shutil.copytree(request.getfixturevalue(sources[name]), tmp_path / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n/exit\n"))
    before = snapshot(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    assert lines[0].startswith("error: ") and lines[0][len("error: "):].strip(), err
    after = snapshot(tmp_path)
    assert {k: after.get(k) for k in before} == before  # nothing that was there changed or went
    assert all(in_a_failed_run_folder(tmp_path, path, lines[0]) for path in set(after) - set(before))


def in_a_failed_run_folder(root: Path, path: str, error: str) -> bool:
    """Whether a path a failed command created lies in a run folder (runs/<command>-<time>/) that says it
    failed, with the error the user was shown: failed runs say so in their folder, and nothing else is
    left (no token cache, no half-written output)."""
    parts = Path(path).parts
    if parts[0] != "runs":
        return False
    if len(parts) == 1:
        return True
    status = root / "runs" / parts[1] / "status.json"
    if not status.is_file():
        return False
    written = json.loads(status.read_text())
    return written["status"] == "failed" and written["error"].split(": ", 1)[-1] in error
