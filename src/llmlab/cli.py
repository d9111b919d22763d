"""`llmlab <command>`: maps subcommands onto plain functions.

Each command is a row of `COMMANDS`: its name, its help, the config dataclass it is
configured by, the function that runs it, and the flags that are shortcuts for config
keys (`--kind eval` is the same as `kind=eval`). Both the config class and the function
are named by import path and imported only when that command runs, so `llmlab --help`
and the light commands never import torch.

Every command takes `--config FILE.yaml`, dotted `key=value` overrides and
`--print-config`; precedence is defaults < YAML < flags < overrides. Commands that
produce a run folder also take `--out DIR` and `--quiet`.

Overrides may stand anywhere on the line, before or after flags. A flag that takes several
values (`--input A B`) stops at a `dotted.key=value`, unless a file of that name exists (and
`--language-input LANG=FILE`, whose values hold an '=', only at one of the command's config keys):

    llmlab dpo --input prefs.jsonl rpo_alpha=1 --out runs/dpo   # input=[prefs.jsonl], rpo_alpha=1

Flags are never abbreviated (`--max-step` is an error, not `--max-steps`).

An `LlmlabWarning` becomes one line `warning: ...` on stderr. A `UserError` becomes one line
`error: ...` on stderr and exit code 2; `--debug` or
`LLMLAB_DEBUG=1` shows the traceback. So do the OS errors that are the user's to fix
(no space left on device, permission denied), which name the file where there is one.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import re
import sys
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmlab import __version__
from llmlab.config import load_config, to_yaml, valid_keys, without_required
from llmlab.context import Context
from llmlab.errors import LlmlabWarning, UserError
from llmlab.runs import outcome


@dataclass(frozen=True)
class Flag:
    """A command-line shortcut for one config key."""

    name: str
    key: str
    help: str
    metavar: str | None = None
    nargs: str | None = None  # "+" for a list of values (a tuple config key)
    switch: bool = False  # a flag without a value that sets the key to `const` (`--ids`)
    const: str = "true"


@dataclass(frozen=True)
class Command:
    name: str  # "data generate": words of the subcommand path
    help: str
    config: str  # "module:Class"
    run: str  # "module:function" taking (cfg, Context) and returning an exit code
    flags: tuple[Flag, ...] = ()
    run_folder: bool = True  # takes --out DIR / --quiet and writes runs/<name>-<time>/
    epilog: str = ""
    out_key: str | None = None  # a config key naming a folder the command writes (checked like --out)


SAMPLING_FLAGS = (  # shared by `generate` and `chat`
    Flag("--max-new-tokens", "max_new_tokens", "tokens to generate at most", "N"),
    Flag("--temperature", "temperature", "0 is greedy; higher is more random", "T"),
    Flag("--top-k", "top_k", "sample among the k most likely tokens", "K"),
    Flag("--top-p", "top_p", "sample among the most likely tokens holding probability p (nucleus)", "P"),
    Flag("--seed", "seed", "seed of the sampler", "S"),
    Flag("--device", "device", "auto | cpu | cuda", "D"),
)

TRAINER_FLAGS = (  # shared by every trainer: pretrain, sft, rm train, dpo
    Flag("--resume", "resume", "continue a run folder or checkpoint exactly where it stopped", "DIR"),
    Flag("--max-steps", "train.max_steps", "optimizer steps", "N"),
    Flag("--device", "train.device", "auto | cpu | cuda", "D"),
)

ONLINE_FLAGS = (  # shared by ppo, grpo and rloo
    Flag("--model", "model", "the policy to start from (an SFT run): an llmlab or local HF model folder", "DIR"),
    Flag("--input", "data.input", "{prompt} rows (default: task-world train prompts, data.tasks.* set difficulty)",
         "FILE", nargs="+"),
    Flag("--reward-model", "reward.reward_model", "a reward model folder (scored as the proxy; weight reward.rm)",
         "DIR"),
    Flag("--kl-coef", "kl_coef", "weight of the KL to the reference (beta)", "B"),
    Flag("--samples", "rollout.samples", "responses per prompt (the group size G)", "G"),
    *TRAINER_FLAGS,
)

# what `--tokenizer` reads (llmlab.tokenizers.hf_io.load_tokenizer sniffs the format)
_TOKENIZER_FILES = "tokenizer.json, .model, .tiktoken, BERT vocab.txt, GPT-2 vocab.json"

COMMANDS: tuple[Command, ...] = (
    Command(
        "data generate",
        "generate task-world data: a pretraining corpus, SFT chats, preference pairs or eval prompts",
        config="llmlab.data.config:GenerateConfig",
        run="llmlab.data.commands:generate",
        flags=(
            Flag("--kind", "kind", "pretrain | sft | prefs | eval | multilingual | code-mixed", "KIND"),
            Flag("--n", "n", "rows to write (pretrain: documents, unless --chars)", "N"),
            Flag("--chars", "chars", "pretrain only: stop at this many characters", "C"),
            Flag("--seed", "seed", "seed of the world and of sampling", "S"),
            Flag("--out", "out", "output file (.jsonl; pretrain, multilingual, code-mixed also .txt); '-' for stdout",
                 "FILE"),
        ),
        run_folder=False,
        epilog="example: llmlab data generate --kind prefs --n 2000 --seed 0 --out prefs.jsonl "
        "prefs.length_bias=0.8 prefs.label_noise=0.1",
    ),
    Command(
        "data score",
        "score {prompt, response} rows with the task world's gold scorers",
        config="llmlab.data.config:ScoreConfig",
        run="llmlab.data.commands:score",
        flags=(
            Flag("--input", "input", "JSONL / parquet / HF dataset of {prompt, response} rows", "FILE"),
            Flag("--out", "out", "also write the report as JSON here", "FILE"),
        ),
        run_folder=False,
        epilog="example: llmlab data score --input responses.jsonl --out scores.json",
    ),
    Command(
        "data validate",
        "check a data file against a schema (text, chat, prefs, responses, eval)",
        config="llmlab.data.config:ValidateConfig",
        run="llmlab.data.commands:validate",
        flags=(
            Flag("--input", "input", "the file or HF dataset folder to check", "FILE"),
            Flag("--schema", "schema", "text | chat | prefs | responses | eval", "NAME"),
        ),
        run_folder=False,
        epilog="example: llmlab data validate --input my_prefs.jsonl --schema prefs",
    ),
    Command(
        "tokenizer train",
        "train a BPE, WordPiece or Unigram tokenizer; writes tokenizer.json (HF format) and vocab.txt",
        config="llmlab.tokenizers.config:TrainTokenizerConfig",
        run="llmlab.tokenizers.commands:train",
        flags=(
            Flag("--algo", "algo", "bpe | wordpiece | unigram", "ALGO"),
            Flag("--vocab-size", "vocab_size", "256 bytes + merges + special tokens", "N"),
            Flag("--input", "input", "text files (default: the task world's pretraining corpus)", "FILE", nargs="+"),
            Flag("--pre-tokenizer", "pre_tokenizer", "gpt2 | cl100k | digits | whitespace | script (bpe, unigram)",
                 "NAME"),
            Flag("--language-input", "language_input", "LANG=FILE per language (with language_alpha=0.3: "
                 "temperature-sampled, as XLM-R)", "LANG=FILE", nargs="+"),
            Flag("--errors", "errors", "strict (default) or replace: what to do with non-UTF-8 bytes", "MODE"),
        ),
        epilog="example: llmlab tokenizer train --vocab-size 8192 --input corpus.txt --out runs/tok8k",
    ),
    Command(
        "tokenizer encode",
        "encode text: tokens coloured in a terminal, or ids with --ids",
        config="llmlab.tokenizers.config:EncodeConfig",
        run="llmlab.tokenizers.commands:encode",
        flags=(
            Flag("--tokenizer", "tokenizer", f"a tokenizer file or its folder ({_TOKENIZER_FILES})", "DIR"),
            Flag("--text", "text", "the text to encode", "TEXT"),
            Flag("--input", "input", "a file to encode", "FILE"),
            Flag("--ids", "ids", "print token ids instead of tokens", switch=True),
            Flag("--allowed-special", "allowed_special", "special tokens to honour in the text, or 'all'", "S",
                 nargs="+"),
        ),
        run_folder=False,
        epilog="example: llmlab tokenizer encode --tokenizer runs/tok8k --text 'Hello world' --ids",
    ),
    Command(
        "tokenizer decode",
        "decode token ids (space or comma separated) back to text",
        config="llmlab.tokenizers.config:DecodeConfig",
        run="llmlab.tokenizers.commands:decode",
        flags=(
            Flag("--tokenizer", "tokenizer", f"a tokenizer file or its folder ({_TOKENIZER_FILES})", "DIR"),
            Flag("--ids", "ids", "the ids, e.g. '72 101 108'", "IDS"),
            Flag("--input", "input", "a file of ids", "FILE"),
        ),
        run_folder=False,
        epilog="example: llmlab tokenizer decode --tokenizer runs/tok8k --ids '464 3290 318'",
    ),
    Command(
        "tokenizer stats",
        "analyse tokenizers on texts: bytes/token, fertility, UNKs, vocabulary use, per script, premium",
        config="llmlab.tokenizers.config:StatsConfig",
        run="llmlab.tokenizers.commands:stats",
        flags=(
            Flag("--tokenizer", "tokenizer", f"tokenizer files or folders ({_TOKENIZER_FILES})", "DIR", nargs="+"),
            Flag("--eval", "eval", "text files (default: built-in parallel sentences in 7 languages)", "FILE",
                 nargs="+"),
        ),
        epilog="example: llmlab tokenizer stats --tokenizer runs/tok8k runs/tok32k --eval held_out.txt",
    ),
    Command(
        "tokenizer compare",
        "tokenize one text with several tokenizers: a table and the tokens coloured (terminal and HTML)",
        config="llmlab.tokenizers.config:CompareConfig",
        run="llmlab.tokenizers.commands:compare",
        flags=(
            Flag("--tokenizer", "tokenizer", f"tokenizer files or folders ({_TOKENIZER_FILES})", "DIR", nargs="+"),
            Flag("--text", "text", "the text", "TEXT"),
            Flag("--input", "input", "a file with the text", "FILE"),
        ),
        epilog="example: llmlab tokenizer compare --tokenizer runs/bpe runs/unigram --text 'Привет, world!'",
    ),
    Command(
        "tokenizer sweep",
        "train a grid of algorithms x vocabulary sizes; writes a table and compression vs vocab size",
        config="llmlab.tokenizers.config:SweepConfig",
        run="llmlab.tokenizers.commands:sweep",
        flags=(
            Flag("--algos", "algos", "comma-separated: bpe,wordpiece,unigram", "A,B"),
            Flag("--vocab-sizes", "vocab_sizes", "comma-separated, k = 1024: 1k,4k,16k", "N,M"),
            Flag("--input", "input", "training text files (default: built-in corpora)", "FILE", nargs="+"),
            Flag("--eval", "eval", "evaluation text files (default: built-in multilingual + code-mixed)", "FILE",
                 nargs="+"),
        ),
        epilog="example: llmlab tokenizer sweep --algos bpe,unigram --vocab-sizes 1k,4k,16k --out runs/sweep",
    ),
    Command(
        "tokenizer extend",
        "add domain tokens to a BPE tokenizer (learned merges or given strings); old ids unchanged",
        config="llmlab.tokenizers.config:ExtendConfig",
        run="llmlab.tokenizers.commands:extend",
        flags=(
            Flag("--tokenizer", "tokenizer", "the BPE tokenizer to extend (folder or tokenizer.json)", "DIR"),
            Flag("--domain", "domain", "a text file of the domain (to learn tokens and report the gain)", "FILE"),
            Flag("--num-tokens", "num_tokens", "new tokens to learn on --domain", "N"),
            Flag("--tokens", "tokens", "or: comma-separated strings to add as tokens", "A,B"),
        ),
        epilog="example: llmlab tokenizer extend --tokenizer runs/tok8k --domain k8s.txt --num-tokens 200 "
        "--out runs/tok8k-k8s",
    ),
    Command(
        "pretrain",
        "pretrain a Llama-style model (next-token prediction) on text or the built-in corpus; resumable, torchrun",
        config="llmlab.train.config:PretrainConfig",
        run="llmlab.train.commands:pretrain",
        flags=(
            Flag("--input", "data.input", "text / JSONL / parquet files or HF datasets on disk (default: built-in)",
                 "FILE", nargs="+"),
            Flag("--tokenizer", "data.tokenizer", "a tokenizer folder (default: train a BPE on the data)", "DIR"),
            *TRAINER_FLAGS,
        ),
        epilog="example: llmlab pretrain --out runs/pt model.d_model=256 model.n_layers=4 train.max_steps=2000\n"
        "         torchrun --nproc_per_node=2 -m llmlab pretrain --out runs/pt-ddp train.batch_size=16",
    ),
    Command(
        "generate",
        "continue a prompt with a model (llmlab folder or local HF Llama/Mistral/Qwen2 folder), streaming",
        config="llmlab.model.config:GenerateTextConfig",
        run="llmlab.model.commands:generate",
        flags=(
            Flag("--model", "model", "an llmlab model folder or a local HF model folder", "DIR"),
            Flag("--prompt", "prompt", "the text to continue", "TEXT"),
            Flag("--chat", "chat", "send the prompt as a user turn of the model's chat template", switch=True),
            *SAMPLING_FLAGS,
        ),
        run_folder=False,
        epilog="example: llmlab generate --model runs/pt --prompt 'Once upon a time' --temperature 0",
    ),
    Command(
        "chat",
        "talk to a model in the terminal (its own chat template, else llmlab's); /reset, /exit",
        config="llmlab.model.config:ChatConfig",
        run="llmlab.model.commands:chat",
        flags=(
            Flag("--model", "model", "an llmlab model folder or a local HF model folder", "DIR"),
            Flag("--system", "system", "a system message", "TEXT"),
            *SAMPLING_FLAGS,
        ),
        run_folder=False,
        epilog="example: llmlab chat --model runs/sft --temperature 0.7",
    ),
    Command(
        "serve",
        "serve a model over HTTP with the OpenAI API (completions, chat, streaming) on a continuous-batching "
        "engine; local only by default",
        config="llmlab.serve.config:ServeConfig",
        run="llmlab.serve.commands:serve",
        flags=(
            Flag("--model", "model", "an llmlab model folder or a local HF model folder", "DIR"),
            Flag("--name", "name", "the model id clients send (default: the folder's name)", "NAME"),
            Flag("--host", "host", "address to listen on (default 127.0.0.1; 0.0.0.0 is every interface)", "HOST"),
            Flag("--port", "port", "TCP port (default 8000; 0 picks a free one)", "PORT"),
            Flag("--device", "device", "auto | cpu | cuda", "D"),
            Flag("--max-batch", "max_batch", "requests the engine advances together", "N"),
        ),
        run_folder=False,
        epilog="example: llmlab serve --model runs/sft --port 8000\n"
        "         curl localhost:8000/v1/chat/completions -H 'Content-Type: application/json' "
        "-d '{\"model\": \"sft\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}'",
    ),
    Command(
        "review serve",
        "a web page on which a person labels pairs of responses (left / right / tie / skip, undo) into "
        "preference data, with the agreement with gold labels and AI judges; local only by default",
        config="llmlab.serve.config:ReviewConfig",
        run="llmlab.serve.review:review_serve",
        flags=(
            Flag("--pairs", "pairs", "JSONL of {prompt, a, b} or {prompt, chosen, rejected} rows", "FILE"),
            Flag("--out", "out", "the preferences (JSONL, for dpo / rm train); every decision goes to its sibling "
                 "NAME.labels.jsonl", "FILE"),
            Flag("--compare", "compare", "AI judges' label files to compare on /agreement", "NAME=FILE,..."),
            Flag("--seed", "seed", "draws which response of each pair is shown on the left", "S"),
            Flag("--host", "host", "address to listen on (default 127.0.0.1)", "HOST"),
            Flag("--port", "port", "TCP port (default 8001; 0 picks a free one)", "PORT"),
        ),
        run_folder=False,
        epilog="example: llmlab review serve --pairs prefs.jsonl --out human.jsonl --port 8001\n"
        "         then open http://127.0.0.1:8001/ (keys: left/1, right/2, down/3 tie, s skip, u undo)",
    ),
    Command(
        "export-hf",
        "write an llmlab model as a Hugging Face folder (LlamaForCausalLM + tokenizer) for transformers",
        config="llmlab.model.config:ExportHFConfig",
        run="llmlab.model.commands:export_hf",
        flags=(
            Flag("--model", "model", "the llmlab model folder", "DIR"),
            Flag("--out", "out", "the HF folder to write", "HF_DIR"),
        ),
        run_folder=False,
        epilog="example: llmlab export-hf --model runs/pt --out hf/pt && "
        "python -c \"import transformers as t; t.AutoModelForCausalLM.from_pretrained('hf/pt')\"",
        out_key="out",
    ),
    Command(
        "convert gqa",
        "MHA -> GQA: pool a model's key/value heads into G groups, uptrain 5% of its pretraining steps, and "
        "measure perplexity, greedy agreement, KV bytes and tokens/s against the original",
        config="llmlab.inference.config:GQAConvertConfig",
        run="llmlab.inference.convert:command",
        flags=(
            Flag("--model", "model", "an llmlab model folder; a pretrain run folder also gives the uptraining recipe",
                 "DIR"),
            Flag("--kv-heads", "n_kv_heads", "key/value heads after conversion (must divide the model's)", "G"),
            Flag("--method", "method", "mean (pool each group's heads, the paper) | first (keep its first head)",
                 "NAME"),
            Flag("--uptrain-steps", "uptrain_steps", "uptraining steps (default: uptrain_fraction=0.05 of the "
                 "pretraining run's; 0: none)", "N"),
            Flag("--input", "data.input", "the pretraining data (default: the pretraining run's, else built-in)",
                 "FILE", nargs="+"),
            Flag("--device", "train.device", "auto | cpu | cuda", "D"),
        ),
        epilog="example: llmlab convert gqa --model runs/pt --kv-heads 2 --out runs/pt-gqa2\n"
        "         llmlab convert gqa --model runs/pt --kv-heads 1 --method first --uptrain-steps 0 "
        "eval.max_ppl_ratio=1.1 --out runs/pt-mqa",
    ),
    Command(
        "viz attention",
        "attention maps of your text through a trained model (--model) or a random reference model (PNG + HTML)",
        config="llmlab.viz.config:VizAttentionConfig",
        run="llmlab.viz.commands:viz_attention",
        flags=(
            Flag("--text", "text", "the text: split into words and punctuation (at most 512 tokens)", "TEXT"),
            Flag("--model", "model", "a trained model folder (llmlab or HF); default: a random reference model",
                 "DIR"),
            Flag("--layer", "layer", "only this layer in the PNG (0-based; the HTML has them all)", "L"),
            Flag("--head", "head", "only this head in the PNG (0-based)", "H"),
            Flag("--seed", "seed", "seed of the random weights and token vectors", "S"),
        ),
        epilog="example: llmlab viz attention --text 'The cat sat on the mat. The cat slept.' --layer 1 "
        "--out runs/attn n_heads=8",
    ),
    Command(
        "attention explain",
        "FLOPs, bytes moved, KV-cache size and arithmetic intensity of naive, flash, GQA, window and decode",
        config="llmlab.viz.config:AttentionExplainConfig",
        run="llmlab.viz.commands:explain_attention",
        flags=(
            Flag("--seq-len", "seq_len", "tokens in the sequence (and in the KV cache for decode)", "T"),
            Flag("--heads", "n_heads", "query heads", "H"),
            Flag("--kv-heads", "n_kv_heads", "key/value heads (H: MHA, 1: MQA, between: GQA)", "G"),
            Flag("--head-dim", "head_dim", "size of one head", "D"),
            Flag("--window", "window", "sliding-window size, adds the window rows", "W"),
            Flag("--dtype-bytes", "dtype_bytes", "bytes per value: 2 bf16/fp16, 4 fp32, 1 fp8", "B"),
            Flag("--batch", "batch", "sequences decoded together", "B"),
            Flag("--preset", "presets", "hardware what-if of whole named models instead: llama-3-8b, llama-3-70b, "
                 "llama-3-70b-mha, mistral-7b, or all", "NAME", nargs="+"),
            Flag("--dtype", "dtypes", "what-if dtypes: bf16 fp8", "NAME", nargs="+"),
            Flag("--accelerator", "accelerators", "what-if accelerators: h100-sxm a100-80gb mi300x l4", "NAME",
                 nargs="+"),
        ),
        run_folder=False,
        epilog="example: llmlab attention explain --seq-len 8192 --heads 32 --kv-heads 8 --head-dim 128 "
        "--window 4096 n_layers=32 batch=8;  what-if: llmlab attention explain --preset llama-3-70b "
        "--seq-len 8192 --batch 1 --accelerator h100-sxm a100-80gb",
    ),
    Command(
        "profile",
        "profile one prefill and N decode steps of the KV-cache engine: time by model part and by op, peak "
        "memory, prefill and per-token decode time; writes profile.md, profile.json and a Perfetto trace.json",
        config="llmlab.inference.config:ProfileConfig",
        run="llmlab.inference.profile:profile",
        flags=(
            Flag("--model", "model", "an llmlab model folder or a local HF Llama / Mistral / Qwen2 folder", "DIR"),
            Flag("--batch", "batch", "prompts decoded together", "B"),
            Flag("--prompt-len", "prompt_len", "tokens per prompt (seeded random ids)", "T"),
            Flag("--new-tokens", "new_tokens", "tokens generated per prompt (decode steps + 1)", "N"),
            Flag("--device", "device", "auto | cpu | cuda", "D"),
        ),
        epilog="example: llmlab profile --model runs/pt --batch 4 --prompt-len 64 --new-tokens 32 --out runs/prof",
    ),
    Command(
        "bench attention",
        "check, then time naive, sdpa and flash attention (prefill forward / forward+backward, decode) and "
        "measure their peak memory; writes table.md, results.json and attention.png",
        config="llmlab.bench.config:BenchAttentionConfig",
        run="llmlab.bench.attention:bench_attention",
        flags=(
            Flag("--max-len", "max_len", "longest prefill; lengths double from min_len (256)", "T"),
            Flag("--heads", "heads", "query heads", "H"),
            Flag("--kv-heads", "kv_heads", "key/value heads of the GQA rows (= --heads: MHA rows only)", "G"),
            Flag("--head-dim", "head_dim", "size of one head", "D"),
            Flag("--backends", "backends", "backends to time: naive sdpa flash (naive is the oracle either way)",
                 "NAME", nargs="+"),
            Flag("--repeats", "repeats", "timed runs per case after the measured one; the median is kept", "N"),
        ),
        epilog="example: llmlab bench attention --max-len 2048 --backends sdpa flash --out runs/bench-attn threads=2",
    ),
    Command(
        "bench inference",
        "time every attention backend on one model with the KV-cache Engine (TTFT, ms/token, tokens/s, memory) "
        "and gate each on quality against the model as saved; writes table.md, results.json and inference.png",
        config="llmlab.bench.config:BenchInferenceConfig",
        run="llmlab.bench.inference:bench_inference",
        flags=(
            Flag("--model", "model", "an llmlab or HF model folder", "DIR"),
            Flag("--attention", "attention", "backends, comma-separated: naive,sdpa,flash,triton (triton: CUDA only)",
                 "LIST"),
            Flag("--text", "text", "a held-out text file for the quality gate (default: task-world documents)",
                 "FILE"),
            Flag("--new-tokens", "new_tokens", "tokens generated per prompt", "N"),
            Flag("--repeats", "repeats", "timed generate calls per backend and batch size", "N"),
        ),
        epilog="example: llmlab bench inference --model runs/pt --attention naive,sdpa,flash --out runs/bench-inf "
        "batches=[1,8] tolerance.flash=1e-4",
    ),
    Command(
        "sft",
        "supervised fine-tuning on chats (loss on assistant tokens only); LoRA, packing, torchrun",
        config="llmlab.align.config:SFTConfig",
        run="llmlab.align.sft:command",
        flags=(
            Flag("--model", "model", "the model to fine-tune: an llmlab or local HF model folder", "DIR"),
            Flag("--input", "data.input", "chat files {messages: [...]} (default: the task world's SFT chats)",
                 "FILE", nargs="+"),
            Flag("--packing", "packing", "concatenate chats into max_length sequences", switch=True),
            *TRAINER_FLAGS,
        ),
        epilog="example: llmlab sft --model runs/pt --out runs/sft train.max_steps=500 lora.r=16\n"
        "         llmlab generate --model runs/sft --chat --prompt 'What is 12+30?' --temperature 0",
    ),
    Command(
        "rm train",
        "train a reward model (Bradley-Terry on preference pairs) on a model's trunk; reports pairwise accuracy",
        config="llmlab.align.config:RewardModelConfig",
        run="llmlab.align.rm_train:command",
        flags=(
            Flag("--model", "model", "the trunk to start from (e.g. an sft run): llmlab or local HF folder", "DIR"),
            Flag("--input", "data.input", "preference files {prompt, chosen, rejected} (default: the task world)",
                 "FILE", nargs="+"),
            Flag("--margin", "margin", "ask for r_chosen - r_rejected >= margin", "M"),
            *TRAINER_FLAGS,
        ),
        epilog="example: llmlab rm train --model runs/sft --out runs/rm train.max_steps=300\n"
        "         llmlab rm score --model runs/rm --prompt 'What is 2+2?' --response '4'",
    ),
    Command(
        "rm score",
        "score (prompt, response) pairs with a reward model: one number, or JSON lines for --input",
        config="llmlab.align.config:ScoreRMConfig",
        run="llmlab.align.rm_train:score_command",
        flags=(
            Flag("--model", "model", "a reward model folder (an `llmlab rm train` run)", "DIR"),
            Flag("--prompt", "prompt", "the prompt (rendered with the model's chat template)", "TEXT"),
            Flag("--response", "response", "the response to score", "TEXT"),
            Flag("--input", "input", "JSONL / parquet / HF dataset of {prompt, response} rows", "FILE"),
            Flag("--device", "device", "auto | cpu | cuda", "D"),
        ),
        run_folder=False,
        epilog="example: llmlab rm score --model runs/rm --input responses.jsonl > rewards.jsonl",
    ),
    Command(
        "dpo",
        "preference-tune a model (DPO, IPO, hinge, cDPO, robust, SimPO, ORPO, KTO) on pairs; evaluates at the end",
        config="llmlab.align.config:DPOConfig",
        run="llmlab.eval.prefs:dpo_command",
        flags=(
            Flag("--model", "model", "the policy to start from: an llmlab or local HF model folder", "DIR"),
            Flag("--loss", "loss", "sigmoid | hinge | ipo | cdpo | robust | simpo | orpo | kto", "NAME"),
            Flag("--beta", "beta", "KL strength (SimPO: reward scale; ORPO: odds-ratio weight)", "B"),
            Flag("--input", "data.input", "preference files {prompt, chosen, rejected} (default: the task world)",
                 "FILE", nargs="+"),
            Flag("--reference", "reference", "copy (a frozen second model) | precompute (one pass, then freed)",
                 "MODE"),
            *TRAINER_FLAGS,
        ),
        epilog="example: llmlab dpo --model runs/sft --loss sigmoid --beta 0.1 --out runs/dpo train.lr=5e-6\n"
        "         torchrun --nproc_per_node=2 -m llmlab dpo --model runs/sft --reference precompute lora.r=16",
    ),
    Command(
        "grpo",
        "online RL with GRPO: G sampled answers per prompt, group-normalised advantages, no critic",
        config="llmlab.align.config:GRPOConfig",
        run="llmlab.eval.online_run:online_command",
        flags=ONLINE_FLAGS,
        epilog="example: llmlab grpo --model runs/sft --out runs/grpo data.tasks.families=[compare,arithmetic]\n"
        "         llmlab grpo --model runs/sft --reward-model runs/rm reward.gold=0 reward.rm=1 --out runs/grpo-rm\n"
        "         torchrun --nproc_per_node=2 -m llmlab grpo --model runs/sft loss_norm=constant scale_rewards=none",
    ),
    Command(
        "rloo",
        "online RL with REINFORCE leave-one-out: each answer's baseline is the mean of its siblings' rewards",
        config="llmlab.align.config:RLOOConfig",
        run="llmlab.eval.online_run:online_command",
        flags=ONLINE_FLAGS,
        epilog="example: llmlab rloo --model runs/sft --out runs/rloo --samples 4",
    ),
    Command(
        "ppo",
        "RLHF with PPO: a critic, per-token KL-shaped rewards, GAE, minibatch epochs, adaptive KL (target_kl)",
        config="llmlab.align.config:PPOConfig",
        run="llmlab.eval.online_run:online_command",
        flags=ONLINE_FLAGS,
        epilog="example: llmlab ppo --model runs/sft --reward-model runs/rm reward.gold=0 reward.rm=1 --out runs/ppo\n"
        "         llmlab ppo --model runs/sft --out runs/ppo-gold target_kl=2 value_model=shared",
    ),
    Command(
        "hacking",
        "the reward-hacking lab: a length-biased proxy RM, RL and best-of-n against it, mitigations, a report",
        config="llmlab.align.config:HackingConfig",
        run="llmlab.align.hacking:command",
        flags=(
            Flag("--model", "model", "the SFT policy every run starts from", "DIR"),
            Flag("--algo", "algo", "grpo | ppo: the optimiser run against the proxy", "NAME"),
            Flag("--steps", "steps", "RL steps of each run", "N"),
            Flag("--device", "device", "auto | cpu | cuda", "D"),
            Flag("--resume", "resume", "finish an interrupted lab: its finished runs are kept", "DIR"),
        ),
        epilog="example: llmlab hacking --model runs/sft --out runs/hacking\n"
        "         llmlab hacking --model runs/sft --algo ppo --steps 200 frontier=false --out runs/hacking-ppo\n"
        "         llmlab hacking --resume runs/hacking",
    ),
    Command(
        "sample-prefs",
        "on-policy preference pairs: sample a model's answers, rank them (gold scorers or a reward model)",
        config="llmlab.align.config:SamplePrefsConfig",
        run="llmlab.align.onpolicy:command",
        flags=(
            Flag("--model", "model", "the policy to sample from: an llmlab or local HF model folder", "DIR"),
            Flag("--input", "input", "{prompt} rows (default: task-world train prompts)", "FILE", nargs="+"),
            Flag("--samples", "samples", "answers per prompt", "K"),
            Flag("--temperature", "temperature", "sampling temperature", "T"),
            Flag("--scorer", "scorer", "gold (task-world scorers) | rm (needs reward_model=DIR)", "NAME"),
            Flag("--device", "device", "auto | cpu | cuda", "D"),
        ),
        epilog="example: llmlab sample-prefs --model runs/sft --out runs/onpolicy n=2000\n"
        "         llmlab dpo --model runs/sft --input runs/onpolicy/prefs.jsonl --out runs/dpo",
    ),
    Command(
        "cai revise",
        "constitutional AI, supervised stage: answers critiqued and revised under principles, as SFT chats",
        config="llmlab.align.config:CaiReviseConfig",
        run="llmlab.align.feedback.cai:revise_command",
        flags=(
            Flag("--model", "model", "the model that answers, critiques and revises: llmlab or local HF folder", "DIR"),
            Flag("--prompts", "input", "{prompt} rows (default: task-world train prompts)", "FILE", nargs="+"),
            Flag("--constitution", "constitution", "principles YAML (default: llmlab's own)", "FILE"),
            Flag("--rounds", "rounds", "critique -> revision rounds per answer", "N"),
            Flag("--device", "device", "auto | cpu | cuda", "D"),
        ),
        epilog="example: llmlab cai revise --model runs/sft --out runs/cai-revise n=200\n"
        "         llmlab sft --model runs/sft --input runs/cai-revise/sft.jsonl --out runs/cai-sft",
    ),
    Command(
        "cai label",
        "constitutional AI, RL stage: pairs of answers labelled by a feedback model under principles (RLAIF)",
        config="llmlab.align.config:CaiLabelConfig",
        run="llmlab.align.feedback.cai:label_command",
        flags=(
            Flag("--model", "model", "the policy whose two sampled answers per prompt are compared", "DIR"),
            Flag("--judge", "judge", "the feedback model (default: --model)", "DIR"),
            Flag("--pairs", "input", "{prompt, chosen, rejected} rows to relabel instead of sampling", "FILE",
                 nargs="+"),
            Flag("--prompts", "prompts", "{prompt} rows to answer (default: task-world train prompts)", "FILE",
                 nargs="+"),
            Flag("--constitution", "constitution", "principles YAML (default: llmlab's own)", "FILE"),
            Flag("--device", "device", "auto | cpu | cuda", "D"),
        ),
        epilog="example: llmlab cai label --model runs/cai-sft --out runs/cai-label n=200\n"
        "         llmlab dpo --model runs/cai-sft --input runs/cai-label/prefs.jsonl --out runs/cai-dpo",
    ),
    Command(
        "cai judge-data",
        "constitutional AI: SFT chats that teach a feedback model the LLM judge's format from labelled pairs",
        config="llmlab.align.config:CaiJudgeDataConfig",
        run="llmlab.align.feedback.cai:judge_data_command",
        flags=(
            Flag("--pairs", "input", "{prompt, chosen, rejected} rows (default: task-world train pairs)", "FILE",
                 nargs="+"),
            Flag("--constitution", "constitution", "principles YAML (default: llmlab's own)", "FILE"),
        ),
        epilog="example: llmlab cai judge-data --out runs/judge-data n=2000\n"
        "         llmlab sft --model runs/sft --input runs/judge-data/judge_sft.jsonl --out runs/judge\n"
        "         llmlab cai label --model runs/sft --judge runs/judge --out runs/cai-label",
    ),
    Command(
        "eval-prefs",
        "held-out preference accuracy and base-vs-aligned task scores (accuracy, refusals, length)",
        config="llmlab.align.config:EvalPrefsConfig",
        run="llmlab.eval.prefs:command",
        flags=(
            Flag("--model", "model", "the aligned model (a dpo run folder or any model folder)", "DIR"),
            Flag("--base", "base", "the model it started from (default: read from the dpo run's config)", "DIR"),
            Flag("--input", "data.input", "held-out preference files (default: the task world's eval split)",
                 "FILE", nargs="+"),
            Flag("--device", "device", "auto | cpu | cuda", "D"),
        ),
        epilog="example: llmlab eval-prefs --model runs/dpo --base runs/sft --out runs/dpo-eval",
    ),
    Command(
        "eval",
        "several models on the same held-out prompts and text: helpfulness, harmlessness, format, length, "
        "pass@k, perplexity and win rate, with bootstrap intervals",
        config="llmlab.eval.config:EvalConfig",
        run="llmlab.eval.compare:command",
        flags=(
            Flag("--models", "models", "NAME=DIR,NAME=DIR,...: llmlab or HF model folders; the first is the "
                 "baseline", "NAME=DIR,..."),
            Flag("--prompts", "prompts", "{prompt} or chat JSONL files (default: task-world eval prompts)", "FILE",
                 nargs="+"),
            Flag("--judge", "judge", "judge of the win rate against the first model: gold | rm=DIR | ...", "SPEC"),
            Flag("--text", "text", "held-out text file for perplexity (default: task-world text)", "FILE"),
            Flag("--samples", "samples", "answers sampled per prompt for pass@1 and pass@k (0: none)", "N"),
            Flag("--k", "k", "the k of pass@k (at most --samples)", "K"),
            Flag("--seed", "seed", "seed of the prompts, samples, text and bootstrap", "S"),
            Flag("--device", "device", "auto | cpu | cuda", "D"),
        ),
        epilog="example: llmlab eval --models sft=runs/sft,dpo=runs/dpo --out runs/eval-models\n"
        "         llmlab eval --models sft=runs/sft,dpo=runs/dpo --prompts prompts.jsonl --judge gold --out runs/eval-prompts",
    ),
    Command(
        "feedback label",
        "label pairs with a judge (gold, reward model, safety rules, an OpenAI-compatible endpoint); resumable",
        config="llmlab.align.feedback.config:FeedbackLabelConfig",
        run="llmlab.align.feedback.commands:label_command",
        flags=(
            Flag("--pairs", "pairs", "JSONL of {prompt, a, b} or {prompt, chosen, rejected} rows", "FILE"),
            Flag("--judge", "judge", "gold | rm=DIR | safety[=RULES.yaml] | endpoint=URL[,model=M,key_env=VAR,...]",
                 "SPEC"),
            Flag("--out", "out", "the labels file; pairs it already holds are skipped", "FILE"),
        ),
        run_folder=False,
        epilog="example: llmlab feedback label --pairs prefs.jsonl --judge safety --out labels/safety.jsonl\n"
        "         llmlab feedback label --pairs prefs.jsonl --out labels/gpt.jsonl \\\n"
        "             --judge endpoint=http://127.0.0.1:8000/v1,model=judge,key_env=OPENAI_API_KEY",
    ),
    Command(
        "feedback combine",
        "combine several sources' labels into soft preferences; agreement (kappa) and disagreements",
        config="llmlab.align.feedback.config:FeedbackCombineConfig",
        run="llmlab.align.feedback.commands:combine_command",
        flags=(
            Flag("--labels", "labels", "NAME=FILE,NAME=FILE: labels files (judges' or the review page's)", "LIST"),
            Flag("--method", "method", "weighted | majority | bt (Bradley–Terry over sources)", "M"),
            Flag("--weights", "weights", "weighted: NAME=W,... (default 1 each)", "LIST"),
            Flag("--gold", "gold", "also measure agreement with the task world's gold labels", switch=True),
            Flag("--out", "out", "the output folder: prefs.jsonl, agreement.md/.json, disagreements.jsonl", "DIR"),
        ),
        run_folder=False,
        out_key="out",
        epilog="example: llmlab feedback combine --labels gold=labels/gold.jsonl,safety=labels/safety.jsonl \\\n"
        "             --method bt --gold --out runs/feedback",
    ),
    Command(
        "demo",
        "run the whole lab on built-in data and write a report",
        config="llmlab.demo.config:DemoConfig",
        run="llmlab.demo.runner:command",
        flags=(
            Flag("--quick", "preset", "every stage at toy size: checks the pipeline in about a minute, proves nothing",
                 switch=True, const="quick"),
            Flag("--seed", "seed", "seed of the data, the models and the evaluation", "S"),
            Flag("--device", "device", "auto | cpu | cuda", "D"),
            Flag("--resume", "resume", "finish an interrupted demo: its finished stages are kept", "DIR"),
        ),
        epilog="example: llmlab demo --out runs/demo\n"
        "         llmlab demo --quick --out runs/demo-quick\n"
        "         llmlab demo preset=small --device cuda --out runs/demo-small\n"
        "         llmlab demo --resume runs/demo",
    ),
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as a UserError (one line, exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="llmlab",
        description="llmlab: attention, tokenization and alignment, from first principles.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # `--max-step 5` must be an error, not a silent `--max-steps 5`
    )
    parser.add_argument("--version", action="version", version=f"llmlab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors too")
    groups: dict[tuple[str, ...], argparse._SubParsersAction] = {
        (): parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)
    }
    parents: dict[tuple[str, ...], argparse.ArgumentParser] = {(): parser}
    for cmd in COMMANDS:
        words = tuple(cmd.name.split())
        for i in range(1, len(words)):  # intermediate groups such as `data`
            prefix = words[:i]
            if prefix not in groups:
                group_parser = groups[prefix[:-1]].add_parser(prefix[-1], help=f"{prefix[-1]} commands",
                                                              allow_abbrev=False)
                group_parser.set_defaults(_group=group_parser)
                parents[prefix] = group_parser
                groups[prefix] = group_parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)
        sub = groups[words[:-1]].add_parser(
            words[-1], help=cmd.help, description=cmd.help, epilog=cmd.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
        )
        _add_common_arguments(sub, cmd)
        sub.set_defaults(_command=cmd)
    return parser


def _add_common_arguments(sub: argparse.ArgumentParser, cmd: Command) -> None:
    for flag in cmd.flags:
        if flag.switch:
            sub.add_argument(flag.name, dest=f"_flag_{flag.key}", action="store_const", const=flag.const,
                             help=flag.help)
        else:
            sub.add_argument(flag.name, dest=f"_flag_{flag.key}", metavar=flag.metavar, help=flag.help,
                             nargs=flag.nargs)
    sub.add_argument("--config", metavar="FILE.yaml", help="YAML config (overrides and flags win over it)")
    sub.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    if cmd.run_folder:
        sub.add_argument("--out", metavar="DIR", help=f"run folder (default runs/{cmd.name.replace(' ', '-')}-<time>)")
    sub.add_argument("--quiet", action="store_true", help="no progress bars or chatter")
    sub.add_argument("--debug", action="store_true", help="show tracebacks for user errors too")
    sub.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. seed=3")


def _import(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


# `train.lr=1e-3`: a dotted key of identifiers, then `=`. A file path or a LANG=FILE value may look
# alike: see _overrides_in_list_flags for how they are told apart.
_OVERRIDE_KEY = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)=")


def parse_command_line(argv: Sequence[str], parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Parse argv with `key=value` overrides allowed anywhere; `args.overrides` keeps their argv order.

    argparse takes the positional overrides only in one run, so `n=5 --kind eval seed=1` leaves
    `seed=1` unrecognised: such leftovers that look like `key=value` are overrides. Anything else
    left over (`--max-step`, a stray word) is the usual "unrecognized arguments" error.
    """
    parser = parser or build_parser()
    args, extras = parser.parse_known_args(list(argv))
    cmd: Command | None = getattr(args, "_command", None)
    stray = [x for x in extras if x.startswith("-") or "=" not in x or x.startswith("=")]
    if stray or (extras and cmd is None):
        prog = f"llmlab {cmd.name}" if cmd is not None else "llmlab"
        raise UserError(f"unrecognized arguments: {' '.join(stray or extras)} (see '{prog} --help')")
    if cmd is None:
        return args
    moved = _overrides_in_list_flags(cmd, args)
    args.overrides = _in_argv_order(argv, [*args.overrides, *extras, *moved])
    return args


