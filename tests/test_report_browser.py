"""viz.report in a real browser: the self-contained report page as headless chromium shows it.

test_report_html.py checks the HTML text; this checks what a reader gets: headings and tables laid out,
the figure decoded (naturalWidth > 0), the embedded page's text inside its sandboxed iframe, raw HTML
shown as text and never run, and nothing fetched but the page itself. Skipped without chromium and
playwright (tests/browser.py), except under LLMLAB_REQUIRE_BROWSER=1 (CI), where that fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from browser import inspect_page, launch_browser, require_browser
from llmlab.plotting import new_figure, save_figure
from llmlab.viz.report import write_report

MAP_TEXT = "attention map: layer 0, head 1"
SCRIPT_TEXT = "drawn by the map's own script"
MARKDOWN = """# Run report

## Scores

| model | accuracy |
|---|---:|
| base | 0.41 |
| sft | 0.63 |
| dpo | 0.67 |

![loss curve](fig/loss.png)

## Attention

[interactive maps](maps.html)

<script>alert(1)</script>
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_browser()
    with launch_browser() as b:
        yield b


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    (folder / "fig").mkdir()
    fig, ax = new_figure(width=3, height=2)
    ax.plot([3.1, 2.2, 1.9, 1.7])
    save_figure(fig, folder / "fig" / "loss.png", dpi=50)
    (folder / "maps.html").write_text(
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>maps</title></head><body>'
        f'<p>{MAP_TEXT}</p><p id="drawn"></p>'
        f'<script>document.getElementById("drawn").textContent = "{SCRIPT_TEXT}";</script></body></html>',
        encoding="utf-8")
    _, page = write_report(MARKDOWN, folder, title="Run <report>")
    return page


@pytest.fixture(scope="module")
def facts(browser: Any, report: Path) -> dict[str, Any]:
    return inspect_page(report, browser)


def test_headings_title_and_table(facts):
    assert facts["title"] == "Run <report>"
    assert facts["h1"] == ["Run report"]
    assert facts["h2"] == ["Scores", "Attention"]
    [table] = facts["tables"]
    assert table["head"] == ["model", "accuracy"]
    assert [row[0] for row in table["rows"]] == ["base", "sft", "dpo"]


def test_the_figure_is_embedded_and_decodes(facts):
    [image] = facts["images"]
    assert image["alt"] == "loss curve" and image["src"].startswith("data:image/png;base64,")
    assert (image["natural_width"], image["natural_height"]) == (150, 100)  # 3 x 2 inches at 50 dpi


def test_the_local_page_shows_in_a_sandboxed_iframe(facts):
    [frame] = facts["iframes"]
    assert frame["title"] == "interactive maps" and frame["sandbox"] == "allow-scripts"
    assert frame["url"] == "about:srcdoc"
    assert MAP_TEXT in frame["text"] and SCRIPT_TEXT in frame["text"]  # its script ran, inside the sandbox
    assert not frame["readable_from_parent"]  # no allow-same-origin: an opaque origin to the report
    assert "interactive maps" in facts["text"]  # the link stays too


def test_raw_html_is_shown_as_text_and_never_run(facts):
    assert "<script>alert(1)</script>" in facts["text"]
    assert facts["scripts"] == 0 and facts["dialogs"] == []


def test_no_errors_and_nothing_fetched_but_the_page(facts, report):
    assert facts["console_errors"] == [] and facts["page_errors"] == []
    assert facts["foreign_requests"] == []
    assert facts["requests"] == [report.resolve().as_uri()]


def test_the_browser_sees_a_broken_page(browser, report, tmp_path):
    """The checks above can fail: a copy of the page with the figure not embedded and a remote image."""
    page = report.read_text(encoding="utf-8")
    broken = page.replace('src="data:image/png;base64,', 'src="missing.png#', 1)
    broken = broken.replace("</body>", '<img alt="remote" src="https://example.org/x.png"></body>')
    (tmp_path / "broken.html").write_text(broken, encoding="utf-8")
    facts = inspect_page(tmp_path / "broken.html", browser)
    assert [image["natural_width"] for image in facts["images"]] == [0, 0]
    assert facts["foreign_requests"] == ["https://example.org/x.png"]  # aborted, never sent
    assert len(facts["console_errors"]) == 2
