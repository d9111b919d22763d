"""`llmlab generate` and `llmlab chat` as a user meets them: what was cut from a long prompt, the chat's
own commands (never sent to the model), and bytes that are not UTF-8 on stdin."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from llmlab.context import Context
from llmlab.model import commands
from llmlab.model.config import ChatConfig, GenerateTextConfig


def test_generate_says_what_it_cut(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The tiny model has 128 positions; with max_new_tokens 8 a prompt keeps its last 120 tokens."""
    long = "word " * 400
    commands.generate(GenerateTextConfig(model=str(tiny_model_dir), prompt=long, max_new_tokens=8, device="cpu"),
                      Context(command="generate", quiet=True))
    err = capsys.readouterr().err
    assert "were cut so that it and max_new_tokens=8 fit the model's 128 positions" in err
    commands.generate(GenerateTextConfig(model=str(tiny_model_dir), prompt="word", max_new_tokens=8, device="cpu"),
                      Context(command="generate", quiet=True))
    assert "cut" not in capsys.readouterr().err


def test_chat_commands_are_not_sent_to_the_model(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    sent: list[list[int]] = []
    monkeypatch.setattr(commands, "_stream", lambda model, tok, ids, opts, gen: sent.append(ids) or "ok")
    monkeypatch.setattr(sys, "stdin", io.StringIO("/help\nhi\n/reset\n/nonsense\nhello\n/exit\nnever read\n"))
    assert commands.chat(ChatConfig(model=str(tiny_model_dir), device="cpu"), Context(command="chat")) == 0
    err = capsys.readouterr().err
    assert err.count("commands: /reset") == 2 and "(conversation reset)" in err and "unknown command /nonsense" in err
    assert len(sent) == 2  # "hi" and "hello": no command reached the model, nothing after /exit
    assert len(sent[1]) < len(sent[0]) + 5  # after /reset, "hello" starts a new conversation


def test_chat_survives_bytes_that_are_not_utf8(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[list[int]] = []
    monkeypatch.setattr(commands, "_stream", lambda model, tok, ids, opts, gen: sent.append(ids) or "ok")
    stdin = io.TextIOWrapper(io.BytesIO(b"caf\xe9 \xff\nstill here\n"), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    assert commands.chat(ChatConfig(model=str(tiny_model_dir), device="cpu"), Context(command="chat")) == 0
    assert len(sent) == 2
