"""`llmlab review serve` end to end, as a person uses it: the real command (a subprocess on a free port)
and its page in headless chromium (tests/browser.py), driven by the keyboard. Label three pairs, undo
one, check the progress; SIGKILL the server; restart it and check that the page resumes at the right
pair; finish; compare both output files with the expected rows exactly; and open the agreement page.
Skipped without chromium and playwright, except under LLMLAB_REQUIRE_BROWSER=1 (CI), where that fails."""

from __future__ import annotations

import json
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from browser import launch_browser, require_browser
from conftest import subprocess_environment
from llmlab.serve.review_agreement import compare_labels, gold_labels
from llmlab.serve.review_log import Pair, label_row, labels_path, load_pairs, shown_order

XSS = '<img src=x onerror="alert(1)">'
ROWS = [  # task-world prompts, so the gold scorers label them too
    {"prompt": "Calculate 52 * 29.", "chosen": "1508", "rejected": "1509"},
    {"prompt": "Calculate 7 + 5.", "chosen": "12", "rejected": XSS},
    {"prompt": "Calculate 8 * 9.", "chosen": "72", "rejected": "It is 72."},
    {"prompt": "List exactly 3 words that describe a cat.", "chosen": "quick quiet small", "rejected": "small cat"},
    {"prompt": "Calculate 11 + 30.", "chosen": "41", "rejected": "14"},
]
SEED = 5
JUDGE = ["a", "b", "a", "a", "b"]  # an AI judge's labels of the five pairs


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_browser()
    with launch_browser() as b:
        yield b


