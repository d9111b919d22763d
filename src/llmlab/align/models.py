"""Policies for the alignment trainers: load a model folder (llmlab or HF), add LoRA, save it back.

    load_policy(path)   llmlab folder (model.yaml)  -> llmlab Transformer   + ChatTokenizer(llmlab Tokenizer)
                        any other local HF folder   -> AutoModelForCausalLM + ChatTokenizer(HF tokenizer)
    save_policy(model, tok, dir)  the same kind of folder back, LoRA merged into the weights

`ChatTokenizer` gives the trainers one way to turn a prompt and a response into ids, whatever
the tokenizer: the prompt through the chat template up to the assistant's turn opening, the
response as ordinary text followed by the token that closes the turn, so that

    render_prompt(messages) + render_response(text)  ==  the ids of the whole chat's assistant turn

for llmlab's format (tests/align/test_models.py checks it against `render_ids`). Message content is
always text: a user's "<|end|>" never becomes the token, whatever the template (only the template's
own text holds special tokens: tokenizers/chat_template.py, and `_hf_template_ids` for HF tokenizers).

Every loader refuses pickled weights (`model.weights.require_safetensors`) and a tokenizer with more
ids than the model has embeddings (`check_vocab_fits`).

LoRA (Hu et al. 2021, https://arxiv.org/abs/2106.09685) comes from PEFT's
`inject_adapter_in_model`, which swaps the targeted nn.Linear layers in place: the model
stays an llmlab Transformer (or an HF model), so `logprobs.model_logits` runs it unchanged,
and only the adapters' A and B matrices require grad. Left out: QLoRA (4-bit bases),
several adapters at once, and saving adapters alone (we always merge).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from llmlab.align.config import LoraConfig
from llmlab.data.chat import END, render_ids
from llmlab.errors import UserError
from llmlab.model.io import is_llmlab_model, load_model, save_weights
from llmlab.model.llama import Transformer
from llmlab.model.weights import check_vocab_fits, require_safetensors, save_pretrained_atomic
from llmlab.tokenizers.base import Tokenizer
from llmlab.tokenizers.chat_template import content_spans, fill, refuse_specials_in, template_layout

if TYPE_CHECKING:
    pass

Message = dict[str, str]
LLMLAB_LORA_TARGETS = ("qkv", "o", "gate_up", "down")
_EOS_NAMES = (END, "<|endoftext|>", "</s>", "<|eot_id|>", "<|end_of_text|>", "<|im_end|>", "<eos>")


# ---------------------------------------------------------------------- tokenizer


class ChatTokenizer:
    """An llmlab Tokenizer or a transformers tokenizer behind one small interface (see the module doc)."""

    def __init__(self, inner: Any) -> None:

        self.inner = inner
        self.is_llmlab = isinstance(inner, Tokenizer)
        if self.is_llmlab:
            specials = inner.special_tokens
            self.eos_ids: tuple[int, ...] = tuple(specials[n] for n in _EOS_NAMES if n in specials)
            self._closing = [specials[END]] if END in specials else inner.encode_ordinary(END)
            pad = specials.get("<|endoftext|>", self.eos_ids[0] if self.eos_ids else 0)
        else:
            self._closing = self._hf_turn_closing() if inner.chat_template else []
            if not self._closing and inner.eos_token_id is not None:
                self._closing = [inner.eos_token_id]
            closers = [i for i in self._closing if i in _hf_special_ids(inner)]
            eos = [inner.eos_token_id] if inner.eos_token_id is not None else []
            self.eos_ids = tuple(dict.fromkeys(closers + eos))
            pad = inner.pad_token_id if inner.pad_token_id is not None else (eos[0] if eos else 0)
        self.pad_id: int = int(pad)

    @property
    def has_chat_template(self) -> bool:
        return self.is_llmlab or bool(self.inner.chat_template)

    def encode(self, text: str) -> list[int]:
        """Ordinary text: a special token's string in it is encoded as text, never as the special."""
        if self.is_llmlab:
            return self.inner.encode_ordinary(text)
        return self.inner(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        if self.is_llmlab:
            return self.inner.decode(ids)
        return self.inner.decode(ids, skip_special_tokens=False)

    def render_prompt(self, prompt: str | list[Message]) -> list[int]:
        """The prompt through the chat template, ending with the assistant turn's opening.

        A string is one user message. Without a chat template (e.g. GPT-2) a string prompt is
        encoded as it is, and a message list is an error.
        """
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if self.is_llmlab:
            return render_ids(self.inner, messages, add_generation_prompt=True)[0]
        if not self.inner.chat_template:
            if isinstance(prompt, str):
                return self.encode(prompt)
            raise UserError(f"{self.inner.name_or_path}: the tokenizer has no chat template, so conversational "
                            "data cannot be rendered; use string prompts or a model with a chat template")
        return self._hf_template_ids(messages, add_generation_prompt=True)

    def render_response(self, text: str) -> list[int]:
        """The response as ordinary text, then the token(s) that close an assistant turn
        (llmlab: <|end|>; ChatML: <|im_end|>; no template: eos)."""
        return self.encode(text) + self._closing

    def save(self, directory: str | Path) -> None:
        if self.is_llmlab:
            self.inner.save(directory)
        else:
            save_pretrained_atomic(self.inner, directory)

    # -- HF chat templates

    def _hf_template_ids(self, messages: list[Message], *, add_generation_prompt: bool) -> list[int]:
        """As apply_chat_template does (render the text, tokenize it with the markers as specials), except
        that message content never becomes a special token (tokenizers/chat_template.py).

        The whole text is tokenized, as HF does, and kept unless a special token falls inside a
        content's span; then (and for slow tokenizers, which give no offsets) the template's pieces
        (specials allowed) and the contents (as text) are tokenized apart. Whole-text ids first, because
        some tokenizers (SentencePiece-style, with a prefix space per call) tokenize a piece alone
        differently from the same text in context."""

        def render(chat: list[Message]) -> str:
            return self.inner.apply_chat_template(chat, tokenize=False, add_generation_prompt=add_generation_prompt)

        layout = template_layout(render, messages)
        if layout is None:  # the template rewrites content: the slots are unknown
            refuse_specials_in(messages, _hf_special_texts(self.inner))
            return self.inner(render(messages), add_special_tokens=False)["input_ids"]
        whole = self._hf_offsets(fill(layout, messages))
        if whole is not None:
            ids, offsets = whole
            specials, spans = _hf_special_ids(self.inner), content_spans(layout, messages)
            if not any(i in specials and s < b and a < e for i, (s, e) in zip(ids, offsets, strict=True)
                       for a, b in spans):
                return ids
        ids = []
        for piece in layout:
            if isinstance(piece, str):
                ids += self.inner(piece, add_special_tokens=False)["input_ids"]
            else:
                ids += self.encode(messages[piece]["content"])
        return ids

    def _hf_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]] | None:
        """(ids, character spans) of `text` with every special allowed; None for a slow tokenizer."""
        try:
            out = self.inner(text, add_special_tokens=False, return_offsets_mapping=True)
        except NotImplementedError:  # slow (Python) tokenizers have no offsets
            return None
        return out["input_ids"], [tuple(o) for o in out["offset_mapping"]]

    def _hf_turn_closing(self) -> list[int]:
        """What the template writes after an assistant message's content, up to and including the first
        special token (ChatML "<|im_end|>\\n" -> [<|im_end|>]); [] when that cannot be read off."""
        probe = [{"role": "user", "content": "hi"}]
        try:
            head = self.inner.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
            full = self.inner.apply_chat_template([*probe, {"role": "assistant", "content": "ok"}], tokenize=False)
        except Exception:  # templates that refuse this shape (e.g. they require a system turn)
            return []
        if not full.startswith(head + "ok"):
            return []
        tail = self.inner(full[len(head) + 2:], add_special_tokens=False)["input_ids"]
        specials = _hf_special_ids(self.inner)
        for i, token in enumerate(tail):
            if token in specials:
                return tail[: i + 1]
        return []