def _overrides_in_list_flags(cmd: Command, args: argparse.Namespace) -> list[str]:
    """Take `key=value` overrides out of the values of flags with nargs="+" (which swallow them).

    `--input prefs.jsonl rpo_alpha=1` gives input=[prefs.jsonl] and the override rpo_alpha=1, as the
    user meant; a file that exists under such a name stays a file. A flag whose values hold an '='
    themselves (`--language-input LANG=FILE`) gives up only the command's config keys; the others
    give up any `dotted.key=value`, so that a misspelt key is reported as one (`vocab=300`: did you
    mean 'vocab_size'?), not as a missing file.
    """
    keys: set[str] | None = None
    moved: list[str] = []
    for flag in cmd.flags:
        values = getattr(args, f"_flag_{flag.key}")
        if flag.nargs != "+" or not values or not any("=" in v for v in values):
            continue
        if keys is None:  # imports the config class: only when some value has an '='
            keys = set(valid_keys(_import(cmd.config)))
        kept: list[str] = []
        for value in values:
            match = _OVERRIDE_KEY.match(value)
            key_like = match is not None and (match.group(1) in keys or "=" not in (flag.metavar or ""))
            if key_like and not os.path.lexists(value):
                moved.append(value)
            else:
                kept.append(value)
        if not kept:
            raise UserError(f"argument {flag.name}: expected at least one value before {values[0]!r} "
                            f"(see 'llmlab {cmd.name} --help')")
        setattr(args, f"_flag_{flag.key}", kept)
    return moved