def start(pairs: Path, out: Path, judge: Path) -> tuple[subprocess.Popen[str], str]:
    """The real command on a free port, and the URL it prints once it listens."""
    proc = subprocess.Popen([sys.executable, "-m", "llmlab", "review", "serve", "--pairs", str(pairs), "--out",
                             str(out), "--port", "0", "--seed", str(SEED), "--compare", f"llm={judge}"],
                            env=subprocess_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline, line = time.monotonic() + 60, ""
    assert proc.stderr is not None
    while "reviewing" not in line:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no 'reviewing ... at URL' line"
        if select.select([proc.stderr], [], [], 0.2)[0]:
            line = proc.stderr.readline()
    return proc, re.search(r"at (http://127\.0\.0\.1:\d+/)", line).group(1)


def open_page(browser: Any, url: str, facts: dict[str, list[str]]) -> Any:
    """A fresh page on `url` that records console errors, uncaught exceptions, dialogs and any request
    that is not to the server (aborted)."""
    context = browser.new_context()
    context.set_default_timeout(10_000)
    origin = url.rstrip("/")
    context.route(lambda u: not u.startswith(origin), lambda route: (facts["foreign"].append(route.request.url),
                                                                     route.abort()))
    page = context.new_page()
    page.on("console", lambda m: m.type == "error" and facts["console"].append(m.text))
    page.on("pageerror", lambda e: facts["console"].append(f"uncaught: {e}"))
    page.on("dialog", lambda d: (facts["dialogs"].append(d.message), d.dismiss()))
    page.goto(url)
    return page


def progress(page: Any, labelled: int, pair: int | None) -> None:
    """Wait until the page shows `labelled / 5 labelled` and the pair `pair` (None: the done section)."""
    page.wait_for_function("t => document.getElementById('progress').textContent === t",
                           arg=f"{labelled} / {len(ROWS)} labelled")
    if pair is None:
        page.wait_for_selector("#done", state="visible")
    else:
        page.wait_for_function("t => document.getElementById('pair-index').textContent === t", arg=f"(pair {pair})")


def press(page: Any, key: str, labelled: int, pair: int | None) -> None:
    page.keyboard.press(key)
    progress(page, labelled, pair)


def test_label_with_the_keyboard_kill_restart_and_finish(browser: Any, tmp_path: Path) -> None:
    pairs_file, out, judge = tmp_path / "pairs.jsonl", tmp_path / "prefs.jsonl", tmp_path / "judge.jsonl"
    pairs_file.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    pairs = load_pairs(pairs_file)
    judge.write_text("".join(json.dumps({"prompt": p.prompt, "a": p.a, "b": p.b, "label": x}) + "\n"
                             for p, x in zip(pairs, JUDGE, strict=True)), encoding="utf-8")
    facts: dict[str, list[str]] = {"console": [], "dialogs": [], "foreign": []}
    shown = [shown_order(SEED, i) for i in range(len(ROWS))]

    proc, url = start(pairs_file, out, judge)
    try:
        page = open_page(browser, url, facts)
        progress(page, 0, 0)
        assert page.inner_text(".keys").startswith("Keys: ← or 1 left is better · → or 2 right is better · "
                                                   "↓, 3 or t tie · s skip · u or Backspace undo.")
        left, right = (pairs[0].a, pairs[0].b) if shown[0] == "ab" else (pairs[0].b, pairs[0].a)
        assert (page.inner_text("#prompt"), page.inner_text("#left"), page.inner_text("#right")) == \
            (pairs[0].prompt, left, right)
        press(page, "ArrowLeft", 1, 1)
        assert XSS in (page.inner_text("#left"), page.inner_text("#right"))  # markup shown as text, never run
        press(page, "2", 2, 2)
        press(page, "t", 3, 3)
        press(page, "u", 2, 2)  # undo the tie: pair 2 is back
        assert page.inner_text("#status") == "undone: pair 2 is back"
        press(page, "s", 3, 3)  # skip it instead
        page.context.close()
    finally:
        proc.send_signal(signal.SIGKILL)  # no chance to flush or clean up
        proc.wait(10)
        proc.stderr.close()

    def expected_row(i: int, side: str) -> dict[str, Any]:
        label = {"left": shown[i][0], "right": shown[i][1]}.get(side, side)
        return label_row(pairs[i], i, label, shown=shown[i], when=0)

    def without_time(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["time"]) for r in rows)
        return [{k: v for k, v in r.items() if k != "time"} for r in rows]

    def read(path: Path) -> list[dict[str, Any]]:
        return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]

    confirmed = [expected_row(0, "left"), expected_row(1, "right"), expected_row(2, "skip")]
    assert without_time(read(labels_path(out))) == without_time(confirmed)

    proc, url = start(pairs_file, out, judge)
    try:
        page = open_page(browser, url, facts)
        progress(page, 3, 3)  # resumed at the first unlabelled pair
        assert page.inner_text("#prompt") == pairs[3].prompt
        press(page, "ArrowRight", 4, 4)
        press(page, "1", 5, None)
        final = [*confirmed, expected_row(3, "right"), expected_row(4, "left")]
        assert without_time(read(labels_path(out))) == without_time(final)
        assert without_time(read(out)) == without_time([r for r in final if r["label"] in ("a", "b")])

        page.goto(url + "agreement")
        table = page.eval_on_selector_all("#agreement tbody tr", "rows => rows.map(r => [...r.cells].map(c => "
                                          "c.textContent))")
        human = {r["pair"]: r["label"] for r in final if r["label"] != "skip"}
        common = sorted(human)
        gold = gold_labels(pairs, common)
        assert gold is not None
        expected = {"gold": [gold[i] for i in common], "pairs file (chosen)": ["a"] * len(common),
                    "llm": [JUDGE[i] for i in common]}
        assert [row[0] for row in table] == list(expected)
        for row in table:
            agreement, _, kappa, _ = compare_labels([human[i] for i in common], expected[row[0]])
            assert row[1:3] == [str(len(common)), f"{agreement:.3f}"]
            assert row[4] == ("n/a" if kappa != kappa else f"{kappa:.3f}")
        gold_table = page.eval_on_selector_all("#gold-agreement tbody tr", "rows => rows.map(r => [...r.cells].map("
                                               "c => c.textContent))")
        gold_all = gold_labels(pairs, range(len(pairs)))
        assert gold_all is not None
        others = {"pairs file (chosen)": ["a"] * len(pairs), "llm": JUDGE}
        assert [row[0] for row in gold_table] == list(others)
        for row in gold_table:
            agreement, _, kappa, _ = compare_labels([gold_all[i] for i in range(len(pairs))], others[row[0]])
            assert row[1:3] == [str(len(pairs)), f"{agreement:.3f}"] and row[4] == f"{kappa:.3f}"
        page.context.close()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
        proc.stderr.close()
    assert facts == {"console": [], "dialogs": [], "foreign": []}


def test_pairs_are_task_world_prompts() -> None:
    """The test above needs gold labels for every pair: the rows are task-world prompts."""
    assert gold_labels([Pair(r["prompt"], r["chosen"], r["rejected"]) for r in ROWS], range(len(ROWS))) == \
        {0: "a", 1: "a", 2: "tie", 3: "a", 4: "a"}
