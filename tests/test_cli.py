"""The `llmlab` command line (llmlab.cli) and the run folders its commands write (llmlab.runs).

The CLI is run two ways: in-process through `main([...])` (fast, and sees exceptions), and as
`python -m llmlab ...` in a subprocess (the real entry point: exit codes, stderr, import cost).
A user error must come out as exactly one stderr line `error: ...` and exit code 2.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

import llmlab
import llmlab.files
from llmlab.cli import COMMANDS, build_parser, main, parse_command_line
from llmlab.config import load_config, to_dict, to_yaml
from llmlab.data.config import GenerateConfig
from llmlab.runs import Run, default_run_dir, progress, start_run

HEAVY_MODULES = ("torch", "transformers", "datasets", "matplotlib", "numpy")


@pytest.fixture(autouse=True)
def _no_debug_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMLAB_DEBUG", raising=False)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `llmlab argv...` in-process; return (exit code, stdout, stderr)."""
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse exits itself for --help and --version
        code = 0 if e.code is None else int(e.code)
    out, err = capsys.readouterr()
    return code, out, err


def cli_subprocess(*argv: str, cwd: Path | None = None, env: dict[str, str] | None = None,
                   ) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "LLMLAB_DEBUG"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "llmlab", *argv], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=60)


def assert_one_error_line(code: int, out: str, err: str) -> str:
    assert code == 2, (code, out, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


# --- help and version ----------------------------------------------------------------------------


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "--help")
    assert code == 0
    assert "data" in out and "demo" in out
    code, out, _ = cli(capsys, "data", "--help")
    assert code == 0
    for name in ("generate", "score", "validate"):
        assert name in out


def test_help_lists_the_commands_subprocess() -> None:
    result = cli_subprocess("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: llmlab")
    assert "data" in result.stdout and "demo" in result.stdout
    assert result.stderr == ""


def test_every_command_is_reachable() -> None:
    assert [c.name for c in COMMANDS] == ["data generate", "data score", "data validate", "tokenizer train",
                                          "tokenizer encode", "tokenizer decode", "tokenizer stats",
                                          "tokenizer compare", "tokenizer sweep", "tokenizer extend", "pretrain",
                                          "generate", "chat", "serve", "review serve", "export-hf", "convert gqa",
                                          "viz attention", "attention explain", "profile", "bench attention",
                                          "bench inference", "sft", "rm train", "rm score",
                                          "dpo", "grpo", "rloo", "ppo", "hacking", "sample-prefs", "cai revise",
                                          "cai label", "cai judge-data", "eval-prefs", "eval", "feedback label",
                                          "feedback combine",
                                          "demo"]


@pytest.mark.parametrize("name", [c.name for c in COMMANDS])
def test_each_subcommand_help(capsys: pytest.CaptureFixture[str], name: str) -> None:
    code, out, err = cli(capsys, *name.split(), "--help")
    assert code == 0, err
    assert out.startswith(f"usage: llmlab {name}")
    for option in ("--config", "--print-config", "key=value"):
        assert option in out
    assert "example: llmlab" in out


@pytest.mark.parametrize("argv", [[], ["data"]])
def test_a_group_without_a_command_prints_its_help(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = cli(capsys, *argv)
    assert code == 0 and err == ""
    assert out.startswith("usage: llmlab")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "--version")
    assert code == 0
    assert out.strip() == f"llmlab {llmlab.__version__}"


# --- user errors: one line, exit 2 ---------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["nope"],  # unknown command
        ["data", "nope"],  # unknown subcommand
        ["--bogus"],  # bad flag at the top
        ["data", "generate", "--bogus"],  # bad flag of a command
        ["data", "generate", "--kind"],  # flag without its value
        ["data", "generate", "--print-config", "--kind", "nope"],  # flag value of the wrong choice
        ["data", "generate", "--print-config", "n=abc"],  # wrong type
        ["data", "generate", "--print-config", "novalue"],  # malformed override
        ["data", "generate", "--print-config", "prefs.label_noise=0.9"],  # cross-field check
        ["data", "score"],  # required input missing (--print-config shows the settings without it)
    ],
)
def test_user_error_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert_one_error_line(*cli(capsys, *argv))


def test_unknown_command_subprocess() -> None:
    result = cli_subprocess("nope")
    line = assert_one_error_line(result.returncode, result.stdout, result.stderr)
    assert "nope" in line


def test_unknown_config_key_names_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    line = assert_one_error_line(*cli(capsys, "data", "generate", "--print-config", "world.n_peple=5"))
    assert "'world.n_peple'" in line and "'world.n_people'" in line


