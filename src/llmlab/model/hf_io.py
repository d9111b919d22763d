"""Move models to and from Hugging Face folders: `export_hf` and `from_hf`.

    llmlab                       HF (LlamaForCausalLM; Mistral with a window; Qwen2 with qkv biases)
    embed.weight                 model.embed_tokens.weight
    blocks.i.attn_norm.weight    model.layers.i.input_layernorm.weight
    blocks.i.attn.qkv.weight     model.layers.i.self_attn.{q,k,v}_proj.weight   (split by rows; .bias too)
    blocks.i.attn.o.weight       model.layers.i.self_attn.o_proj.weight
    blocks.i.mlp_norm.weight     model.layers.i.post_attention_layernorm.weight
    blocks.i.mlp.gate_up.weight  model.layers.i.mlp.{gate,up}_proj.weight       (split by rows)
    blocks.i.mlp.down.weight     model.layers.i.mlp.down_proj.weight
    norm.weight                  model.norm.weight
    head.weight                  lm_head.weight (absent when tied)

No permutation of q/k rows is needed: llmlab's rotary embedding uses HF's "rotate half"
layout. The export writes config.json, model.safetensors, tokenizer.json,
tokenizer_config.json (with llmlab's chat template) and generation_config.json, with no
transformers import, so exporting needs only safetensors.

Import reads config.json and every *.safetensors file (sharded checkpoints included) of a
local folder. Supported: model_type llama, mistral (sliding window), qwen2 (q/k/v biases,
no sliding window). Refused with a one-line error: rope scaling, biases on o_proj or the
MLP, an explicit head_dim other than hidden_size / heads, activations other than SiLU,
per-layer window patterns, and pickled `pytorch_model.bin` weights (never unpickled).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save

from llmlab.data.chat import LLMLAB_CHAT_TEMPLATE
from llmlab.errors import UserError
from llmlab.files import atomic_open, write_json_atomic
from llmlab.model.config import ModelConfig
from llmlab.model.llama import Transformer
from llmlab.model.weights import load_model_tokenizer, load_state, read_safetensors, require_safetensors
from llmlab.tokenizers.base import Tokenizer

_ARCH = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


# ---------------------------------------------------------------------- config


def hf_model_type(cfg: ModelConfig) -> str:
    if cfg.sliding_window is not None and cfg.qkv_bias:
        raise UserError("no HF architecture has both a sliding window and q/k/v biases; export one of them")
    return "mistral" if cfg.sliding_window is not None else "qwen2" if cfg.qkv_bias else "llama"


def to_hf_config(cfg: ModelConfig, *, bos_id: int | None = None, eos_id: int | None = None) -> dict[str, Any]:
    model_type = hf_model_type(cfg)
    out: dict[str, Any] = {
        "architectures": [_ARCH[model_type]],
        "model_type": model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.ff_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,  # older transformers read this; 5.x reads rope_parameters
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "hidden_act": "silu",
        "tie_word_embeddings": cfg.tie_embeddings,
        "initializer_range": cfg.init_std,
        "attention_dropout": 0.0,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "dtype": "float32",
    }
    if model_type == "llama":
        out.update(attention_bias=False, mlp_bias=False)
    if model_type == "mistral":
        out["sliding_window"] = cfg.sliding_window
    if model_type == "qwen2":
        out.update(use_sliding_window=False, sliding_window=None, max_window_layers=cfg.n_layers)
    return out


def from_hf_config(hf: dict[str, Any], *, source: str) -> ModelConfig:
    """The ModelConfig of an HF config.json dict; unsupported features are one-line errors."""
    model_type = hf.get("model_type")
    if model_type not in _ARCH:
        raise UserError(f"{source}: model_type {model_type!r} is not supported; llmlab reads {', '.join(_ARCH)}")

    def refuse(condition: bool, what: str) -> None:
        if condition:
            raise UserError(f"{source}: {what} is not supported by llmlab's Llama-style model")

    rope = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    refuse(rope.get("rope_type", "default") != "default" or scaling.get("rope_type", scaling.get("type", "default"))
           not in ("default", None), "rope scaling")
    refuse(hf.get("hidden_act", "silu") != "silu", f"hidden_act {hf.get('hidden_act')!r}")
    refuse(bool(hf.get("mlp_bias")), "an MLP bias")
    refuse(model_type == "llama" and bool(hf.get("attention_bias")), "attention_bias (it adds an o_proj bias)")
    refuse(model_type == "qwen2" and bool(hf.get("use_sliding_window")), "Qwen2's per-layer sliding window")
    d, heads = hf["hidden_size"], hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or d // heads
    refuse(head_dim * heads != d, f"head_dim {head_dim} with {heads} heads of a {d}-wide model")
    window = hf.get("sliding_window") if model_type == "mistral" else None
    return ModelConfig(
        vocab_size=hf["vocab_size"], d_model=d, n_layers=hf["num_hidden_layers"], n_heads=heads,
        n_kv_heads=hf.get("num_key_value_heads") or heads, d_ff=hf["intermediate_size"],
        max_seq_len=hf.get("max_position_embeddings", 2048),
        rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)), tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        sliding_window=window, init_std=float(hf.get("initializer_range", 0.02)), qkv_bias=model_type == "qwen2")


# ---------------------------------------------------------------------- weights


def to_hf_state(model: Transformer) -> dict[str, torch.Tensor]:
    """llmlab state dict -> HF names, fused projections split (see the module table)."""
    cfg = model.cfg
    q_rows, kv_rows = cfg.d_model, cfg.kv_heads * cfg.head_dim
    out = {"model.embed_tokens.weight": model.embed.weight, "model.norm.weight": model.norm.weight}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = model.head.weight
    for i, block in enumerate(model.blocks):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = block.attn_norm.weight
        out[p + "post_attention_layernorm.weight"] = block.mlp_norm.weight
        for kind in ("weight", "bias") if cfg.qkv_bias else ("weight",):
            q, k, v = getattr(block.attn.qkv, kind).split((q_rows, kv_rows, kv_rows), dim=0)
            out |= {p + f"self_attn.q_proj.{kind}": q, p + f"self_attn.k_proj.{kind}": k,
                    p + f"self_attn.v_proj.{kind}": v}
        out[p + "self_attn.o_proj.weight"] = block.attn.o.weight
        gate, up = block.mlp.gate_up.weight.chunk(2, dim=0)
        out |= {p + "mlp.gate_proj.weight": gate, p + "mlp.up_proj.weight": up,
                p + "mlp.down_proj.weight": block.mlp.down.weight}
    return {k: v.detach().contiguous().cpu() for k, v in out.items()}


def from_hf_state(hf: dict[str, torch.Tensor], cfg: ModelConfig, *, source: str) -> dict[str, torch.Tensor]:
    """HF state dict -> llmlab names (the inverse of `to_hf_state`); a missing tensor is a UserError."""

    def take(name: str) -> torch.Tensor:
        if name not in hf:
            raise UserError(f"{source}: tensor {name} is missing")
        return hf.pop(name)

    out = {"embed.weight": take("model.embed_tokens.weight"), "norm.weight": take("model.norm.weight")}
    head = hf.pop("lm_head.weight", None)
    out["head.weight"] = out["embed.weight"] if cfg.tie_embeddings or head is None else head
    if head is None and not cfg.tie_embeddings:
        raise UserError(f"{source}: lm_head.weight is missing and tie_word_embeddings is false")
    for i in range(cfg.n_layers):
        p, b = f"model.layers.{i}.", f"blocks.{i}."
        out[b + "attn_norm.weight"] = take(p + "input_layernorm.weight")
        out[b + "mlp_norm.weight"] = take(p + "post_attention_layernorm.weight")
        for kind in ("weight", "bias") if cfg.qkv_bias else ("weight",):
            out[b + f"attn.qkv.{kind}"] = torch.cat([take(p + f"self_attn.{x}_proj.{kind}") for x in "qkv"])
        out[b + "attn.o.weight"] = take(p + "self_attn.o_proj.weight")
        out[b + "mlp.gate_up.weight"] = torch.cat([take(p + "mlp.gate_proj.weight"), take(p + "mlp.up_proj.weight")])
        out[b + "mlp.down.weight"] = take(p + "mlp.down_proj.weight")
    leftover = [k for k in hf if not k.endswith("rotary_emb.inv_freq")]
    if leftover:
        raise UserError(f"{source}: unexpected tensors, e.g. {leftover[:3]}")
    return out


# ---------------------------------------------------------------------- folders


def export_hf(model: Transformer, directory: str | Path, tokenizer: Tokenizer | None = None, *,
              eos_token: str | None = None) -> Path:
    """Write an HF folder that `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer` load."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    specials = tokenizer.special_tokens if tokenizer is not None else {}
    eos_token = eos_token or next(iter(specials), None)
    eos_id = specials.get(eos_token) if eos_token else None
    with atomic_open(directory / "model.safetensors", "wb") as f:
        f.write(save(to_hf_state(model), metadata={"format": "pt"}))
    write_json_atomic(directory / "config.json", to_hf_config(model.cfg, bos_id=None, eos_id=eos_id))
    write_json_atomic(directory / "generation_config.json", {"eos_token_id": eos_id, "bos_token_id": None})
    if tokenizer is not None:
        tokenizer.save(directory)
        write_json_atomic(directory / "tokenizer_config.json", {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": model.cfg.max_seq_len,
            "eos_token": eos_token, "pad_token": eos_token, "bos_token": None,
            "clean_up_tokenization_spaces": False,
            "chat_template": LLMLAB_CHAT_TEMPLATE,
        })
    return directory


