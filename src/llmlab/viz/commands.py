"""`llmlab viz attention` and `llmlab attention explain`: look at attention, and at what it costs.

`viz attention` has no trained model yet, so it runs the NumPy reference
(`reference.multi_head_attention`) over a tiny random transformer, which is enough to see
what the maps look like (the causal triangle, heads that differ, repeated words that
attend alike) and that the page shows real reference output:

    text --split_words--> tokens --embed--> x (T, d_model) --n_layers x [x = x + MHA(x)]--> weights (L, H, T, T)

- tokens: the regex `\\w+|[^\\w\\s]`, i.e. runs of letters/digits/underscore, and each other
  non-space character alone ("Don't stop!" -> Don ' t stop !). Whitespace is dropped.
- embeddings: one seeded N(0, 1) vector per distinct token string (seeded by `seed` and the
  first 8 bytes of the token's SHA-256, so the same word gets the same vector in every run
  and on every machine) plus the sinusoidal position encoding of "Attention Is All You Need".
- layers: random projections with std 1/sqrt(d_model), residual connections only (no norms,
  no MLP): the maps are those of an untrained model, not of language.

`attention explain` prints the table of `llmlab.attention.explain`.

NumPy and torch are imported inside the functions that use them, so that `attention explain` and
the `--print-config` of both commands start without them.
"""

from __future__ import annotations

import hashlib
import sys
from typing import TYPE_CHECKING, Any

from llmlab.attention.explain import explain, format_explain
from llmlab.attention.whatif import PRESETS, format_what_if, what_if
from llmlab.context import Context
from llmlab.errors import UserError
from llmlab.files import write_json_atomic
from llmlab.runs import start_run
from llmlab.tokenizers.bytelevel import visible
from llmlab.viz.config import MAX_TOKENS, WORD, AttentionExplainConfig, VizAttentionConfig, split_words

if TYPE_CHECKING:
    import numpy as np

# --------------------------------------------------------------------------- the toy model


def token_vector(token: str, *, seed: int, d_model: int) -> np.ndarray:
    """N(0, 1) vector of one token string: the same string, seed and size always give the same vector."""
    import numpy as np  # on first use: see the module docstring

    digest = hashlib.sha256(token.encode("utf-8", errors="surrogatepass")).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")]).standard_normal(d_model)


