"""The review page's HTTP API and agreement page, served by uvicorn on a free port in this process and
spoken to over real HTTP; and `llmlab review serve`'s refusals of bad input (one line, exit 2, nothing
written). The page itself, in a browser, is tests/serve/test_review_browser.py."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llmlab.cli import main
from llmlab.serve.review_log import LabelLog, Pair, labels_path

XSS = "<script>alert(1)</script><img src=x onerror=alert(2)>"
PAIRS = [Pair(f"{XSS} prompt {i}", f"a{i}", f"b{i}", given=True) for i in range(4)]
Request = Callable[..., tuple[int, Any, dict[str, str]]]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Request, LabelLog]]:
    import uvicorn

    from llmlab.serve.commands import bind
    from llmlab.serve.review_app import create_review_app

    log = LabelLog(tmp_path / "prefs.jsonl", PAIRS, seed=3)
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_review_app(log, {"<b>judge</b>": {0: "b", 1: "a"}}),
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)

    def request(method: str, path: str, body: Any = None) -> tuple[int, Any, dict[str, str]]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body),
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read().decode()
            is_json = r.getheader("content-type", "").startswith("application/json")
            return r.status, json.loads(data) if is_json else data, {k.lower(): v for k, v in r.getheaders()}
        finally:
            conn.close()

    try:
        yield request, log
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        log.close()


def test_label_undo_and_refusals_over_http(served: tuple[Request, LabelLog]) -> None:
    request, log = served
    status, state, _ = request("GET", "/api/state")
    assert status == 200 and (state["total"], state["labelled"]) == (4, 0)
    shown = log.shown(0)
    left = PAIRS[0].a if shown == "ab" else PAIRS[0].b
    assert state["pair"] == {"index": 0, "prompt": PAIRS[0].prompt, "left": left,
                             "right": PAIRS[0].b if left == PAIRS[0].a else PAIRS[0].a}
    status, state, _ = request("POST", "/api/label", {"pair": 0, "choice": "left"})
    assert status == 200 and state["labelled"] == 1 and state["pair"]["index"] == 1
    [row] = [json.loads(x) for x in labels_path(log.out).read_text().splitlines()]
    assert (row["label"], row["shown"], row["chosen"]) == (shown[0], shown, left)  # on disk before the answer
    status, body, _ = request("POST", "/api/label", {"pair": 0, "choice": "right"})  # a second tab, stale
    assert status == 409 and body == {"error": "pair 0 is not the current pair (1)"}
    status, body, _ = request("POST", "/api/label", {"pair": 1, "choice": "a"})
    assert status == 422 and log.current() == 1
    status, state, _ = request("POST", "/api/undo")
    assert status == 200 and state["labelled"] == 0 and state["pair"]["index"] == 0
    status, body, _ = request("POST", "/api/undo")
    assert status == 409 and body == {"error": "nothing to undo"}
    for i, choice in enumerate(["tie", "skip", "right", "left"]):
        assert request("POST", "/api/label", {"pair": i, "choice": choice})[0] == 200
    status, state, _ = request("GET", "/api/state")
    assert state["pair"] is None and state["counts"]["tie"] == 1 and state["counts"]["skip"] == 1


def test_a_full_disk_is_reported_and_nothing_recorded(served: tuple[Request, LabelLog],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from llmlab.serve import review_log

    request, log = served

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(review_log.os, "write", full)
    status, body, _ = request("POST", "/api/label", {"pair": 0, "choice": "tie"})
    assert status == 500 and body == {"error": f"not saved: No space left on device ({log.labels})"}
    monkeypatch.undo()
    assert log.rows == [] and labels_path(log.out).read_bytes() == b""
    assert request("POST", "/api/label", {"pair": 0, "choice": "tie"})[0] == 200


def test_the_page_and_its_assets_with_their_security_headers(served: tuple[Request, LabelLog]) -> None:
    request, _ = served
    status, page, headers = request("GET", "/")
    assert status == 200 and '<script src="/static/review.js" defer></script>' in page
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    status, script, headers = request("GET", "/static/review.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript") and "textContent" in script
    assert ".innerHTML" not in script and "insertAdjacentHTML" not in script
    assert request("GET", "/static/review_log.py")[0] == 404
    assert request("GET", "/static/..%2Freview_log.py")[0] == 404


def test_the_agreement_page_escapes_what_the_files_hold(served: tuple[Request, LabelLog]) -> None:
    request, log = served
    log.add(0, "a")
    log.add(1, "a")
    status, page, headers = request("GET", "/agreement")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "<script>alert" not in page and "<img src=x" not in page and "<b>judge" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;b&gt;judge&lt;/b&gt;" in page
    # the pairs file's own preference (chosen = a): both agree; the judge said b then a: one of two
    assert "<tr><td>pairs file (chosen)</td><td>2</td><td>1.000</td>" in page
    assert "<tr><td>&lt;b&gt;judge&lt;/b&gt;</td><td>2</td><td>0.500</td>" in page
    assert "gold: not shown, the prompts are not all task-world prompts" in page


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_a_malformed_pairs_line_is_one_line_exit_2_and_nothing_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "p", "a": "x", "b": "y"}\n{"prompt": "p", "a": "x"}\n')
    before = _files(tmp_path)
    assert main(["review", "serve", "--pairs", str(pairs), "--out", str(tmp_path / "prefs.jsonl"), "--port", "0"]) == 2
    assert capsys.readouterr().err == f"error: {pairs}:2: missing key 'b' (a pair is {{prompt, a, b}} or " \
                                      "{prompt, chosen, rejected})\n"
    assert _files(tmp_path) == before


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: ["--compare", f"llm={d / 'judge.jsonl'}"], "judge.jsonl:1: expected 'a' and 'b'"),
    (lambda d: ["--compare", "llm"], "--compare 'llm': expected NAME=LABELS.jsonl"),
    (lambda d: ["--out", str(d / "mine.jsonl")], "mine.jsonl exists but"),
    (lambda d: ["--port", "70000"], "port must be in [0, 65535]"),
    (lambda d: ["--out", str(d / "pairs.jsonl")], "out must not be the pairs file"),
])
def test_bad_settings_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   make: Callable[[Path], list[str]], message: str) -> None:
    (tmp_path / "pairs.jsonl").write_text('{"prompt": "p", "chosen": "x", "rejected": "y"}\n')
    (tmp_path / "judge.jsonl").write_text('{"prompt": "p", "label": "a"}\n')
    (tmp_path / "mine.jsonl").write_text('{"prompt": "p", "chosen": "x", "rejected": "y"}\n')
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    argv = ["review", "serve", "--pairs", str(tmp_path / "pairs.jsonl"), "--out", str(tmp_path / "prefs.jsonl"),
            "--port", "0", *make(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if not p.name.endswith(".lock")} == before


def test_a_port_in_use_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pairs.jsonl").write_text('{"prompt": "p", "a": "x", "b": "y"}\n')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["review", "serve", "--pairs", str(tmp_path / "pairs.jsonl"), "--out",
                     str(tmp_path / "prefs.jsonl"), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in capsys.readouterr().err
    assert not (tmp_path / "prefs.jsonl").exists()
