"""The web app of `llmlab review serve` (FastAPI): the labelling page, its small JSON API, and the
agreement page.

    GET  /                 the page (static/review.html + review.js + review.css; nothing from a CDN)
    GET  /api/state        {"total", "labelled", "counts", "pair": {"index", "prompt", "left", "right"} | null}
    POST /api/label        {"pair": i, "choice": "left" | "right" | "tie" | "skip"} -> the new state,
                           answered only once the label is on disk; a pair that is not the current one
                           (a second tab, a double press) is 409 and nothing is recorded
    POST /api/undo         takes back the latest decision -> the new state (409 when there is none)
    GET  /agreement        human vs gold, vs the pairs file's own preference and vs each --compare judge;
                           then gold vs the others over all their pairs
    GET  /static/NAME      review.js and review.css only
    a write that fails (a full disk) is 500 {"error": "not saved: ..."}, and the label is not recorded

The page puts every text from the files in with `textContent` and the agreement page escapes it
(html.escape), so a prompt holding `<script>` is shown, never run; a Content-Security-Policy of 'self'
only stops inline and foreign scripts as a second line of defence.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel

from llmlab.errors import UserError
from llmlab.serve.review_agreement import GIVEN, Agreement, agreements, gold_labels
from llmlab.serve.review_log import LabelLog

STATIC = Path(__file__).with_name("static")
ASSETS = {"review.js": "text/javascript; charset=utf-8", "review.css": "text/css; charset=utf-8"}
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
DISAGREEMENTS_SHOWN = 20  # per source, on the agreement page


class LabelBody(BaseModel):
    pair: int
    choice: Literal["left", "right", "tie", "skip"]


def state(log: LabelLog) -> dict[str, Any]:
    """What the page shows: the progress, and the current pair with its responses in their shown order."""
    counts = Counter(row["label"] for row in log.rows)
    out: dict[str, Any] = {"total": log.total, "labelled": len(log.rows),
                           "counts": {k: counts[k] for k in ("a", "b", "tie", "skip")}, "pair": None}
    index = log.current()
    if index is not None:
        pair = log.pairs[index]
        left, right = (pair.a, pair.b) if log.shown(index) == "ab" else (pair.b, pair.a)
        out["pair"] = {"index": index, "prompt": pair.prompt, "left": left, "right": right}
    return out


def choice_label(choice: str, shown: str) -> str:
    """The stored label of a click: "left" with shown "ba" is "b"."""
    return {"left": shown[0], "right": shown[1]}.get(choice, choice)


def create_review_app(log: LabelLog, judges: Mapping[str, Mapping[int, str]]) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.update(HEADERS)
        return response

    @app.exception_handler(UserError)
    async def _conflict(request: Request, error: UserError) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=409)

    @app.exception_handler(OSError)  # a full disk: the page must say the label was not saved
    async def _not_saved(request: Request, error: OSError) -> JSONResponse:
        return JSONResponse({"error": f"not saved: {error.strerror or error} ({error.filename or log.labels})"},
                            status_code=500)

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "review.html").read_text(encoding="utf-8"))

    @app.get("/static/{name}")
    def asset(name: str) -> Response:
        if name not in ASSETS:
            return JSONResponse({"error": "not found"}, status_code=404)
        return Response((STATIC / name).read_bytes(), media_type=ASSETS[name])

    @app.get("/api/state")
    def get_state() -> dict[str, Any]:
        return state(log)

    # plain `def`: FastAPI runs these in its thread pool, so the fsync never blocks the event loop
    @app.post("/api/label")
    def label(body: LabelBody) -> dict[str, Any]:
        log.add(body.pair, choice_label(body.choice, log.shown(body.pair)))
        return state(log)

    @app.post("/api/undo")
    def undo() -> dict[str, Any]:
        log.undo()
        return state(log)

    gold: dict[str, Mapping[int, str] | None] = {}  # every pair's gold label, computed at the first visit

    @app.get("/agreement", response_class=HTMLResponse)
    def agreement() -> HTMLResponse:
        if not gold:
            gold["labels"] = gold_labels(log.pairs, range(log.total))
        return HTMLResponse(agreement_page(log, judges, gold["labels"]))

    return app


def _num(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3f}"


def _interval(ci: tuple[float, float]) -> str:
    return "n/a" if any(math.isnan(x) for x in ci) else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _short(text: str, n: int = 160) -> str:
    return text if len(text) <= n else text[:n] + "…"


def agreement_page(log: LabelLog, judges: Mapping[str, Mapping[int, str]],
                   gold: Mapping[int, str] | None) -> str:
    """The agreement page (every file-borne text escaped): the person against each source over the pairs
    both labelled, then gold against the other sources over all the pairs they labelled. `gold` holds
    every pair's gold label, None when the prompts are not all task-world prompts."""
    human = {row["pair"]: row["label"] for row in log.rows if row["label"] != "skip"}
    given = {i: "a" for i, pair in enumerate(log.pairs) if pair.given}
    others: dict[str, Mapping[int, str]] = {GIVEN: given} if given else {}
    others.update(judges)
    sources = {"gold": gold, **others} if gold is not None else others
    results = agreements(human, sources)
    notes = [] if gold is not None else ["gold: not shown, the prompts are not all task-world prompts"]
    e = html.escape
    counts = Counter(row["label"] for row in log.rows)
    gold_table = ""
    if gold is not None and others:
        gold_table = ("<h2>Gold vs the other sources</h2><p class=\"note\">Over every pair each source "
                      "labelled, whether or not a person has.</p>" + _table("gold-agreement", "gold vs",
                                                                            agreements(gold, others)))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Agreement · llmlab review</title>