def _hf_special_ids(tokenizer: Any) -> set[int]:
    """Ids of the named specials (eos, pad, ...) and of every added token (chat markers)."""
    return set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)


def _hf_special_texts(tokenizer: Any) -> list[str]:
    """The texts of those tokens."""
    return list(tokenizer.all_special_tokens) + [t.content for t in tokenizer.added_tokens_decoder.values()]


# ---------------------------------------------------------------------- models


def load_policy(path: str, *, device: str | torch.device, dtype: torch.dtype | None = None,
                lora: LoraConfig | None = None, gradient_checkpointing: bool = False) -> tuple[nn.Module, ChatTokenizer]:
    """(model in train mode, tokenizer) from an llmlab model folder or a local HF causal-LM folder."""

    directory = Path(path)
    if not directory.is_dir():
        raise UserError(f"{path}: no such model folder")
    if is_llmlab_model(directory):
        model, tokenizer = load_model(directory, device=device, dtype=dtype)
        if tokenizer is None:
            raise UserError(f"{path}: the model folder has no tokenizer.json")
        model.gradient_checkpointing = gradient_checkpointing
        tok = ChatTokenizer(tokenizer)
    elif (directory / "config.json").is_file():
        model, tok = _load_hf(directory, device=device, dtype=dtype)
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        raise UserError(f"{path}: not a model folder (no model.yaml, no HF config.json)")
    if lora is not None and lora.r > 0:
        add_lora(model, lora)
    return model.train(), tok