def test_unknown_config_key_subprocess() -> None:
    result = cli_subprocess("data", "generate", "--print-config", "sed=3")
    line = assert_one_error_line(result.returncode, result.stdout, result.stderr)
    assert "'sed'" in line and "'seed'" in line


def test_missing_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    line = assert_one_error_line(*cli(capsys, "data", "generate", "--config", "missing.yaml"))
    assert "missing.yaml" in line and "not found" in line


@pytest.mark.parametrize("argv", [["--debug", "data", "generate", "bad=1"], ["data", "generate", "--debug", "bad=1"]])
def test_debug_flag_shows_the_traceback(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, _, err = cli(capsys, *argv)
    assert code == 2
    assert "Traceback (most recent call last)" in err
    assert "ConfigError" in err
    assert err.splitlines()[-1].startswith("error: unknown config key 'bad'")


@pytest.mark.parametrize("value, shown", [("1", True), ("0", False), ("", False)])
def test_debug_environment_variable(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                    value: str, shown: bool) -> None:
    monkeypatch.setenv("LLMLAB_DEBUG", value)
    code, _, err = cli(capsys, "data", "generate", "bad=1")
    assert code == 2
    assert ("Traceback (most recent call last)" in err) is shown


def test_debug_environment_variable_subprocess() -> None:
    result = cli_subprocess("data", "generate", "bad=1", env={"LLMLAB_DEBUG": "1"})
    assert result.returncode == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: ")


# --- --print-config and precedence ---------------------------------------------------------------


def test_print_config(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "data", "generate", "--print-config", "--kind", "prefs", "--n", "5", "seed=3")
    assert code == 0, err
    printed = yaml.safe_load(out)
    assert (printed["kind"], printed["n"], printed["seed"]) == ("prefs", 5, 3)
    assert printed == to_dict(load_config(GenerateConfig, None, ["kind=prefs", "n=5", "seed=3"]))


def test_print_config_subprocess() -> None:
    result = cli_subprocess("data", "generate", "--print-config", "--kind", "prefs", "--n", "5", "seed=3")
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert (printed["kind"], printed["n"], printed["seed"]) == ("prefs", 5, 3)
    assert printed["world"]["n_people"] == GenerateConfig().world.n_people


@pytest.mark.parametrize("command", [c.name for c in COMMANDS])
def test_every_command_prints_its_config_before_its_required_settings(command: str,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The README: every command takes --print-config. Required settings (--model, --tokenizer, --text)
    are checked when the command runs, not when its settings are shown; unknown keys still are."""
    code, out, err = cli(capsys, *command.split(), "--print-config")
    assert code == 0, err
    assert isinstance(yaml.safe_load(out), dict)
    code, _, err = cli(capsys, *command.split(), "--print-config", "no_such_key=1")
    assert code == 2 and "no_such_key" in err


def test_yaml_then_flags_then_overrides(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "gen.yaml"
    path.write_text("kind: sft\nn: 9\nseed: 7\nworld: {n_people: 30}\n", encoding="utf-8")
    code, out, err = cli(capsys, "data", "generate", "--config", str(path), "--print-config",
                         "--seed", "1", "--n", "4", "n=6")
    assert code == 0, err
    printed = yaml.safe_load(out)
    assert printed["kind"] == "sft"  # YAML over default
    assert printed["world"]["n_people"] == 30  # YAML, nested
    assert printed["seed"] == 1  # flag over YAML
    assert printed["n"] == 6  # override over flag


def test_flag_value_for_a_str_field_keeps_the_raw_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "data", "generate", "--print-config", "--out", "007")
    assert code == 0, err
    assert yaml.safe_load(out)["out"] == "007"


def test_flag_value_for_an_optional_str_field_keeps_the_raw_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "data", "score", "--print-config", "--input", "r.jsonl", "--out", "2024")
    assert code == 0, err
    assert yaml.safe_load(out)["out"] == "2024"


# --- overrides anywhere on the line ----------------------------------------------------------------


def printed_config(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out, err = cli(capsys, *argv, "--print-config")
    assert code == 0, err
    return yaml.safe_load(out)


def test_overrides_after_a_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """Used to fail with "unrecognized arguments: seed=1": argparse takes positionals in one run."""
    printed = printed_config(capsys, "data", "generate", "n=5", "--kind", "eval", "seed=1")
    assert (printed["n"], printed["kind"], printed["seed"]) == (5, "eval", 1)


def test_overrides_keep_their_order_across_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert printed_config(capsys, "data", "generate", "n=5", "--kind", "eval", "n=7")["n"] == 7
    assert printed_config(capsys, "data", "generate", "n=7", "--kind", "eval", "--seed", "2", "n=5")["n"] == 5


README_DPO = ["dpo", "--model", "runs/sft", "--input", "runs/onpolicy/prefs.jsonl", "rpo_alpha=1",
              "--out", "runs/dpo-onpolicy"]


def test_list_flag_stops_at_a_config_override() -> None:
    """The README's line: `--input` (nargs="+") used to swallow rpo_alpha=1 as a second file."""
    args = parse_command_line(README_DPO)
    assert args._command.name == "dpo"
    assert getattr(args, "_flag_data.input") == ["runs/onpolicy/prefs.jsonl"]
    assert args.overrides == ["rpo_alpha=1"]
    assert args.out == "runs/dpo-onpolicy"


def test_readme_dpo_line_resolves(capsys: pytest.CaptureFixture[str]) -> None:
    printed = printed_config(capsys, *README_DPO)
    assert printed["data"]["input"] == ["runs/onpolicy/prefs.jsonl"]
    assert printed["rpo_alpha"] == 1.0


def test_list_flag_keeps_an_existing_file_named_like_an_override(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("rpo_alpha=1").write_text("{}\n", encoding="utf-8")
    args = parse_command_line(["dpo", "--model", "m", "--input", "a.jsonl", "rpo_alpha=1", "beta=0.2"])
    assert getattr(args, "_flag_data.input") == ["a.jsonl", "rpo_alpha=1"]
    assert args.overrides == ["beta=0.2"]


def test_list_flag_keeps_values_whose_key_is_not_a_config_key() -> None:
    """`--language-input en=a.txt`: LANG=FILE, not an override (`en` is no config key)."""
    args = parse_command_line(["tokenizer", "train", "--language-input", "en=a.txt", "fr=b.txt",
                               "vocab_size=300", "--quiet"])
    assert args._flag_language_input == ["en=a.txt", "fr=b.txt"]
    assert args.overrides == ["vocab_size=300"]


def test_misspelt_key_after_a_list_flag_is_reported_as_a_key(capsys: pytest.CaptureFixture[str]) -> None:
    line = assert_one_error_line(*cli(capsys, "tokenizer", "train", "--input", "a.txt", "vocab=300",
                                      "--print-config"))
    assert "unknown config key 'vocab'; did you mean 'vocab_size'?" in line


def test_list_flag_with_only_an_override_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    line = assert_one_error_line(*cli(capsys, "tokenizer", "train", "--input", "vocab_size=300", "--print-config"))
    assert "--input" in line and "vocab_size=300" in line


@pytest.mark.parametrize("argv", [
    ["data", "generate", "--kind", "eval", "stray"],  # a word that is no override
    ["data", "generate", "--kind", "eval", "n=1", "--nope"],
    ["data", "generate", "--kind", "eval", "=3"],
])
def test_leftovers_that_are_not_overrides_are_errors(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert_one_error_line(*cli(capsys, *argv, "--print-config"))


# --- no abbreviated flags --------------------------------------------------------------------------


@pytest.mark.parametrize("argv, wrong", [
    (["data", "generate", "--se", "1"], "--se"),
    (["data", "generate", "--kin", "eval"], "--kin"),
    (["pretrain", "--max-step", "5"], "--max-step"),  # was silently --max-steps
    (["dpo", "--model", "m", "--max-step=5"], "--max-step=5"),
    (["tokenizer", "train", "--vocab", "300"], "--vocab"),
    (["--deb", "data", "generate"], "--deb"),
])
def test_abbreviated_flags_are_errors(capsys: pytest.CaptureFixture[str], argv: list[str], wrong: str) -> None:
    line = assert_one_error_line(*cli(capsys, *argv, "--print-config"))
    assert wrong in line


def test_no_parser_allows_abbreviations() -> None:
    seen = 0
    todo = [build_parser()]
    while todo:
        parser = todo.pop()
        assert parser.allow_abbrev is False, parser.prog
        seen += 1
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())
    assert seen > len(COMMANDS)  # every command, its groups and the top


# --- --out that is a file ----------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["tokenizer", "train", "--vocab-size", "300"],
    ["tokenizer", "stats", "--tokenizer", "tok"],
    ["pretrain"],
    ["demo"],
    ["export-hf", "--model", "m"],
])
@pytest.mark.parametrize("under", [False, True])
def test_out_that_is_a_file_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str],
                                        under: bool) -> None:
    """Used to be a FileExistsError traceback from mkdir; now refused before the command runs."""
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me\n", encoding="utf-8")
    out = existing / "run" if under else existing
    line = assert_one_error_line(*cli(capsys, *argv, "--out", str(out)))
    expected = f"--out {out}: {existing} is a file" if under else f"--out {out}: is a file, not a folder"
    assert line == f"error: {expected}"
    assert existing.read_text(encoding="utf-8") == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# --- OS errors the user can fix: disk full ---------------------------------------------------------