def read_hf_weights(directory: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for file in require_safetensors(directory):
        state.update(read_safetensors(file))
    return state


def from_hf(directory: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
            overrides: dict[str, Any] | None = None, tokenizer: bool = True) -> tuple[Transformer, Tokenizer | None]:
    """(llmlab model in eval mode, tokenizer or None) from a local HF Llama/Mistral/Qwen2 folder; with
    tokenizer=False the folder's tokenizer is not read (a caller that tokenizes with transformers, e.g. a
    SentencePiece-style tokenizer.json that llmlab's reader refuses)."""
    directory = Path(directory)
    config_path = directory / "config.json"
    try:
        hf_config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{config_path}: cannot read ({e})") from None
    cfg = from_hf_config(hf_config, source=str(config_path))
    if overrides:
        cfg = replace(cfg, **overrides)
    state = from_hf_state(read_hf_weights(directory), cfg, source=str(directory))
    with torch.device("meta"):
        model = Transformer(cfg)
    model = model.to_empty(device=device)
    if cfg.tie_embeddings:
        model.head.weight = model.embed.weight
    load_state(model, {k: v.float() if dtype is None else v.to(dtype) for k, v in state.items()},
               source=str(directory))
    return model.eval(), load_model_tokenizer(directory, vocab_size=cfg.vocab_size) if tokenizer else None
