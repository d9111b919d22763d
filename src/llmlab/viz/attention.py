"""Attention maps to look at: a PNG grid of heat maps, and one self-contained HTML explorer.

Both take `weights` of shape (L, H, T, T) (layers, heads, queries, keys: row i is what
query token i attends to, and sums to 1) and the T token strings.

- `attention_grid_png`: rows are layers, columns heads; one shared colour scale, so panels
  compare; exact zeros (keys a mask hides) are drawn light grey rather than as "tiny weight".
- `attention_html`: one file with inline CSS and JS and the weights embedded as JSON (3
  decimals); no server, no network. Hover a token to light up what it attends to; click to pin.

Tokens are user text. The HTML never puts them into markup: they travel inside the JSON
(with `<`, `>`, `&` written as \\u escapes, so `</script>` cannot end the script early) and the
page's JS sets them with `textContent`. What it leaves out: attention rollout or any
attribution method, and models (it draws whatever weights it is given).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llmlab.files import write_text_atomic
from llmlab.plotting import new_figure, save_figure

MAX_TICK_TOKENS = 40  # above this many tokens the tick labels would overlap: hide them


def _checked(weights: np.ndarray, tokens: Sequence[str]) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 4 or w.shape[2] != w.shape[3] or w.shape[2] != len(tokens) or w.shape[0] * w.shape[1] == 0:
        raise ValueError(f"weights must be (L, H, T, T) with T = {len(tokens)} tokens, got shape {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError("weights contain NaN or inf")
    return w


def _tick_label(token: str, width: int = 12) -> str:
    """Short, visible and literal: spaces shown as ␣, long tokens cut, `$` kept out of mathtext."""
    label = token.replace(" ", "␣").replace("\n", "↵").replace("\t", "→") or "∅"
    if len(label) > width:
        label = label[: width - 1] + "…"
    return label.replace("$", r"\$")


def attention_grid_png(weights: np.ndarray, tokens: Sequence[str], path: str | Path, *, title: str,
                       layers: Sequence[int] | None = None, heads: Sequence[int] | None = None) -> None:
    """Heat maps of `weights` (L, H, T, T): a grid of L rows (layers) by H columns (heads), one colour bar.

    `layers` and `heads` are the numbers to print over the panels when `weights` is a selection
    (default 0..L-1 and 0..H-1). Token strings label the axes up to 40 tokens (keys along x,
    rotated; queries along y); beyond that the ticks are hidden. Written atomically.
    """
    import matplotlib

    w = _checked(weights, tokens)
    L, H, T, _ = w.shape
    layers = list(range(L)) if layers is None else list(layers)
    heads = list(range(H)) if heads is None else list(heads)
    # Panel size grows with T, and shrinks so that a 12 x 12 grid still fits in about 28 x 28 inches.
    cell = min(max(0.16 * T + 0.8, 2.2), 5.5, 26.0 / H, 26.0 / L)
    fig, ax = new_figure(width=H * cell + 1.8, height=L * cell + 1.2)
    ax.remove()
    axes = fig.subplots(L, H, squeeze=False, sharex=True, sharey=True)  # (L, H) grid of Axes
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#e4e4e4")  # bad: masked (exactly 0)
    vmax = float(w.max()) or 1.0
    show_ticks = T <= MAX_TICK_TOKENS
    font = min(9.0, max(4.0, 0.7 * 72 * cell / T))  # points: a tick gets cell / T inches
    labels = [_tick_label(t) for t in tokens]
    image = None
    for i in range(L):
        for j in range(H):
            a = axes[i, j]
            image = a.imshow(np.ma.masked_equal(w[i, j], 0.0), cmap=cmap, vmin=0.0, vmax=vmax,
                             interpolation="nearest", aspect="equal")
            a.set_title(f"layer {layers[i]} · head {heads[j]}", fontsize=9)
    # subtle: the axes share one tick locator and formatter, so set the ticks once (setting them on
    # every panel redoes all panels each time); label_outer keeps labels on the outer panels only.
    if show_ticks:
        axes[0, 0].set_xticks(range(T), labels, fontsize=font)
        axes[0, 0].set_yticks(range(T), labels, fontsize=font)
    else:
        axes[0, 0].set_xticks([])
        axes[0, 0].set_yticks([])
    for a in axes.flat:
        a.tick_params(axis="x", labelrotation=90)
        a.label_outer()
    fig.colorbar(image, ax=axes, shrink=min(1.0, 0.4 + 0.3 * L), label="attention weight")
    fig.supxlabel("key (attended to)", fontsize=10)
    fig.supylabel("query (attending)", fontsize=10)
    fig.suptitle(title)
    save_figure(fig, path)


def _script_json(obj: object) -> str:
    """JSON safe to put between <script> tags: no `<`, `>` or `&` at all, and no JS line separators."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)  # outside strings JSON has none of these, so this is exact
    return text