class _FullFile:
    """A file whose writes fail as on a full disk (no filename, as the real OSError has none)."""

    def __init__(self, f: Any) -> None:
        self._f = f

    def __enter__(self) -> _FullFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()

    def write(self, data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def fill_disk(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make `llmlab.files.atomic_open` fail with ENOSPC at the first write to a file called `name`."""
    temps: dict[int, str] = {}

    def mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        fd, tmp = tempfile.mkstemp(*args, **kwargs)
        temps[fd] = tmp
        return fd, tmp

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        f = os.fdopen(fd, *args, **kwargs)
        return _FullFile(f) if Path(temps.get(fd, "")).name.startswith(f".{name}.") else f

    # only llmlab.files sees the full disk: its `os` and `tempfile` names are swapped, not the modules
    monkeypatch.setattr(llmlab.files, "os", SimpleNamespace(**{**vars(os), "fdopen": fdopen}))
    monkeypatch.setattr(llmlab.files, "tempfile", SimpleNamespace(mkstemp=mkstemp))


def test_disk_full_in_data_generate(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "prefs.jsonl"
    out.write_text("the previous file\n", encoding="utf-8")
    fill_disk(monkeypatch, "prefs.jsonl")
    line = assert_one_error_line(*cli(capsys, "data", "generate", "--kind", "prefs", "--n", "20", "--out",
                                      str(out), "--quiet"))
    assert line == f"error: {out}: no space left on device"
    assert out.read_text(encoding="utf-8") == "the previous file\n"  # atomic: old file intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prefs.jsonl"]  # no temp file left


def test_disk_full_in_tokenizer_train(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat\n" * 50, encoding="utf-8")
    fill_disk(monkeypatch, "tokenizer.json")
    out = tmp_path / "run"
    line = assert_one_error_line(*cli(capsys, "tokenizer", "train", "--input", str(corpus), "--vocab-size",
                                      "300", "--out", str(out), "--quiet", "workers=1"))
    assert line == f"error: {out / 'tokenizer.json'}: no space left on device"
    assert not (out / "tokenizer.json").exists()
    assert [p.name for p in tmp_path.rglob("*.tmp")] == []


def test_disk_full_with_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fill_disk(monkeypatch, "e.jsonl")
    code, _, err = cli(capsys, "--debug", "data", "generate", "--n", "3", "--out", str(tmp_path / "e.jsonl"))
    assert code == 2 and "Traceback" in err and "no space left on device" in err.splitlines()[-1]


@pytest.mark.parametrize("code, reason", [(errno.EACCES, "permission denied"), (errno.EROFS, "read-only file system"),
                                          (errno.EDQUOT, "disk quota exceeded")])
def test_os_errors_the_user_can_fix_are_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                                 code: int, reason: str) -> None:
    def failing(*args: Any, **kwargs: Any) -> None:
        raise OSError(code, os.strerror(code), "runs/x/config.yaml")

    monkeypatch.setattr("llmlab.cli.dispatch", failing)
    assert assert_one_error_line(*cli(capsys, "demo")) == f"error: runs/x/config.yaml: {reason}"


def test_other_os_errors_keep_their_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the errors a user can fix become one line; anything else is a bug and must show."""
    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr("llmlab.cli.dispatch", broken)
    with pytest.raises(OSError, match="Invalid argument"):
        main(["data", "generate", "--print-config"])


# --- start-up cost -------------------------------------------------------------------------------


def test_help_does_not_import_heavy_modules() -> None:
    script = f"""
import contextlib, io, json, sys
import llmlab.cli
llmlab.cli.build_parser()
with contextlib.redirect_stdout(io.StringIO()):
    try:
        llmlab.cli.main(["--help"])
    except SystemExit:
        pass
    llmlab.cli.main(["data", "generate", "--print-config"])
print(json.dumps([m for m in {HEAVY_MODULES!r} if m in sys.modules]))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def imported_modules(*argv: str) -> list[str]:
    """Every module `python -X importtime -m llmlab argv...` imports, from the timing lines on stderr:

        import time: self [us] | cumulative | imported package
        import time:       619 |       3959 |   pathlib
    """
    env = {k: v for k, v in os.environ.items() if k != "LLMLAB_DEBUG"}
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "llmlab", *argv], capture_output=True,
                            text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")]
    return [name for name in lines if name != "imported package"]


@pytest.mark.parametrize("argv", [("--help",), ("data", "generate", "--help"), ("tokenizer", "train", "--help")])
def test_help_imports_no_heavy_module(argv: tuple[str, ...]) -> None:
    """`llmlab --help` must start in well under a second: no torch, NumPy, transformers or matplotlib
    (each costs 0.1-2 s), through the real entry point `python -m llmlab`. Checked by what is imported,
    not by a wall time, which a loaded CI machine would make flaky."""
    modules = imported_modules(*argv)
    assert "llmlab.cli" in modules  # the timing lines were read
    heavy = sorted({m for m in modules if m.split(".")[0] in HEAVY_MODULES})
    assert heavy == [], f"llmlab {' '.join(argv)} imports {heavy}"


def test_build_parser_is_cheap_to_call_twice() -> None:
    assert build_parser().format_help() == build_parser().format_help()


# --- run folders (llmlab.runs) -------------------------------------------------------------------


@pytest.fixture
def gen_cfg() -> GenerateConfig:
    return load_config(GenerateConfig, None, ["kind=prefs", "n=5", "tasks.families=arithmetic,reverse"])


def test_start_run_writes_config_and_empty_metrics(tmp_path: Path, gen_cfg: GenerateConfig) -> None:
    run = start_run("data generate", gen_cfg, out=tmp_path / "run", quiet=True)
    assert run.dir == tmp_path / "run"
    text = (run.dir / "config.yaml").read_text(encoding="utf-8")
    assert text == to_yaml(gen_cfg)
    assert yaml.safe_load(text) == to_dict(gen_cfg)
    assert load_config(GenerateConfig, run.dir / "config.yaml") == gen_cfg  # the saved config reloads
    assert (run.dir / "metrics.jsonl").read_text(encoding="utf-8") == ""


def test_start_run_default_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gen_cfg: GenerateConfig) -> None:
    monkeypatch.chdir(tmp_path)
    run = start_run("data generate", gen_cfg, quiet=True)
    assert run.dir.parent == Path("runs")
    assert run.dir.name.startswith("data-generate-")
    assert (tmp_path / run.dir / "config.yaml").is_file()


def test_metrics_appends_json_lines(tmp_path: Path, gen_cfg: GenerateConfig) -> None:
    run = start_run("x", gen_cfg, out=tmp_path / "run", quiet=True)
    run.metrics(1, loss=0.5)
    run.metrics(2, loss=0.25, note="é")
    rows = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert [r["loss"] for r in rows] == [0.5, 0.25]
    assert rows[1]["note"] == "é"
    assert all(isinstance(r["time"], float) for r in rows)


def test_log_appends_and_echoes_unless_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = Run(dir=tmp_path)
    run.log("first")
    quiet = Run(dir=tmp_path, quiet=True)
    quiet.log("second")
    lines = (tmp_path / "log.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("] first") and lines[1].endswith("] second")
    assert capsys.readouterr().err == "first\n"


def test_run_path_creates_parents(tmp_path: Path) -> None:
    p = Run(dir=tmp_path).path("samples/step1.txt")
    assert p == tmp_path / "samples" / "step1.txt"
    assert p.parent.is_dir()


def test_progress_yields_every_item_when_disabled(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert list(progress(range(5), quiet=True)) == [0, 1, 2, 3, 4]
    assert list(progress(iter("abc"), desc="x")) == ["a", "b", "c"]  # stderr is not a TTY under pytest
    assert list(Run(dir=tmp_path, quiet=True).progress(range(3), total=3)) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_default_run_dir_adds_a_suffix_when_the_folder_exists(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20240102-030405")
    first = default_run_dir("data generate", root=tmp_path)
    assert first == tmp_path / "data-generate-20240102-030405"
    assert not first.exists()  # only a name: start_run creates it
    first.mkdir()
    second = default_run_dir("data generate", root=tmp_path)
    assert second == tmp_path / "data-generate-20240102-030405-2"
    second.mkdir()
    assert default_run_dir("data generate", root=tmp_path).name == "data-generate-20240102-030405-3"