<link rel="stylesheet" href="/static/review.css"></head>
<body><main>
<h1>Agreement</h1>
<p id="summary">{len(log.rows)} / {log.total} labelled: a {counts['a']}, b {counts['b']}, tie {counts['tie']},
skip {counts['skip']} (skips are left out below). <a href="/">Back to labelling</a></p>
{_table("agreement", "human vs", results)}
{''.join(f'<p class="note">{e(n)}</p>' for n in notes)}
<p class="note">Over the pairs both labelled, labels a / b / tie; 95% intervals: percentile bootstrap over
pairs (2000 resamples).</p>
{gold_table}
{''.join(_disagreements(r, log) for r in results if r.disagreements)}
</main></body></html>
"""


def _table(table_id: str, head: str, results: list[Agreement]) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(r.source)}</td><td>{r.n}</td><td>{_num(r.agreement)}</td><td>{_interval(r.agreement_ci)}</td>"
        f"<td>{_num(r.kappa)}</td><td>{_interval(r.kappa_ci)}</td>"
        f"<td>{e(', '.join(f'{k} {v}' for k, v in sorted(r.counts.items())))}</td></tr>" for r in results)
    return (f'<table id="{table_id}"><thead><tr><th>{e(head)}</th><th>pairs</th><th>agreement</th><th>95% CI</th>'
            f"<th>Cohen's kappa</th><th>95% CI</th><th>their labels</th></tr></thead><tbody>{rows}</tbody></table>")


def _disagreements(r: Agreement, log: LabelLog) -> str:
    e = html.escape
    items = "".join(f"<tr><td>{i}</td><td>{e(_short(log.pairs[i].prompt))}</td><td>{e(h)}</td><td>{e(o)}</td></tr>"
                    for i, h, o in r.disagreements[:DISAGREEMENTS_SHOWN])
    more = len(r.disagreements) - DISAGREEMENTS_SHOWN
    tail = f'<p class="note">and {more} more</p>' if more > 0 else ""
    return (f"<h2>Disagreements with {e(r.source)}</h2><table><thead><tr><th>pair</th><th>prompt</th>"
            f"<th>human</th><th>{e(r.source)}</th></tr></thead><tbody>{items}</tbody></table>{tail}")
