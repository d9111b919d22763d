"""A real headless browser for the tests: Debian's chromium (/usr/bin/chromium) driven by Playwright.

    browser_missing()          why no browser can run here, or None
    require_browser()          pytest.skip with that reason; pytest.fail instead when LLMLAB_REQUIRE_BROWSER=1 (CI)
    launch_browser()           context manager: one headless chromium; share it per module (a launch takes ~2 s)
    inspect_page(path, b)      open `path` as a file:// URL in a fresh context of `b`; what the browser made of it

Import as `from browser import ...` (tests/ has no __init__.py, like `from conftest import ...`).

Playwright's own browser downloads are never used (no `playwright install`): executable_path points at
the system chromium. Playwright adds --headless, --no-sandbox and a temporary --user-data-dir itself
(it refuses a --user-data-dir in `args`). Every request that is not file:, data: or about: is aborted
before it leaves the machine, and recorded.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
REQUIRE_ENV = "LLMLAB_REQUIRE_BROWSER"
LOCAL_SCHEMES = ("file:", "data:", "about:")
CHROMIUM_ARGS = [
    "--headless",  # Playwright adds it too (headless=True); harmless twice
    "--no-sandbox",  # root in containers; Playwright adds it too
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no chromium at {CHROMIUM} (apt-get install chromium)"
    return None


def require_browser() -> None:
    """Skip the calling test (or fixture) when no browser can run; fail instead under LLMLAB_REQUIRE_BROWSER=1."""
    reason = browser_missing()
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def launch_browser() -> Iterator[Any]:
    """One headless chromium (a playwright Browser), closed on exit. Call require_browser() first."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


_FACTS = """() => {
  const text = el => el.innerText.trim();
  return {
    title: document.title,
    h1: [...document.querySelectorAll("h1")].map(text),
    h2: [...document.querySelectorAll("h2")].map(text),
    tables: [...document.querySelectorAll("table")].map(t => ({
      head: [...t.querySelectorAll("thead th")].map(text),
      rows: [...t.querySelectorAll("tbody tr")].map(r => [...r.cells].map(text)),
    })),
    images: [...document.images].map(i => ({
      alt: i.alt, src: i.getAttribute("src").slice(0, 40),
      natural_width: i.naturalWidth, natural_height: i.naturalHeight,
    })),
    scripts: document.scripts.length,
    text: document.body.innerText,
  };
}"""


def inspect_page(path: Path, browser: Any, *, timeout_ms: int = 15_000) -> dict[str, Any]:
    """Load `path` (file://) and wait for its load event; the facts, as plain data:

        title            document.title
        h1, h2           the headings' visible texts, in order
        tables           per table: {"head": [th texts], "rows": [[cell texts] per tbody row]}
        images           per <img>: {"alt", "src" (first 40 chars), "natural_width", "natural_height"};
                         natural_width 0 = broken
        iframes          per <iframe>: {"title", "sandbox", "url", "text" (its body's innerText, read
                         through Playwright's frame: a sandboxed srcdoc frame is opaque to the page),
                         "readable_from_parent" (iframe.contentDocument is not null)}
        scripts          number of <script> elements in the page itself
        text             the page body's innerText (what a reader sees)
        console_errors   console messages of type error, from the page and its frames: "text (url)"
        page_errors      uncaught exceptions
        dialogs          alert/confirm/prompt messages (each dismissed)
        requests         every request URL (Chromium reports no data: URLs), websockets included
        foreign_requests those not file:, data: or about: (aborted, never sent)
    """
    facts: dict[str, Any] = {"console_errors": [], "page_errors": [], "dialogs": [], "requests": []}
    context = browser.new_context()
    try:
        context.set_default_timeout(timeout_ms)
        context.route(lambda url: not url.startswith(LOCAL_SCHEMES), lambda route: route.abort())
        page = context.new_page()

        def console(message: Any) -> None:
            if message.type == "error":
                facts["console_errors"].append(f"{message.text} ({message.location.get('url', '')})")

        def dialog(d: Any) -> None:
            facts["dialogs"].append(d.message)
            d.dismiss()

        page.on("console", console)
        page.on("dialog", dialog)
        page.on("pageerror", lambda e: facts["page_errors"].append(str(e)))
        page.on("request", lambda r: facts["requests"].append(r.url))
        page.on("websocket", lambda w: facts["requests"].append(w.url))
        page.goto(Path(path).resolve().as_uri(), wait_until="load")
        facts.update(page.evaluate(_FACTS))
        facts["iframes"] = []
        for element in page.query_selector_all("iframe"):
            frame = element.content_frame()
            facts["iframes"].append({
                "title": element.get_attribute("title"),
                "sandbox": element.get_attribute("sandbox"),
                "url": frame.url if frame else None,
                "text": frame.evaluate("document.body ? document.body.innerText : ''") if frame else None,
                "readable_from_parent": element.evaluate("f => f.contentDocument !== null"),
            })
    finally:
        context.close()
    facts["foreign_requests"] = [u for u in facts["requests"] if not u.startswith(LOCAL_SCHEMES)]
    return facts
