"""viz.report: the markdown report card as one self-contained HTML page."""

import base64
import html

from llmlab.viz.report import render_html, write_report

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def test_images_and_pages_are_embedded_tables_rendered(tmp_path):
    (tmp_path / "fig").mkdir()
    (tmp_path / "fig" / "a.png").write_bytes(PNG)
    (tmp_path / "maps.html").write_text('<html><body><script>var x = "<b>";</script></body></html>')
    md = ("# Title\n\n| a | b |\n|---|---:|\n| 1 | 2 |\n\n![a plot](fig/a.png)\n\n"
          "[interactive maps](maps.html) and [elsewhere](https://example.org/x.html)\n\n![missing](nope.png)\n")
    page = render_html(md, tmp_path, title="t <1>")
    assert "<title>t &lt;1&gt;</title>" in page
    assert "<table>" in page and "<td>1</td>" in page
    assert f'src="data:image/png;base64,{base64.b64encode(PNG).decode()}"' in page
    assert 'src="nope.png"' in page  # not a local file: left as it is
    assert "<iframe" in page and page.count("<iframe") == 1  # the remote .html link is not embedded
    srcdoc = page.split('srcdoc="', 1)[1].split('"></iframe>', 1)[0]
    assert html.unescape(srcdoc) == (tmp_path / "maps.html").read_text()
    assert 'href="https://example.org/x.html"' in page


def test_no_file_outside_the_folder_is_embedded_and_raw_html_is_escaped(tmp_path):
    inner = tmp_path / "run"
    inner.mkdir()
    (tmp_path / "secret.png").write_bytes(PNG)
    page = render_html("![x](../secret.png)\n\n<script>alert(1)</script>\n", inner, title="t")
    assert "base64" not in page and "<script>alert" not in page


def test_write_report_writes_both_twins(tmp_path):
    md, page = write_report("# R\n\ntext\n", tmp_path, title="R")
    assert md.read_text() == "# R\n\ntext\n"
    assert "<h1>R</h1>" in page.read_text()
