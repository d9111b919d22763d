"""A run's markdown report as one self-contained HTML page (the report card), for reading offline and
sending as a single file.

    tables, headings, code     rendered by markdown-it-py (CommonMark + tables)
    ![alt](x.png)              the image embedded as a data: URI, so the page needs no other file
    [text](page.html)          a local HTML page (an interactive attention map) embedded in an iframe
                               (srcdoc, sandboxed to scripts only) below the link, which stays as well

Links and images that are not local files stay as they are. The markdown stays the twin of the page:
the same words, figures and tables.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from llmlab.files import write_text_atomic

_STYLE = """
body { font: 15px/1.55 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 72rem;
       padding: 0 1.25rem; color: #1f2328; background: #fff; }
h1 { font-size: 1.7rem; border-bottom: 1px solid #d0d7de; padding-bottom: .3rem; }
h2 { font-size: 1.3rem; margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; }
h3 { font-size: 1.08rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: 14px; display: block; overflow-x: auto; }
th, td { border: 1px solid #d0d7de; padding: .3rem .6rem; }
th { background: #f6f8fa; }
tr:nth-child(even) td { background: #fbfcfd; }
code, pre { font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, monospace; background: #f6f8fa; }
pre { padding: .7rem; overflow-x: auto; border-radius: 6px; }
img { max-width: 100%; border: 1px solid #eaeef2; border-radius: 4px; }
iframe.embedded { width: 100%; height: 40rem; border: 1px solid #d0d7de; border-radius: 6px; }
"""

_IMG = re.compile(r'<img src="([^"]+)"')
_LINK = re.compile(r'<a href="([^"]+\.html)">(.*?)</a>')


def _local(base: Path, src: str) -> Path | None:
    if "://" in src or src.startswith(("data:", "/", "#")):
        return None
    path = (base / html.unescape(src)).resolve()
    return path if path.is_file() and base.resolve() in path.parents else None


def render_html(markdown: str, base: Path, *, title: str) -> str:
    """`markdown` as a self-contained page; relative paths resolve against `base` (the run folder)."""
    from markdown_it import MarkdownIt  # here: only report writers need it

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)

    def image(m: re.Match[str]) -> str:
        path = _local(base, m.group(1))
        if path is None or path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".svg"):
            return m.group(0)
        mime = {".png": "image/png", ".svg": "image/svg+xml"}.get(path.suffix.lower(), "image/jpeg")
        return f'<img src="data:{mime};base64,{base64.b64encode(path.read_bytes()).decode("ascii")}"'

    def page(m: re.Match[str]) -> str:
        path = _local(base, m.group(1))
        if path is None:
            return m.group(0)
        frame = html.escape(path.read_text(encoding="utf-8"), quote=True)
        return (f'{m.group(0)}<iframe class="embedded" sandbox="allow-scripts" title="{m.group(2)}" '
                f'srcdoc="{frame}"></iframe>')

    body = _LINK.sub(page, _IMG.sub(image, body))
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{html.escape(title)}</title>\n'
            f"<style>{_STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n")


def write_report(markdown: str, folder: Path, *, name: str = "report", title: str) -> tuple[Path, Path]:
    """`folder/name.md` and its self-contained twin `folder/name.html`, each written atomically."""
    md, page = folder / f"{name}.md", folder / f"{name}.html"
    write_text_atomic(md, markdown)
    write_text_atomic(page, render_html(markdown, folder, title=title))
    return md, page
