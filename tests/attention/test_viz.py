"""`llmlab viz attention` end to end, and the PNG / HTML writers of `llmlab.viz.attention`.

The page must show real reference output (the weights equal direct calls of
`reference.multi_head_attention` on the same embeddings) and be safe for any token text.
"""

import json
import shutil
import struct
import subprocess

import numpy as np
import pytest

from llmlab.attention.reference import multi_head_attention
from llmlab.cli import main
from llmlab.viz.attention import attention_grid_png, attention_html, attention_json
from llmlab.viz.commands import embed, random_layers, sinusoidal_positions, token_vector
from llmlab.viz.config import split_words

TEXT = "The cat sat on the mat & the <b>dog</b> sat too."
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return struct.unpack(">II", data[16:24])  # IHDR: width, height


def run_cli(capsys, *argv):
    code = main(["viz", "attention", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("viz") / "run"
    assert main(["viz", "attention", "--text", TEXT, "--out", str(out), "--quiet", "n_heads=2"]) == 0  # 2 x 2 grid
    return out


def test_split_words_keeps_words_and_punctuation():
    assert split_words("Don't stop, <b>now</b>!") == ["Don", "'", "t", "stop", ",", "<", "b", ">", "now", "<", "/",
                                                      "b", ">", "!"]
    assert split_words("  \n\t ") == []


def test_repeated_words_share_a_vector_and_differ_by_position():
    tokens = split_words("cat dog cat")
    x = embed(tokens, seed=3, d_model=16)
    pe = sinusoidal_positions(3, 16)
    np.testing.assert_allclose(x[2] - x[0], pe[2] - pe[0], atol=1e-12)
    assert not np.allclose(token_vector("cat", seed=3, d_model=16), token_vector("cat", seed=4, d_model=16))
    np.testing.assert_allclose(pe[0, 0::2], 0.0)  # sin(0)
    np.testing.assert_allclose(pe[0, 1::2], 1.0)  # cos(0)


def test_run_writes_png_html_and_tokens(full_run, capsys):
    for name in ("config.yaml", "attention.png", "attention.html", "tokens.json"):
        assert (full_run / name).is_file(), name
    assert (full_run / "attention.png").read_bytes()[:8] == PNG_MAGIC
    saved = json.loads((full_run / "tokens.json").read_text(encoding="utf-8"))
    assert saved["tokens"] == split_words(TEXT) and saved["text"] == TEXT
    assert not list(full_run.glob(".*.tmp"))  # atomic writes leave no temp files


def test_html_weights_are_probabilities_with_the_causal_mask(full_run):
    data = attention_json((full_run / "attention.html").read_text(encoding="utf-8"))
    tokens = split_words(TEXT)
    assert data["tokens"] == tokens
    w = np.array(data["weights"])  # (L, H, T, T), 3 decimals
    T = len(tokens)
    assert w.shape == (2, 2, T, T)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=T * 5e-4)  # each of T entries rounded by <= 0.0005
    assert (w[..., np.triu_indices(T, k=1)[0], np.triu_indices(T, k=1)[1]] == 0).all()  # no peeking ahead
    assert data["initial"] == {"layer": 0, "head": "avg"}


def test_html_shows_the_reference_output(full_run):
    """Layer 0 sees the embeddings, layer 1 sees x + MHA_0(x): both from direct reference calls."""
    w = np.array(attention_json((full_run / "attention.html").read_text(encoding="utf-8"))["weights"])
    x = embed(split_words(TEXT), seed=0, d_model=64)
    for layer, (w_q, w_k, w_v, w_o) in enumerate(random_layers(seed=0, n_layers=2, d_model=64)):
        out, expected = multi_head_attention(x, w_q, w_k, w_v, w_o, n_heads=2, causal=True)
        np.testing.assert_allclose(w[layer], expected, atol=5e-4 + 1e-12)  # rounding to 3 decimals
        x = x + out


def test_html_is_self_contained_and_escapes_user_text(full_run):
    page = (full_run / "attention.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<b>" not in page and "</b>" not in page  # the tokens < b > never reach the markup raw
    assert page.count("<script") == 2 and page.count("</script>") == 2
    assert "http://" not in page and "https://" not in page and " src=" not in page and "<link" not in page
    assert "innerHTML" not in page and "textContent" in page
    for control in ('id="layer"', 'id="head"', "all heads averaged", "mouseenter", "click"):
        assert control in page, control


def test_html_survives_hostile_tokens(tmp_path):
    tokens = ["<b>", "&amp;", "</script><script>alert(1)</script>", '"x"', "\u2028", "<!--", "é🙂"]
    T = len(tokens)
    w = np.tril(np.ones((1, 2, T, T)))
    w /= w.sum(-1, keepdims=True)
    path = tmp_path / "page.html"
    attention_html(w, tokens, path, title="<i>title</i> & co", layer=0, head=1)
    page = path.read_text(encoding="utf-8")
    assert page.count("</script>") == 2 and "alert(1)</script>" not in page
    assert "<b>" not in page and "<!--" not in page and "<i>" not in page and "&amp;amp;" not in page.split("<body>")[0]
    assert "<title>&lt;i&gt;title&lt;/i&gt; &amp; co</title>" in page
    data = attention_json(page)
    assert data["tokens"] == tokens  # exact round trip through the JSON
    assert data["initial"] == {"layer": 0, "head": 1}


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_page_script_parses(full_run, tmp_path):
    page = (full_run / "attention.html").read_text(encoding="utf-8")
    start = page.index("<script>") + len("<script>")
    script = tmp_path / "page.js"
    script.write_text(page[start:page.index("</script>", start)], encoding="utf-8")
    result = subprocess.run(["node", "--check", str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_layer_and_head_select_one_panel(full_run, tmp_path, capsys):
    out = tmp_path / "one"
    code, stdout, err = run_cli(capsys, "--text", TEXT, "--layer", "1", "--head", "2", "--out", str(out), "--quiet")
    assert code == 0, err
    assert stdout.split() == [str(out / n) for n in ("attention.png", "attention.html", "tokens.json")]
    one_w, one_h = png_size(out / "attention.png")
    all_w, all_h = png_size(full_run / "attention.png")
    assert one_w < all_w and one_h < all_h  # one panel, not 2 x 2
    data = attention_json((out / "attention.html").read_text(encoding="utf-8"))
    assert data["initial"] == {"layer": 1, "head": 2}
    assert np.array(data["weights"]).shape[:2] == (2, 4)  # the page keeps every layer and head (defaults)


def test_grid_hides_tick_labels_for_long_texts(tmp_path):
    T = 50
    w = np.tril(np.ones((1, 1, T, T)))
    w /= w.sum(-1, keepdims=True)
    path = tmp_path / "long.png"
    attention_grid_png(w, [f"t{i}" for i in range(T)], path, title="50 tokens")
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="weights must be"):
        attention_grid_png(w, ["too", "few"], tmp_path / "bad.png", title="x")


@pytest.mark.parametrize(("argv", "phrase"), [
    (["--text", ""], "text is empty"),
    (["--text", " \n "], "text is empty"),
    ([], "text is empty"),
    (["--text", "a " * 513], "513 tokens"),
    (["--text", "a b", "--layer", "2"], "layer 2 is out of range"),
    (["--text", "a b", "--head", "4"], "head 4 is out of range"),
    (["--text", "a b", "--head", "-1"], "head -1 is out of range"),
    (["--text", "a b", "d_model=30"], "not a multiple of n_heads"),
    (["--text", "a b", "--model", "x"], "x: no such model folder"),
])
def test_user_errors_are_one_line_exit_2(capsys, tmp_path, argv, phrase):
    code, out, err = run_cli(capsys, *argv, "--out", str(tmp_path / "r"))
    assert code == 2 and out == "" and len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and phrase in err, err
    assert not (tmp_path / "r").exists()  # nothing written for a bad config