def attention_html(weights: np.ndarray, tokens: Sequence[str], path: str | Path, *, title: str,
                   layer: int | None = None, head: int | None = None) -> None:
    """One self-contained HTML page to explore `weights` (L, H, T, T); `layer`/`head` pick the first view.

    The weights are embedded rounded to 3 decimals, so a page for 2 layers x 4 heads x 512 tokens
    is about 10 MB. `head=None` opens on "all heads averaged". Written atomically.
    """
    w = _checked(weights, tokens)
    L, H = w.shape[:2]
    if (layer is not None and not 0 <= layer < L) or (head is not None and not 0 <= head < H):
        raise ValueError(f"layer {layer} / head {head} out of range for {L} layers x {H} heads")
    data = {
        "tokens": [str(t) for t in tokens],
        "weights": np.round(w, 3).tolist(),  # [layer][head][query][key]
        "initial": {"layer": 0 if layer is None else layer, "head": "avg" if head is None else head},
    }
    values = {"TITLE": html.escape(title), "DATA": _script_json(data)}
    page = re.sub(r"__(TITLE|DATA)__", lambda m: values[m.group(1)], _PAGE)  # one pass: no re-substitution
    write_text_atomic(path, page)


def attention_json(page: str) -> dict[str, Any]:
    """The data embedded by `attention_html`, parsed back out of the page (for tests and tools)."""
    start = page.index('<script id="attention-data" type="application/json">')
    start = page.index(">", start) + 1
    return json.loads(page[start:page.index("</script>", start)])