def sinusoidal_positions(T: int, d_model: int) -> np.ndarray:
    """(T, d_model): PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(p / 10000^(2i/d))."""
    import numpy as np  # on first use: see the module docstring

    p = np.arange(T)[:, None]  # (T, 1)
    freq = 10000.0 ** (-np.arange(0, d_model, 2) / d_model)  # (ceil(d/2),)
    pe = np.zeros((T, d_model))
    pe[:, 0::2] = np.sin(p * freq)
    pe[:, 1::2] = np.cos(p * freq)[:, : d_model // 2]
    return pe


def embed(tokens: list[str], *, seed: int, d_model: int) -> np.ndarray:
    """(T, d_model): token vectors plus positions, so a repeated word differs only by where it is."""
    import numpy as np  # on first use: see the module docstring

    vectors = {t: token_vector(t, seed=seed, d_model=d_model) for t in dict.fromkeys(tokens)}
    return np.stack([vectors[t] for t in tokens]) + sinusoidal_positions(len(tokens), d_model)


def random_layers(*, seed: int, n_layers: int, d_model: int) -> list[tuple[np.ndarray, ...]]:
    """(w_q, w_k, w_v, w_o) per layer, each (d_model, d_model) with entries N(0, 1/d_model)."""
    import numpy as np  # on first use: see the module docstring

    rng = np.random.default_rng(seed)
    return [tuple(rng.normal(0.0, d_model ** -0.5, (d_model, d_model)) for _ in range(4)) for _ in range(n_layers)]


def toy_attention(x: np.ndarray, layers: list[tuple[np.ndarray, ...]], *, n_heads: int,
                  causal: bool = True) -> np.ndarray:
    """Attention weights (L, H, T, T) of the stack x = x + MHA(x), one reference call per layer."""
    # NumPy, not at the top: `attention explain` and the configs of this module must not import it
    import numpy as np

    from llmlab.attention.reference import multi_head_attention

    maps = []
    for w_q, w_k, w_v, w_o in layers:
        out, weights = multi_head_attention(x, w_q, w_k, w_v, w_o, n_heads=n_heads, causal=causal)
        maps.append(weights)  # (H, T, T)
        x = x + out  # residual
    return np.stack(maps)  # (L, H, T, T)


# --------------------------------------------------------------------------- commands


def model_attention(model_dir: str, text: str) -> tuple[Any, list[str]]:
    """(weights (L, H, T, T) as NumPy, the tokens as visible strings) of a model on `text`."""
    # torch: only when a trained model is asked for
    import torch

    from llmlab.model.io import load_model

    model, tokenizer = load_model(model_dir)
    if tokenizer is None:
        raise UserError(f"{model_dir}: the model folder has no tokenizer.json")
    ids = tokenizer.encode(text)[:MAX_TOKENS]
    with torch.no_grad():
        out = model(torch.tensor([ids]), return_attention=True)
    weights = torch.stack([w[0] for w in out.attentions]).float().numpy()  # (L, H, T, T)
    return weights, [visible(tokenizer.token_bytes(i)) if i not in tokenizer.special_tokens.values()
                     else str(tokenizer.id_to_token(i)) for i in ids]


def viz_attention(cfg: VizAttentionConfig, ctx: Context) -> int:
    # NumPy: when this command runs, not when `attention explain` does
    import numpy as np

    from llmlab.viz.attention import attention_grid_png, attention_html

    if cfg.model:
        weights, tokens = model_attention(cfg.model, cfg.text)
        n_layers, n_heads = weights.shape[:2]
        for name, value, n in (("layer", cfg.layer, n_layers), ("head", cfg.head, n_heads)):
            if value is not None and not 0 <= value < n:
                raise UserError(f"{name} {value} is out of range: the model has {n} {name}s, 0..{n - 1}")
        title = f"{cfg.model}: {n_layers} layers x {n_heads} heads"
    else:
        tokens = split_words(cfg.text)
        x = embed(tokens, seed=cfg.seed, d_model=cfg.d_model)
        weights = toy_attention(x, random_layers(seed=cfg.seed, n_layers=cfg.n_layers, d_model=cfg.d_model),
                                n_heads=cfg.n_heads, causal=cfg.causal)  # (L, H, T, T)
        n_layers, n_heads = cfg.n_layers, cfg.n_heads
        title = (f"random {cfg.n_layers}-layer, {cfg.n_heads}-head model (seed {cfg.seed}, "
                 f"{'causal' if cfg.causal else 'bidirectional'}; untrained: pass --model for a trained one)")
    run = start_run("viz-attention", cfg, out=ctx.out, quiet=ctx.quiet)
    layers = list(range(n_layers)) if cfg.layer is None else [cfg.layer]
    heads = list(range(n_heads)) if cfg.head is None else [cfg.head]
    paths = [run.path("attention.png"), run.path("attention.html"), run.path("tokens.json")]
    attention_grid_png(weights[np.ix_(layers, heads)], tokens, paths[0], title=title, layers=layers, heads=heads)
    attention_html(weights, tokens, paths[1], title=f"attention: {title}", layer=cfg.layer, head=cfg.head)
    write_json_atomic(paths[2], {"text": cfg.text, "split": f"the tokenizer of {cfg.model}" if cfg.model else WORD.pattern, "tokens": tokens})
    run.log(f"{len(tokens)} tokens, {n_layers} layers x {n_heads} heads; wrote {run.dir}")
    for path in paths:
        print(path)
    return 0


def explain_attention(cfg: AttentionExplainConfig, ctx: Context) -> int:
    if cfg.presets:
        presets = list(PRESETS) if "all" in cfg.presets else list(cfg.presets)
        rows = what_if(presets, list(cfg.accelerators), list(cfg.dtypes), context=cfg.seq_len, batch=cfg.batch)
        header = (f"decode roofline: context {cfg.seq_len:,} tokens, batch {cfg.batch}; per step: all weights "
                  "(but the embedding) + every sequence's KV cache read once")
        sys.stdout.write(format_what_if(rows, header=header))
        return 0
    rows = explain(cfg.seq_len, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, window=cfg.window, batch=cfg.batch,
                   dtype_bytes=cfg.dtype_bytes, n_layers=cfg.n_layers, q_block=cfg.q_block)
    header = (f"attention cost: T={cfg.seq_len:,}, {cfg.n_heads} heads, {cfg.n_kv_heads} kv heads, head dim "
              f"{cfg.head_dim}, batch {cfg.batch}, {cfg.n_layers} layer(s), {cfg.dtype_bytes}-byte values, "
              f"causal, q_block {cfg.q_block}; FLOPs count 2 per multiply-add")
    sys.stdout.write(format_explain(rows, header=header))
    return 0
