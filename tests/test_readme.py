"""Every `llmlab` command line of the README's command block, and of every bash block in docs/*.md, runs as
printed, in order, in a fresh folder per page, at tiny size: each line gets `key=value` overrides appended
(overrides win over flags and defaults), and the files and models a user would bring (responses.jsonl,
my_prefs.jsonl, notes.txt, ./my-hf-model, a pretrained runs/pt, ...) are made just before the first line
that reads them, when the page itself never writes them. `llmlab` lines only: `torchrun` (tests/align/
test_trainers.py runs DDP) and `python -c` lines are not run; `llmlab demo` (tests/test_demo.py runs it
small) and the few lines of SKIPPED are left out."""

from __future__ import annotations

import io
import json
import re
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from llmlab.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

TINY_PRETRAIN = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.max_seq_len=128", "train.seq_len=32",
                 "train.batch_size=2", "train.max_steps=2", "train.eval_every=2", "train.eval_batches=1",
                 "train.sample_tokens=4", "train.checkpoint_every=2", "data.corpus_chars=20000"]
TINY_ALIGN = ["train.max_steps=2", "train.batch_size=2", "train.eval_every=2", "train.eval_batches=1", "data.n=8"]
TINY_EVAL = ["eval.n_prompts=2", "eval.n_pairs=2", "eval.max_new_tokens=4"]
TINY_ONLINE = ["train.max_steps=2", "train.batch_size=2", "train.checkpoint_every=2", "rollout.max_new_tokens=4",
               "eval.n_prompts=2", "data.n=8"]
TINY_TOKENIZER = ["vocab_size=300", "corpus_chars=20000"]
TINY: dict[str, Callable[[str], list[str]]] = {  # command words -> overrides appended to the printed line
    "data generate": lambda line: ["chars=20000"] if "--kind pretrain" in line else ["n=16"],
    # unigram needs room for every character of the corpus next to its 258 fixed ids
    "tokenizer train": lambda line: ["vocab_size=400" if "unigram" in line else "vocab_size=300", "corpus_chars=20000"],
    "tokenizer stats": lambda line: ["eval_sentences=20"],
    "tokenizer sweep": lambda line: ["vocab_sizes=300,400", "corpus_chars=20000"],
    # a --config preset keeps its own context: the lines after it use it (max_length=256)
    "pretrain": lambda line: (["train.max_steps=3"] if "--resume" in line else
                              [o for o in TINY_PRETRAIN if "--config" not in line or "max_seq_len" not in o]),
    "generate": lambda line: ["max_new_tokens=4"],
    "chat": lambda line: ["max_new_tokens=4"],
    "sft": lambda line: ["train.max_steps=3"] if "--resume" in line else TINY_ALIGN,
    "rm train": lambda line: TINY_ALIGN,
    "rm score": lambda line: ["batch_size=2"],
    "dpo": lambda line: ["train.max_steps=3"] if "--resume" in line else [*TINY_ALIGN, *TINY_EVAL],
    "sample-prefs": lambda line: ["n=4", "samples=2", "max_new_tokens=4"],
    **dict.fromkeys(("cai revise", "cai label"), lambda line: ["n=4", "max_new_tokens=4"]),
    "cai judge-data": lambda line: ["n=8"],
    **dict.fromkeys(("grpo", "rloo", "ppo"), lambda line: ["train.max_steps=3"] if "--resume" in line else TINY_ONLINE),
    "hacking": lambda line: ["steps=4", "n_prefs=20", "rm_steps=1", "n_prompts=2", "bon_n=[1,2]", "batch_size=2",
                             "samples=2", "max_new_tokens=4", "frontier_kl_coefs=[0.1]", "frontier_dpo_betas=[0.1]"],
    "eval-prefs": lambda line: TINY_EVAL,
    "eval": lambda line: ["n_prompts=2", "n_documents=2", "max_new_tokens=4", "samples=2", "k=2", "n_boot=100"],
    "convert gqa": lambda line: ["eval.batches=1", "eval.prompts=2", "eval.new_tokens=4", "eval.speed_tokens=4",
                                 "eval.repeats=1", "eval.speed_batches=[1]"],
    "profile": lambda line: ["batch=2", "prompt_len=8", "new_tokens=4"],
    "bench inference": lambda line: ["eval_tokens=64", "seq_len=32", "prompt_len=8", "new_tokens=4", "batches=[1]",
                                     "repeats=1"],
    "bench attention": lambda line: ["min_len=32", "max_len=64", "repeats=1", "decode_calls=1", "check_max_len=64",
                                     "check_grads_max_len=64", "matmul_n=64"],
}

