"""`llmlab serve` as a user starts it: a port in use or a bad folder is one line and exit status 2, and
the real command (a subprocess) answers the `openai` client and stops cleanly on Ctrl-C."""

from __future__ import annotations

import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import subprocess_environment
from llmlab.cli import main


def test_a_port_in_use_is_one_line_and_exit_2(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--model", str(tiny_model_dir), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: cannot listen on 127.0.0.1:{port}: the port is in use (another server?); choose " \
                  "another with --port\n"


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "/nonexistent/model"], "no such model folder"),
    (["--model", "m", "--port", "70000"], "port must be in [0, 65535]"),
    (["--model", "m", "--host", "no.such.host.invalid"], "--host no.such.host.invalid: not an address"),
    (["--port", "0"], "model is required"),
])
def test_bad_settings_are_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "0", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


@pytest.mark.slow  # a fresh interpreter imports torch and FastAPI: 5 s idle, 30 s on a busy machine
def test_the_command_serves_the_openai_client_and_stops_on_ctrl_c(tiny_model_dir: Path) -> None:
    import openai

    proc = subprocess.Popen([sys.executable, "-m", "llmlab", "serve", "--model", str(tiny_model_dir), "--port", "0",
                             "--name", "tiny", "--device", "cpu"], env=subprocess_environment(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        line = ""
        while "serving" not in line:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no 'serving ... at URL' line"
            if select.select([proc.stderr], [], [], 0.5)[0]:
                line = proc.stderr.readline()
        url = line.split(" at ")[1].split()[0]  # serving 'tiny' (DIR) at http://127.0.0.1:PORT/v1 (...)
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=30)
        r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
        assert r.choices[0].finish_reason in ("stop", "length")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert proc.stderr.read() == "stopped\n"  # a graceful shutdown, no traceback
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
