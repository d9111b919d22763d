"""train.checkpoint.run_or_resume: a multi-run command's stages keep their own status."""

from dataclasses import dataclass

import pytest

from llmlab.runs import outcome, run_status, start_run
from llmlab.train.checkpoint import run_or_resume


@dataclass(frozen=True)
class Cfg:
    resume: str = ""


def test_a_finished_stage_stays_finished_when_the_command_is_interrupted_later(tmp_path):
    calls = []

    def train(cfg, *, out, quiet):
        calls.append((cfg.resume, out))
        return start_run("x", cfg, out=out, quiet=True).dir

    with pytest.raises(KeyboardInterrupt), outcome():
        run_or_resume(tmp_path / "a", Cfg(), train, log=print, quiet=True)
        assert run_status(tmp_path / "a") == "finished"  # at the stage's end, not the command's
        run_or_resume(tmp_path / "b", Cfg(), train, log=print, quiet=True)
        raise KeyboardInterrupt
    assert run_status(tmp_path / "a") == "finished" and run_status(tmp_path / "b") == "finished"
    logged = []
    assert run_or_resume(tmp_path / "a", Cfg(), train, log=logged.append, quiet=True) == tmp_path / "a"
    assert len(calls) == 2 and logged == ["a: finished before, kept"]


def test_a_failed_stage_is_marked_failed_and_runs_again(tmp_path):
    def broken(cfg, *, out, quiet):
        start_run("x", cfg, out=out, quiet=True)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run_or_resume(tmp_path / "a", Cfg(), broken, log=print, quiet=True)
    assert run_status(tmp_path / "a") == "failed"
    folder = run_or_resume(tmp_path / "a", Cfg(), lambda cfg, out, quiet: start_run("x", cfg, out=out).dir,
                           log=print, quiet=True)
    assert folder == tmp_path / "a"


def test_the_note_is_logged_only_when_the_stage_runs(tmp_path):
    logged = []

    def train(cfg, *, out, quiet):
        return start_run("x", cfg, out=out, quiet=True).dir

    run_or_resume(tmp_path / "a", Cfg(), train, log=logged.append, quiet=True, note="a: starting")
    run_or_resume(tmp_path / "a", Cfg(), train, log=logged.append, quiet=True, note="a: starting")
    assert logged == ["a: starting", "a: finished before, kept"]
