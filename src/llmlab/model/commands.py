"""`llmlab generate`, `llmlab chat` and `llmlab export-hf`: thin commands over the model package."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from llmlab.context import Context
from llmlab.data.chat import END, render_ids
from llmlab.errors import UserError
from llmlab.model.config import ChatConfig, ExportHFConfig, GenerateTextConfig, SamplingOptions
from llmlab.runs import occupied
from llmlab.tokenizers.base import Tokenizer
from llmlab.tokenizers.chat_template import template_ids


def _load(opts: SamplingOptions) -> tuple[Any, Tokenizer, Any]:
    # torch and the modules on it are imported when a command runs, not with its config (`--print-config`)
    import torch

    from llmlab.model.device import pick_device
    from llmlab.model.io import load_model

    device = pick_device(opts.device)
    model, tokenizer = load_model(opts.model, device=device,
                                  dtype=torch.bfloat16 if device.type == "cuda" else None)
    if tokenizer is None:
        raise UserError(f"{opts.model}: the model folder has no tokenizer.json")
    generator = torch.Generator(device=device).manual_seed(opts.seed)
    return model, tokenizer, generator


def _sampling(opts: SamplingOptions, stop_tokens: tuple[int, ...], tokenizer: Tokenizer) -> Any:
    from llmlab.model.generate import SamplingConfig  # torch: imported when the command runs

    return SamplingConfig(max_new_tokens=opts.max_new_tokens, temperature=opts.temperature, top_k=opts.top_k,
                          top_p=opts.top_p, repetition_penalty=opts.repetition_penalty, stop_tokens=stop_tokens,
                          vocab_limit=tokenizer.id_count)


def stop_token_ids(tokenizer: Tokenizer) -> tuple[int, ...]:
    """The end-of-text and end-of-turn ids the tokenizer has: generation stops after one (`chat`, `serve`)."""
    names = (END, "<|endoftext|>", "</s>", "<|eot_id|>", "<|end_of_text|>", "<|im_end|>", "<eos>")
    return tuple(tokenizer.special_tokens[n] for n in names if n in tokenizer.special_tokens)


def _fit(ids: list[int], model: Any, max_new_tokens: int) -> list[int]:
    """Keep the end of an over-long prompt so prompt + new tokens fit the model's context, and say on
    stderr how much was cut (never silently)."""
    room = model.cfg.max_seq_len - max_new_tokens
    if room < 1:
        raise UserError(f"max_new_tokens ({max_new_tokens}) leaves no room for a prompt in max_seq_len "
                        f"{model.cfg.max_seq_len}")
    if len(ids) > room:
        print(f"note: the prompt has {len(ids)} tokens; its first {len(ids) - room} were cut so that it and "
              f"max_new_tokens={max_new_tokens} fit the model's {model.cfg.max_seq_len} positions", file=sys.stderr)
    return ids[-room:]


def _stream(model: Any, tokenizer: Tokenizer, ids: list[int], opts: SamplingOptions, generator: Any) -> str:
    """Print the continuation as it is generated; return it."""
    from llmlab.model.generate import Engine  # torch: imported when the command runs

    stops = stop_token_ids(tokenizer)
    decoder = tokenizer.stream_decoder()
    pieces = []
    for (token,) in Engine(model).stream([_fit(ids, model, opts.max_new_tokens)], _sampling(opts, stops, tokenizer),
                                         generator=generator):
        if token is None or token in stops:
            break
        piece = decoder.push(token)
        pieces.append(piece)
        sys.stdout.write(piece)
        sys.stdout.flush()
    tail = decoder.flush()
    sys.stdout.write(tail + "\n")
    return "".join(pieces) + tail


def chat_prompt_ids(tokenizer: Tokenizer, messages: list[dict[str, str]], model_dir: str) -> list[int]:
    """The model's own chat template when its folder carries one (tokenizer_config.json, HF style),
    else llmlab's; ends with the assistant's turn opening. Special tokens come from the template
    only: a user who types "<|end|>" gets its text, never the token (tokenizers/chat_template.py)."""
    config = Path(model_dir) / "tokenizer_config.json"
    template = json.loads(config.read_text(encoding="utf-8")).get("chat_template") if config.is_file() else None
    if not template:
        return render_ids(tokenizer, messages, add_generation_prompt=True)[0]
    import jinja2.sandbox  # an optional dependency (it comes with transformers), needed for HF templates only

    compiled = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(template)

    def render(chat: list[dict[str, str]]) -> str:
        return compiled.render(messages=chat, add_generation_prompt=True, bos_token="", eos_token="")

    # markers written by the template are specials (HF's behaviour); message content is always text
    return template_ids(tokenizer, render, messages)


def generate(cfg: GenerateTextConfig, ctx: Context) -> int:
    if not cfg.prompt:
        raise UserError("give a prompt: --prompt TEXT")
    model, tokenizer, generator = _load(cfg)
    if cfg.chat:
        ids = chat_prompt_ids(tokenizer, [{"role": "user", "content": cfg.prompt}], cfg.model)
    else:
        ids = tokenizer.encode(cfg.prompt)
    if not ids:
        raise UserError("the prompt encodes to no tokens")
    _stream(model, tokenizer, ids, cfg, generator)
    return 0


CHAT_HELP = "commands: /reset forgets the conversation, /exit ends it (so does Ctrl-D), /help shows this"


def chat(cfg: ChatConfig, ctx: Context) -> int:
    """Read user turns from stdin (one line each; /reset forgets the conversation, /exit ends it, /help
    lists the commands; a line starting with "/" is never sent to the model). Bytes that are not UTF-8
    become U+FFFD instead of ending the session."""
    model, tokenizer, generator = _load(cfg)
    system = [{"role": "system", "content": cfg.system}] if cfg.system else []
    messages = list(system)
    interactive = sys.stdin.isatty()
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="replace")
    if interactive:
        print(CHAT_HELP, file=sys.stderr)
    while True:
        if interactive:
            sys.stdout.write("you> ")
            sys.stdout.flush()
        line = sys.stdin.readline()
        command = line.strip()
        if not line or command == "/exit":
            return 0
        if command == "/reset":
            messages = list(system)
            print("(conversation reset)", file=sys.stderr)
            continue
        if command.startswith("/"):
            print(CHAT_HELP if command == "/help" else f"unknown command {command}; {CHAT_HELP}", file=sys.stderr)
            continue
        if not command:
            continue
        messages.append({"role": "user", "content": line.rstrip("\n")})
        if interactive:
            sys.stdout.write("model> ")
        reply = _stream(model, tokenizer, chat_prompt_ids(tokenizer, messages, cfg.model), cfg, generator)
        messages.append({"role": "assistant", "content": reply})


def export_hf(cfg: ExportHFConfig, ctx: Context) -> int:
    # torch: imported when the command runs, not with its config
    from llmlab.model.hf_io import export_hf as write_hf
    from llmlab.model.io import is_llmlab_model, load_model

    if not is_llmlab_model(cfg.model):
        raise UserError(f"{cfg.model}: not an llmlab model folder (no model.yaml)")
    if found := occupied(Path(cfg.out)):  # never over a run, a model, or the folder being read
        raise UserError(f"--out {cfg.out}: already holds a run or a model ({', '.join(found[:3])}); choose a new "
                        "folder")
    model, tokenizer = load_model(cfg.model)
    out = write_hf(model, cfg.out, tokenizer)
    if not ctx.quiet:
        print(f"wrote {out}: load it with transformers.AutoModelForCausalLM.from_pretrained({str(out)!r})",
              file=sys.stderr)
    return 0