# (page, line prefix, reason): docs lines that cannot run here by nature. Keep it short.
SKIPPED = [
    ("model.md", "llmlab generate --model /path/to/local/hf-llama",
     "a placeholder for the reader's own HF folder (the README's `--model ./my-hf-model` line runs the same path)"),
]


def llmlab_lines(block: str) -> list[str]:
    """The `llmlab ...` lines of a bash block, comments cut, continuations joined."""
    lines, current = [], ""
    for raw in block.splitlines():
        text = re.sub(r"\s+#.*$", "", raw).strip() if not raw.lstrip().startswith("#") else ""
        current = f"{current} {text.rstrip(chr(92)).strip()}".strip()
        if text.endswith("\\"):
            continue
        if current.startswith("llmlab ") and not current.startswith("llmlab demo"):
            lines.append(current)
        current = ""
    return lines


def readme_commands() -> list[str]:
    """The `llmlab ...` lines of the bash block under the README's "## Commands"."""
    block = README.read_text(encoding="utf-8").split("## Commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return llmlab_lines(block)


def page_commands(page: str) -> list[str]:
    """The `llmlab ...` lines of every bash block of docs/<page>, in page order."""
    blocks = re.findall(r"^```bash\n(.*?)^```", (DOCS / page).read_text(encoding="utf-8"), re.S | re.M)
    return [line for block in blocks for line in llmlab_lines(block)]


DOCS_PAGES = sorted(p.name for p in DOCS.glob("*.md") if page_commands(p.name))


def words_of(argv: list[str]) -> str:
    two = " ".join(argv[:2])
    return two if two in TINY else argv[0]


def split_redirect(line: str) -> tuple[list[str], str | None]:
    """The arguments after `llmlab`, and the file a `> FILE` at the end sends stdout to."""
    argv = shlex.split(line)[1:]
    if ">" in argv:
        at = argv.index(">")
        return argv[:at] + argv[at + 2:], argv[at + 1]
    return argv, None


def written_by(line: str) -> set[str]:
    """The paths a line writes: its `--out` and its `> FILE`."""
    argv, redirect = split_redirect(line)
    out = {argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--out"}
    return out | ({redirect} if redirect else set())


def cli(*argv: str) -> None:
    assert main([*argv, "--quiet"]) == 0, argv


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _need(here: Path, name: str) -> Path:
    if not (here / name).exists():
        BROUGHT[name](here)
    return here / name


def _sft(here: Path) -> None:
    cli("sft", "--model", str(_need(here, "runs/pt")), "--out", str(here / "runs/sft"), *TINY_ALIGN)


def _hf_model(here: Path) -> None:
    hf = here / "hf" / "pt"
    if not hf.exists():
        cli("export-hf", "--model", str(_need(here, "runs/pt")), "--out", str(hf))
    shutil.copytree(hf, here / "my-hf-model")


# What a user brings (path as printed -> how to make it in the page's folder), made from what the
# earlier lines wrote where they did.
BROUGHT: dict[str, Callable[[Path], object]] = {
    "corpus.txt": lambda here: cli("data", "generate", "--kind", "pretrain", "--out", str(here / "corpus.txt"),
                                   "chars=20000"),
    "more.jsonl": lambda here: _write_jsonl(here / "more.jsonl", [{"text": f"Document {i}: Bea walked home."}
                                                                  for i in range(20)]),
    "held_out.txt": lambda here: (here / "held_out.txt").write_text("One morning Bea walked home.\nMy notes.\n"),
    "notes.txt": lambda here: (here / "notes.txt").write_text("Some notes.\nA second line, with ünïcode.\n"),
    "eval.jsonl": lambda here: cli("data", "generate", "--kind", "eval", "--out", str(here / "eval.jsonl"), "n=16"),
    "prefs.jsonl": lambda here: cli("data", "generate", "--kind", "prefs", "--out", str(here / "prefs.jsonl"), "n=16"),
    "responses.jsonl": lambda here: _write_jsonl(here / "responses.jsonl", [
        {"prompt": r["prompt"], "response": "42"} for r in _jsonl(_need(here, "eval.jsonl"))[:4]]),
    "my_prefs.jsonl": lambda here: shutil.copy(_need(here, "prefs.jsonl"), here / "my_prefs.jsonl"),
    "held_out_prefs.jsonl": lambda here: shutil.copy(_need(here, "prefs.jsonl"), here / "held_out_prefs.jsonl"),
    "prompts.jsonl": lambda here: _write_jsonl(here / "prompts.jsonl", [
        {"prompt": r["prompt"]} for r in _jsonl(_need(here, "prefs.jsonl"))[:4]]),
    "configs": lambda here: shutil.copytree(ROOT / "configs", here / "configs"),
    "runs/tok8k": lambda here: cli("tokenizer", "train", "--out", str(here / "runs/tok8k"), *TINY_TOKENIZER),
    "runs/tok-a": lambda here: cli("tokenizer", "train", "--out", str(here / "runs/tok-a"), *TINY_TOKENIZER),
    "runs/tok-b": lambda here: cli("tokenizer", "train", "--algo", "wordpiece", "--out", str(here / "runs/tok-b"),
                                   *TINY_TOKENIZER),
    "runs/pt": lambda here: cli("pretrain", "--out", str(here / "runs/pt"), *TINY_PRETRAIN),
    "runs/sft": _sft,
    "./my-hf-model": _hf_model,
}


def mentions(line: str, path: str) -> bool:
    return re.search(rf"(?<![\w./-]){re.escape(path)}(?![\w.-])", line) is not None


def bring_user_files(line: str, here: Path, written: set[str]) -> None:
    """Make what `line` reads that its page never writes (and is not there yet)."""
    for path in BROUGHT:
        if mentions(line, path) and path not in written and not (here / path).exists():
            BROUGHT[path](here)


def run_lines(lines: list[str], here: Path, monkeypatch: pytest.MonkeyPatch,
              capsys: pytest.CaptureFixture[str]) -> None:
    """Run a page's lines in order in `here`, at tiny size."""
    monkeypatch.chdir(here)
    written = set().union(*map(written_by, lines))
    for line in lines:
        bring_user_files(line, here, written)
        capsys.readouterr()
        monkeypatch.setattr("sys.stdin", io.StringIO("What is 2 + 3?\n/reset\n/exit\n"))
        argv, redirect = split_redirect(line)
        extra = TINY.get(words_of(argv), lambda line: [])(line)
        code = main([*argv, "--quiet", *extra] if "--print-config" not in argv else argv)
        out, err = capsys.readouterr()
        assert code == 0, f"{line}\n{err[-2000:]}"
        if redirect:
            assert out.strip(), f"{line}: nothing on stdout"
            (here / redirect).write_text(out, encoding="utf-8")


@pytest.mark.slow
def test_the_readme_command_block_runs_as_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    commands = readme_commands()
    assert len(commands) >= 30, commands
    run_lines(commands, tmp_path, monkeypatch, capsys)


def test_the_docs_pages_with_commands_and_the_skip_list_are_current() -> None:
    assert set(DOCS_PAGES) >= {"alignment.md", "attention.md", "data.md", "model.md", "tokenizers.md"}, DOCS_PAGES
    for page, prefix, _ in SKIPPED:
        assert any(line.startswith(prefix) for line in page_commands(page)), (page, prefix)


@pytest.mark.slow
@pytest.mark.parametrize("page", DOCS_PAGES)
def test_the_docs_command_lines_run_as_printed(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    skipped = [prefix for p, prefix, _ in SKIPPED if p == page]
    lines = [line for line in page_commands(page) if not any(line.startswith(s) for s in skipped)]
    assert lines, page
    run_lines(lines, tmp_path, monkeypatch, capsys)
