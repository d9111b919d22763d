"""The endpoint judge against scripted OpenAI-compatible servers on 127.0.0.1 started by each test (a fair
judge, one that always prefers the first position, one that answers garbage, one that is down, slow or
failing), and against the real `llmlab serve` on the tiny model. Nothing leaves the machine."""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from llmlab.align.feedback.endpoint import EndpointJudge
from llmlab.align.feedback.judges import build_judge, position_consistency
from llmlab.errors import UserError
from serve.conftest import live  # noqa: F401  (the real `llmlab serve` on the tiny model, in this process)

Script = Callable[[dict[str, Any]], "str | bytes | int"]  # request body -> answer text, raw body, or HTTP status


def chat_completion(text: str) -> bytes:
    return json.dumps({"id": "x", "object": "chat.completion", "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}).encode()


@contextmanager
def scripted_server(script: Script) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(base URL, requests seen) of a chat-completions server on a free port that answers by `script`."""
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
            answer = script(body)
            status, data = (answer, b'{"error": "boom"}') if isinstance(answer, int) else (
                200, answer if isinstance(answer, bytes) else chat_completion(answer))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            # a client that gave up on the server (the judge stopping at an error) is not the server's error;
            # socketserver's default would print its traceback into the stderr the tests read
            if not isinstance(sys.exc_info()[1], ConnectionError):
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()


def shown(body: dict[str, Any]) -> tuple[str, str]:
    """(answer A, answer B) as the judge showed them."""
    m = re.search(r"\[Answer A\]\n(.*)\n\n\[Answer B\]\n(.*)", body["messages"][-1]["content"], re.DOTALL)
    assert m is not None
    return m.group(1), m.group(2)


def prefers_correct(body: dict[str, Any]) -> str:
    """A fair judge: the answer that says "correct" wins, whichever position it is in."""
    a, b = shown(body)
    winner = "A" if "correct" in a else "B" if "correct" in b else "tie"
    return f"Verdict: {winner}\nRationale: {winner} says correct."


def first_biased(body: dict[str, Any]) -> str:
    """Prefers the correct answer, but when neither is, the one shown first (a pure position bias)."""
    a, b = shown(body)
    return f"verdict: [{'B' if 'correct' in b and 'correct' not in a else 'A'}]\nrationale: first is best"


PROMPTS = ["q1", "q2", "q3", "q4"]
A = ["correct one", "meh", "also meh", "wrong"]
B = ["wrong", "correct two", "still meh", "other"]


def test_a_fair_judge_is_position_consistent_and_sends_the_rubric(tmp_path: Path) -> None:
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Prefer answers that say correct.\n")
    with scripted_server(prefers_correct) as (url, seen):
        judge = build_judge(f"endpoint={url},model=judge-7b,rubric={rubric},workers=2")
        verdicts = judge.compare(PROMPTS, A, B)
    assert [v.p_a for v in verdicts] == [1.0, 0.0, 0.5, 0.5]
    assert all(v.consistent for v in verdicts) and position_consistency(verdicts) == 1.0
    assert verdicts[0].rationale == "A says correct. | swapped: B says correct."
    assert len(seen) == 8 and {r["path"] for r in seen} == {"/v1/chat/completions"}
    assert all(r["model"] == "judge-7b" and r["auth"] is None for r in seen)
    system = seen[0]["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("Prefer answers that say correct.")
    assert "Verdict: A" in system["content"]
    assert judge.name == "endpoint:judge-7b" and judge.unparseable == 0 and judge.asked == 8


def test_both_orders_cancel_a_first_position_bias() -> None:
    with scripted_server(first_biased) as (url, _):
        judge = EndpointJudge(url)
        once = judge.compare_once(PROMPTS, A, B)
        verdicts = judge.compare(PROMPTS, A, B)
    assert [v.p_a for v in once] == [1.0, 0.0, 1.0, 1.0]  # the bias, one order: "meh" beats "still meh"
    assert [v.p_a for v in verdicts] == [1.0, 0.0, 0.5, 0.5]  # cancelled: no preference where it was bias
    assert [v.consistent for v in verdicts] == [True, True, False, False]
    assert position_consistency(verdicts) == 0.5
    assert verdicts[0].rationale == "first is best | swapped: first is best"


def test_ratings_and_a_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUDGE_KEY", "sk-secret-123")
    with scripted_server(lambda body: f"Rating: {len(body['messages'][-1]['content']) % 10 + 1}\nRationale: ok") \
            as (url, seen):
        judge = build_judge(f"endpoint={url},key_env=JUDGE_KEY")
        scores = judge.score(["p", "p"], ["short", "a longer answer"])
    want = [len(f"[Question]\np\n\n[Answer]\n{r}") % 10 + 1 for r in ("short", "a longer answer")]
    assert [s.value for s in scores] == want and scores[0].rationale == "ok"
    assert all(r["auth"] == "Bearer sk-secret-123" for r in seen)
    assert "sk-secret" not in repr(vars(judge))  # the key is read when sending, never kept or printed
    monkeypatch.delenv("JUDGE_KEY")
    with pytest.raises(UserError, match=r"environment variable JUDGE_KEY \(key_env\) is not set"):
        build_judge(f"endpoint={url},key_env=JUDGE_KEY")


def test_an_unparseable_answer_is_retried_once_then_no_preference_and_counted() -> None:
    calls: dict[str, int] = {}

    def flaky(body: dict[str, Any]) -> str | bytes:
        a, b = shown(body)
        key = a + b
        calls[key] = calls.get(key, 0) + 1
        if "q4" in body["messages"][-1]["content"]:
            return b"<html>not json</html>"  # never parseable, not even a chat completion
        return "Hmm, let me think." if calls[key] == 1 else prefers_correct(body)  # garbage once, then fine

    with scripted_server(flaky) as (url, seen):
        judge = EndpointJudge(url, workers=1)
        verdicts = judge.compare(PROMPTS, A, B)
    assert [v.p_a for v in verdicts] == [1.0, 0.0, 0.5, 0.5]
    assert verdicts[3].rationale.startswith("unparseable") and "swapped: unparseable" in verdicts[3].rationale
    assert len(seen) == 16 and judge.unparseable == 2 and judge.asked == 8  # each of 8 asked twice


def test_a_judge_answering_mostly_garbage_is_a_user_error() -> None:
    with scripted_server(lambda body: "I like both of them!") as (url, seen), pytest.raises(UserError) as e:
        EndpointJudge(url, model="base-lm").compare(PROMPTS, A, B)
    assert str(e.value).startswith(f"judge endpoint {url}: 4 of 4 answers were unparseable")
    assert "'base-lm'" in str(e.value) and len(seen) == 8


def test_a_down_slow_or_failing_endpoint_is_one_line_naming_the_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(UserError, match=f"^judge endpoint {re.escape(down)} is unreachable \\(.*refused"):
        build_judge(f"endpoint={down}").compare(["p"], ["a"], ["b"])
    with scripted_server(lambda body: 500) as (url, _), pytest.raises(
            UserError, match=f"^judge endpoint {re.escape(url)} answered HTTP 500: .*boom"):
        EndpointJudge(url).score(["p"], ["a"])
    with scripted_server(lambda body: time.sleep(1.0) or "Rating: 3") as (url, _), pytest.raises(
            UserError, match=f"^judge endpoint {re.escape(url)} did not answer within 0.2 s"):
        build_judge(f"endpoint={url},timeout=0.2").score(["p"], ["a"])


@pytest.mark.parametrize(("spec", "message"), [
    ("endpoint", "needs a URL"),
    ("endpoint=127.0.0.1:8000", "not an http(s) URL"),
    ("endpoint=http://h/v1,modle=x", "option 'modle=x': expected one of model, key_env"),
    ("endpoint=http://h/v1,timeout=soon", "timeout='soon': not a number"),
    ("endpoint=http://h/v1,rubric=/no/such/rubric.txt", "judge rubric /no/such/rubric.txt: cannot read it"),
])
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(UserError) as e:
        build_judge(spec)
    assert message in str(e.value)


def test_against_the_real_llmlab_serve(live: Any, tmp_path: Path) -> None:  # noqa: F811
    """The tiny random model behind `llmlab serve` is a real OpenAI-compatible server that answers
    garbage: the plumbing works (requests go out, completions come back) and the garbage path reports it."""
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Judge.")  # the tiny model has 128 positions: a short rubric, short answers
    spec = f"endpoint={live.base_url},model=tiny,rubric={rubric},max_tokens=6,workers=2"
    with pytest.raises(UserError, match=f"judge endpoint {re.escape(live.base_url)}: 2 of 2 answers were unparseable"):
        build_judge(spec).compare(["2+2?", "3+3?"], ["4", "6"], ["5", "7"])
    judge = build_judge(spec + ",max_unparseable=1")
    verdicts = judge.compare(["2+2?"], ["4"], ["5"])
    assert verdicts[0].p_a == 0.5 and verdicts[0].rationale.startswith("unparseable: ")
    assert judge.asked == 2 and judge.unparseable == 2