def _load_hf(directory: Path, *, device: str | torch.device, dtype: torch.dtype | None) -> tuple[nn.Module,
                                                                                                ChatTokenizer]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    require_safetensors(directory)  # pickled weights are refused before transformers sees the folder
    try:
        model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=dtype or torch.float32,
                                                     use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError) as e:
        raise UserError(f"{directory}: cannot load with transformers ({str(e).splitlines()[0]})") from None
    check_vocab_fits(hf_tokenizer_ids(tokenizer), model.get_input_embeddings().num_embeddings, source=str(directory))
    return model.to(device), ChatTokenizer(tokenizer)


def hf_tokenizer_ids(tokenizer: Any) -> int:
    """1 + the highest id of a transformers tokenizer, added tokens included."""
    return 1 + max(tokenizer.get_vocab().values())


def load_trainee(path: str, *, resume: str, lora: LoraConfig, device: str | torch.device,
                 gradient_checkpointing: bool) -> tuple[nn.Module, ChatTokenizer]:
    """The policy a trainer starts from: `path` (+ fresh LoRA adapters), or, resuming full-weight
    training, the checkpoint's policy folder (with LoRA the base model again: the checkpoint's
    adapters go in with train.checkpoint.restore)."""
    source = resume if resume and not lora.r else path
    return load_policy(source, device=device, lora=lora if lora.r else None,
                       gradient_checkpointing=gradient_checkpointing)


def context_length(model: nn.Module) -> int:
    """Tokens the model attends over: llmlab's max_seq_len, an HF config's max_position_embeddings
    (n_positions for GPT-2). A reward model answers for its trunk."""
    base = getattr(model, "module", model)
    base = getattr(base, "trunk", base)
    if is_llmlab(base):
        return int(base.cfg.max_seq_len)
    config = getattr(base, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        if isinstance(getattr(config, name, None), int):
            return int(getattr(config, name))
    raise UserError(f"cannot tell the context length of {type(base).__name__}: set max_length")


def sequence_lengths(model: nn.Module, max_length: int, max_prompt_length: int = 0) -> tuple[int, int]:
    """(max_length, max_prompt_length) to encode with: 0 means the model's context length and half of
    max_length. A max_length longer than the model's context is refused: positions past it were
    never trained (llmlab's rotary tables end there) and the run would fail mid-way."""
    context = context_length(model)
    length = max_length or context
    if length > context:
        raise UserError(f"max_length ({length}) is longer than the model's context ({context} tokens); "
                        f"set max_length={context} or less (0: the model's)")
    prompt = max_prompt_length or length // 2
    if not 1 <= prompt < length:
        raise UserError(f"need 1 <= max_prompt_length ({prompt}) < max_length ({length})")
    return length, prompt


def is_llmlab(model: nn.Module) -> bool:

    return isinstance(getattr(model, "module", model), Transformer)


def add_lora(model: nn.Module, cfg: LoraConfig) -> nn.Module:
    """Swap the target linear layers for LoRA layers in place; freeze everything else."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import inject_adapter_in_model

    targets: Any = list(cfg.target_modules) or (list(LLMLAB_LORA_TARGETS) if is_llmlab(model) else "all-linear")
    peft_cfg = PeftLoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets)
    try:
        return inject_adapter_in_model(peft_cfg, model)
    except ValueError as e:  # "Target modules {...} not found in the base model"
        raise UserError(f"lora.target_modules: {str(e).splitlines()[0]}") from None


def _lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from peft.tuners.lora import LoraLayer

    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its base weight (W + alpha/r B A) and put the plain layer back."""
    for name, layer in _lora_layers(model):
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.get_base_layer())
    return model


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of `model` with LoRA folded in and the base names restored, without changing
    the model (for checkpoints mid-training). A model without LoRA gives its plain state dict."""
    state = model.state_dict()
    layers = _lora_layers(model)
    if not layers:
        return state
    out = {k.replace(".base_layer.", "."): v for k, v in state.items() if ".lora_" not in k}
    for name, layer in layers:
        key = f"{name}.weight"
        for adapter in layer.active_adapters:
            out[key] = out[key] + layer.get_delta_weight(adapter).to(out[key].dtype)
    return out


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(parameters that require grad, all parameters), shared tensors counted once."""
    seen = {id(p): p for p in model.parameters()}
    return sum(p.numel() for p in seen.values() if p.requires_grad), sum(p.numel() for p in seen.values())


def save_policy(model: nn.Module, tokenizer: ChatTokenizer, directory: str | Path) -> Path:
    """An llmlab folder for llmlab models, an HF folder (safetensors) for HF models, with LoRA folded
    into the weights (`merged_state_dict`; the model itself keeps its adapters, so training can go on).
    Every file is written atomically."""
    directory = Path(directory)
    model = getattr(model, "module", model)
    state = merged_state_dict(model)
    if is_llmlab(model):
        save_weights(model.cfg, state, directory, tokenizer.inner)
    else:
        save_pretrained_atomic(model, directory, state_dict=state, safe_serialization=True)
        tokenizer.save(directory)
    return directory