def _in_argv_order(argv: Sequence[str], overrides: Sequence[str]) -> list[str]:
    """`overrides` sorted by where they stand in argv, so the later of two values of a key wins.

    subtle: tokens are matched by text, so an override equal to some flag's value (`--text n=5 n=5`)
    may take that value's place; equal texts set the same value, so only the order among different
    values of one key could change, and only in such contrived lines.
    """
    left = Counter(overrides)
    ordered = []
    for token in argv:
        if left[token] > 0:
            ordered.append(token)
            left[token] -= 1
    return ordered


def _check_out_folder(label: str, out: str | Path) -> None:
    """Refuse an output folder that is a file (or lies under one) before any work starts."""
    path = Path(out)
    for p in (path, *path.parents):
        if p.is_dir():
            return
        if p.exists() or p.is_symlink():
            what = "is a file" if p.is_file() else "is not a folder"
            raise UserError(f"{label}: {what}, not a folder" if p == path else f"{label}: {p} {what}")


def dispatch(args: argparse.Namespace, argv: Sequence[str]) -> int:
    cmd: Command | None = getattr(args, "_command", None)
    if cmd is None:
        (getattr(args, "_group", None) or build_parser()).print_help()
        return 0
    flags = {f.key: value for f in cmd.flags if (value := getattr(args, f"_flag_{f.key}")) is not None}
    if args.print_config:  # every setting, also before the required ones (--model, --text, ...) are given
        with without_required():
            sys.stdout.write(to_yaml(load_config(_import(cmd.config), args.config, args.overrides, flags=flags)))
        return 0
    cfg = load_config(_import(cmd.config), args.config, args.overrides, flags=flags)
    out = getattr(args, "out", None) if cmd.run_folder else None
    if cmd.run_folder:
        _check_out_folder(f"--out {out}" if out else "runs (the default parent of run folders)", out or "runs")
    if cmd.out_key is not None and (folder := getattr(cfg, cmd.out_key)):
        _check_out_folder(f"--out {folder}", folder)
    ctx = Context(command=cmd.name, out=Path(out) if out else None, quiet=args.quiet, argv=tuple(argv),
                  overrides=tuple(args.overrides), flags=flags)
    run: Callable[[Any, Context], int | None] = _import(cmd.run)
    with outcome():  # every run folder the command starts says how it ended (status.json)
        return run(cfg, ctx) or 0


# OS errors that are the user's to fix: one line naming the file, like a UserError.
_OS_USER_ERRORS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EROFS: "read-only file system",
}


_python_show_warning = warnings.showwarning


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """llmlab's own warnings as one line `warning: ...`; the others as Python shows them."""
    if issubclass(category, LlmlabWarning):
        print(f"warning: {_one_line(str(message))}", file=sys.stderr)
    else:
        _python_show_warning(message, category, *args, **kwargs)


def _one_line(message: str) -> str:
    return " ".join(message.split("\n")).strip()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("LLMLAB_DEBUG", "") not in ("", "0")
    try:
        args = parse_command_line(argv)
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return dispatch(args, argv)
    except UserError as e:
        if debug:
            traceback.print_exc()
        print(f"error: {_one_line(str(e)) or e.__class__.__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `llmlab data generate --out - | head`; before OSError, of which it is one
        sys.stderr.close()
        return 0
    except OSError as e:
        reason = _OS_USER_ERRORS.get(e.errno) if e.errno is not None else None
        if reason is None:
            raise
        if debug:
            traceback.print_exc()
        where = f"{_one_line(os.fsdecode(e.filename))}: " if e.filename else ""
        print(f"error: {where}{reason}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