# The page. Placeholders __TITLE__ (HTML-escaped) and __DATA__ (script-safe JSON) are filled once.
# The JS builds every element with createElement and sets text with textContent only.
_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
  body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem auto; max-width: 70rem;
         padding: 0 1rem; color: #1f2328; background: #fff; }
  h1 { font-size: 1.25rem; margin: 0 0 .75rem; }
  .controls { display: flex; gap: 1rem; align-items: center; flex-wrap: wrap; margin-bottom: .5rem; }
  .controls label { font-weight: 600; }
  .help { color: #59636e; font-size: .9rem; margin: .25rem 0 1rem; }
  #text { display: flex; flex-wrap: wrap; gap: .35rem .15rem; padding: .75rem; border: 1px solid #d1d9e0;
          border-radius: 6px; line-height: 1.2; }
  .tok { display: inline-flex; flex-direction: column; align-items: center; padding: .2rem .3rem;
         border-radius: 4px; cursor: pointer; border: 2px solid transparent; outline: none;
         font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: pre; }
  .tok .w { font-size: .65rem; color: #59636e; min-height: .8rem; }
  .tok.dark, .tok.dark .w { color: #fff; }
  .tok.query { border-color: #d1242f; }
  .tok.pinned { border-style: dashed; }
  .tok:focus-visible { box-shadow: 0 0 0 2px #0969da55; }
  .below { display: flex; gap: 2rem; flex-wrap: wrap; margin-top: 1rem; align-items: flex-start; }
  #details { min-width: 16rem; }
  #details ol { margin: .25rem 0; padding-left: 1.5rem; font-family: ui-monospace, monospace; font-size: .85rem; }
  #status { color: #59636e; }
  canvas { border: 1px solid #d1d9e0; image-rendering: pixelated; }
</style>
</head>
<body>
<h1>__TITLE__</h1>
<div class="controls">
  <span><label for="layer">layer</label> <select id="layer"></select></span>
  <span><label for="head">head</label> <select id="head"></select></span>
  <span id="status"></span>
</div>
<p class="help">Hover a token (or tab to it) to shade every token it attends to, darker for more weight
(opacity = weight / largest weight in its row); the numbers are the weights. Click to pin, click again or press
Esc to unpin. The map below is query (rows) by key (columns); hover a row to select that query.</p>
<div id="text"></div>
<div class="below">
  <canvas id="map" width="10" height="10" aria-label="attention map, queries by keys"></canvas>
  <div id="details"></div>
</div>
<script id="attention-data" type="application/json">__DATA__</script>
<script>
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("attention-data").textContent);
  const tokens = data.tokens, W = data.weights;  // W[layer][head][query][key]
  const L = W.length, H = W[0].length, T = tokens.length;
  const layerSel = document.getElementById("layer"), headSel = document.getElementById("head");
  const text = document.getElementById("text"), details = document.getElementById("details");
  const status = document.getElementById("status"), canvas = document.getElementById("map");
  let active = null, pinned = null;

  function option(select, value, label) {
    const o = document.createElement("option");
    o.value = String(value);
    o.textContent = label;
    select.appendChild(o);
  }
  for (let l = 0; l < L; l++) option(layerSel, l, "layer " + l);
  option(headSel, "avg", "all heads averaged");
  for (let h = 0; h < H; h++) option(headSel, h, "head " + h);
  layerSel.value = String(data.initial.layer);
  headSel.value = String(data.initial.head);

  function row(i) {  // what query i attends to, in the selected layer and head (or the heads' mean)
    const layer = W[Number(layerSel.value)];
    if (headSel.value !== "avg") return layer[Number(headSel.value)][i];
    const out = new Array(T).fill(0);
    for (let h = 0; h < H; h++) for (let j = 0; j < T; j++) out[j] += layer[h][i][j] / H;
    return out;
  }

  const spans = tokens.map(function (tok, i) {
    const span = document.createElement("span");
    span.className = "tok";
    span.tabIndex = 0;
    const t = document.createElement("span");
    t.textContent = tok;  // user text: never parsed as HTML
    const w = document.createElement("span");
    w.className = "w";
    span.append(t, w);
    span.addEventListener("mouseenter", function () { if (pinned === null) show(i); });
    span.addEventListener("focus", function () { if (pinned === null) show(i); });
    span.addEventListener("mouseleave", function () { if (pinned === null) show(null); });
    span.addEventListener("click", function () { pin(pinned === i ? null : i); });
    text.appendChild(span);
    return span;
  });

  function pin(i) {
    pinned = i;
    show(i);
  }

  function show(i) {
    active = i;
    const r = i === null ? null : row(i);
    const top = r === null ? 0 : Math.max.apply(null, r);
    spans.forEach(function (span, j) {
      const a = r === null || top <= 0 ? 0 : r[j] / top;
      span.style.backgroundColor = a > 0 ? "rgba(9, 105, 218, " + a.toFixed(3) + ")" : "";
      span.classList.toggle("dark", a > 0.55);
      span.classList.toggle("query", j === i);
      span.classList.toggle("pinned", j === i && pinned === i);
      span.lastChild.textContent = r === null || r[j] <= 0 ? "" : r[j].toFixed(3);  // blank: masked
      span.title = r === null ? "" : "weight " + r[j].toFixed(3);
    });
    const head = headSel.value === "avg" ? "all heads averaged" : "head " + headSel.value;
    status.textContent = "layer " + layerSel.value + ", " + head + (pinned !== null ? " (pinned)" : "");
    details.replaceChildren();
    if (r !== null) {
      const p = document.createElement("div");
      p.textContent = "token #" + i + " \\u201c" + tokens[i] + "\\u201d attends most to:";
      const list = document.createElement("ol");
      r.map(function (v, j) { return [v, j]; }).sort(function (a, b) { return b[0] - a[0]; })
        .slice(0, 8).forEach(function (pair) {
          const li = document.createElement("li");
          li.textContent = pair[0].toFixed(3) + "  #" + pair[1] + " \\u201c" + tokens[pair[1]] + "\\u201d";
          list.appendChild(li);
        });
      details.append(p, list);
    }
    drawMap();
  }

  function drawMap() {  // the selected T x T matrix, one square per (query, key); the active row outlined
    const cell = Math.max(1, Math.min(12, Math.floor(360 / T)));
    canvas.width = canvas.height = cell * T;
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    for (let i = 0; i < T; i++) {
      const r = row(i);
      for (let j = 0; j < T; j++) {
        if (r[j] <= 0) continue;
        ctx.fillStyle = "rgba(9, 105, 218, " + Math.min(1, r[j]).toFixed(3) + ")";
        ctx.fillRect(j * cell, i * cell, cell, cell);
      }
    }
    if (active !== null) {
      ctx.strokeStyle = "#d1242f";
      ctx.lineWidth = 2;
      ctx.strokeRect(1, active * cell, canvas.width - 2, cell);
    }
  }

  canvas.addEventListener("mousemove", function (e) {
    if (pinned !== null) return;
    const rect = canvas.getBoundingClientRect();
    const i = Math.floor((e.clientY - rect.top) / rect.height * T);
    if (i >= 0 && i < T && i !== active) show(i);
  });
  canvas.addEventListener("click", function () { if (active !== null) pin(pinned === active ? null : active); });
  layerSel.addEventListener("change", function () { show(active); });
  headSel.addEventListener("change", function () { show(active); });
  document.addEventListener("keydown", function (e) { if (e.key === "Escape") pin(null); });
  show(null);
})();
</script>
</body>
</html>
"""
