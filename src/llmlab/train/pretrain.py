"""`llmlab pretrain`: next-token prediction on packed token files, resumable to the exact loss.

    setup     session (torchrun, run folder, tracker) -> tokenizer -> token files -> model, AdamW
    each step begin_step -> micro-batches (forward, summed cross-entropy x unit scale, backward)
              -> finish_step (reduce, clip, NaN policy, AdamW step)
    every k   log (loss, lr, grad norm, tokens/s, MFU) | eval (val loss, perplexity, bits per byte)
              | greedy samples | checkpoint (atomic, keep last N)

The loop is the shared toolkit's (train/session.py, batches.py, step.py, checkpoint.py), as in
every other trainer; what is pretraining's own is the data (fixed-length windows of token
files, train/token_data.py), the loss (token mean: every one of the batch_size x seq_len
targets counts once), FSDP, torch.compile, the MFU meter and the greedy samples.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from llmlab.data.chat import CHAT_SPECIALS
from llmlab.errors import UserError
from llmlab.model.generate import Engine, SamplingConfig
from llmlab.model.io import load_model, save_weights
from llmlab.model.llama import Transformer
from llmlab.runs import progress_bar
from llmlab.tokenizers.bpe_train import train_bpe
from llmlab.tokenizers.hf_io import load_tokenizer
from llmlab.train import distributed as D
from llmlab.train.batches import accumulating, plan_batches, unit_scale
from llmlab.train.checkpoint import list_checkpoints, load_weights, restore, resume_step
from llmlab.train.config import PretrainConfig
from llmlab.train.optim import build_adamw
from llmlab.train.precision import autocast_for, uses_bf16
from llmlab.train.session import Session, open_session
from llmlab.train.step import Window, begin_step, check_eval, due, finish_step
from llmlab.train.throughput import Throughput, measure_matmul_peak
from llmlab.train.token_data import SequenceSampler, TokenFile, iter_documents, prepare_token_files

if TYPE_CHECKING:
    from llmlab.tokenizers.base import Tokenizer


def pretrain(cfg: PretrainConfig, *, out: Path | None = None, quiet: bool = False) -> Path:
    """Train; return the run folder (which also holds the final model)."""
    cfg = with_vocab_size(cfg)
    with open_session("pretrain", cfg, cfg.train, out=out, quiet=quiet, resume_step=resume_step(cfg)) as s:
        return _pretrain(cfg, s)


def with_vocab_size(cfg: PretrainConfig) -> PretrainConfig:
    """`cfg` with model.vocab_size 0 resolved: the ids of data.tokenizer rounded up to a multiple of 64
    (so a tokenizer that stopped short of its target size, or a pretrained one, fits as it is), or 4096
    for the BPE trained on the data. A resumed config has it resolved already."""
    if cfg.model.vocab_size:
        return cfg
    size = DEFAULT_VOCAB
    if cfg.data.tokenizer:
        path = Path(cfg.data.tokenizer)
        path = path / "tokenizer.json" if path.is_dir() else path
        if not path.is_file():
            raise UserError(f"{cfg.data.tokenizer}: no tokenizer.json")
        size = -(-load_tokenizer(path).vocab_size // 64) * 64
    return replace(cfg, model=replace(cfg.model, vocab_size=size))


DEFAULT_VOCAB = 4096  # the BPE trained on the data when neither data.tokenizer nor model.vocab_size is given


def _pretrain(cfg: PretrainConfig, s: Session) -> Path:
    tc, info, device = cfg.train, s.info, s.device
    tokenizer, train_file, val_file = _data(cfg, s)
    model = Transformer(cfg.model).to(device)
    optimizer = build_adamw(model, lr=tc.lr, weight_decay=tc.weight_decay, betas=(tc.beta1, tc.beta2))
    start_step, counters = 0, {"tokens": 0, "nan_skips": 0}
    if cfg.init:
        load_weights(model, load_model(Path(cfg.init), device=device)[0].state_dict(), Path(cfg.init),
                     hint="set model.* to the init model's shape")
        s.log(f"weights from {cfg.init}")
    if cfg.resume:

        load_weights(model, load_model(Path(cfg.resume), device=device)[0].state_dict(), Path(cfg.resume))
        start_step, counters = restore(Path(cfg.resume), model, optimizer)
        s.log(f"resumed from {cfg.resume} at step {start_step}")
    wrapped = D.wrap_model(model, info, device, fsdp=tc.fsdp)
    if tc.fsdp and info.enabled:  # FSDP2 shards the parameters in place: the optimiser must see the shards
        optimizer = _rebuild_optimizer(wrapped, optimizer, tc)
    forward = torch.compile(wrapped) if tc.compile else wrapped
    autocast = autocast_for(device, tc.dtype)
    train = SequenceSampler(train_file.array(), tc.seq_len, seed=tc.seed)
    val = SequenceSampler(val_file.array(), tc.seq_len, seed=tc.seed, shuffle=False, name="val")
    plan = plan_batches(tc.batch_size, tc.micro_batch_size, info.world_size)
    peak = measure_matmul_peak(device, torch.bfloat16 if uses_bf16(device, tc.dtype) else torch.float32)
    meter = Throughput(cfg.model.flops_per_token(tc.seq_len), peak)
    s.log(f"model: {cfg.model.num_params() / 1e6:.2f}M parameters; {info.world_size} process(es) on {device}; "
          f"global batch {tc.batch_size} x {tc.seq_len} tokens ({plan.accum} micro-batch(es) of {plan.micro} per "
          f"process); {train_file.n_tokens:,} train / {val_file.n_tokens:,} val tokens")
    scale = unit_scale(tc.batch_size * tc.seq_len, info)  # token mean over the global batch
    bar = s.progress(total=tc.max_steps, desc="pretrain", start=start_step)
    window = Window(counters)
    for step in range(start_step, tc.max_steps):
        lr = begin_step(tc, step, info)
        first = plan.first_example(step, info.rank)
        loss = torch.zeros((), device=device)
        for a, b, last in plan.micro_batches():
            x, y = (t.to(device, non_blocking=True) for t in train.batch(first + a, b - a))
            with accumulating(wrapped, last), autocast:
                logits = forward(x).logits
                micro_loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum") * scale
                micro_loss.backward()
            loss += micro_loss.detach()
        loss_value = float(D.mean_over_ranks(loss, info))
        done = step + 1
        norm, applied = finish_step(wrapped, optimizer, loss_value, train=tc, lr=lr, done=done, counters=counters,
                           run_dir=s.run_dir, log=s.log)
        counters["tokens"] += tc.batch_size * tc.seq_len
        meter.add(plan.per_rank * tc.seq_len)
        if applied:
            window.add({"loss": loss_value})
        bar.update(1)
        if due(done, tc.log_every, tc.max_steps):
            tokens_per_s, mfu = meter.read()
            row = window.pop() | {"lr": lr, "grad_norm": norm, "tokens_per_s": round(tokens_per_s * info.world_size, 1),
                                  "mfu": round(mfu, 4), "tokens": counters["tokens"], "nan_skips": counters["nan_skips"]}
            bar.set_postfix(loss=f"{row.get('loss', float('nan')):.3f}", tok_s=f"{row['tokens_per_s']:.0f}",
                            mfu=f"{mfu:.1%}")
            s.record(done, row)
        if tc.eval_every and due(done, tc.eval_every, tc.max_steps):
            row = evaluate(wrapped, val, tc, info, device, plan.micro, autocast, val_file)
            _log_eval(s, done, row)
            check_eval(row, done=done, run_dir=s.run_dir)
            if info.is_main and not tc.fsdp and _sample_now(tc, done):
                _write_samples(s, done, samples(model, tokenizer, val, tc.sample_tokens))
            meter.restart()
        if s.after_step(done, tc, lambda step: _checkpoint(cfg, s, step, wrapped, model, optimizer, counters, tokenizer)):
            meter.restart()
    bar.close()
    if info.is_main:
        _write_final_model(s)
    s.barrier()
    return s.run_dir


# ---------------------------------------------------------------------- set-up


def _data(cfg: PretrainConfig, s: Session) -> tuple[Tokenizer, TokenFile, TokenFile]:
    """The tokenizer and the (train, val) token files; rank 0 tokenizes, the others read its cache."""
    tokenizer, tokenizer_json = _tokenizer(cfg, s)
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise UserError(f"the tokenizer has {tokenizer.vocab_size} ids but model.vocab_size is "
                        f"{cfg.model.vocab_size}; set model.vocab_size={tokenizer.vocab_size} or more")
    eos = eos_id(tokenizer)
    chars = progress_bar(total=None, desc="tokenizing", unit="char", quiet=s.quiet or not s.is_main)
    files = None
    if s.is_main:
        files = prepare_token_files(cfg.data, tokenizer, tokenizer_json, eos_id=eos, log=s.log,
                                    progress=chars.update)
    chars.close()
    s.barrier()
    if files is None:
        files = prepare_token_files(cfg.data, tokenizer, tokenizer_json, eos_id=eos, log=s.log)
    return tokenizer, *files


def _tokenizer(cfg: PretrainConfig, s: Session) -> tuple[Tokenizer, bytes]:
    """The tokenizer of a resumed checkpoint, the user's, or a BPE trained on the data (by rank 0)."""

    if cfg.resume:
        source = Path(cfg.resume)
    elif cfg.data.tokenizer:
        source = Path(cfg.data.tokenizer)
    else:
        source = s.run_dir / "tokenizer"
        if s.is_main and not (source / "tokenizer.json").is_file():
            _train_tokenizer(cfg, source, s.log)
        s.barrier()
    path = source / "tokenizer.json" if source.is_dir() else source
    if not path.is_file():
        raise UserError(f"{source}: no tokenizer.json")
    return load_tokenizer(path), path.read_bytes()


def _train_tokenizer(cfg: PretrainConfig, directory: Path, log) -> None:

    budget, docs = 20_000_000, []  # characters: enough for a good vocabulary, bounded time
    for doc in iter_documents(cfg.data):
        docs.append(doc)
        budget -= len(doc)
        if budget <= 0:
            break
    log(f"no data.tokenizer: training a byte-level BPE of {cfg.model.vocab_size} ids on "
        f"{sum(map(len, docs)):,} characters")
    tok = train_bpe(docs, vocab_size=cfg.model.vocab_size, special_tokens=CHAT_SPECIALS)
    tok.save(directory)


def eos_id(tokenizer: Tokenizer) -> int:
    for name in ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>"):
        if name in tokenizer.special_tokens:
            return tokenizer.special_tokens[name]
    raise UserError("the tokenizer has no end-of-text special token (<|endoftext|>, </s>, <|end_of_text|> or "
                    "<eos>) to separate documents")


def _rebuild_optimizer(wrapped: torch.nn.Module, optimizer: torch.optim.Optimizer, tc) -> torch.optim.Optimizer:
    state = optimizer.state_dict()
    fresh = build_adamw(wrapped, lr=tc.lr, weight_decay=tc.weight_decay, betas=(tc.beta1, tc.beta2))
    if state["state"]:
        fresh.load_state_dict(state)
    return fresh


# ---------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model: torch.nn.Module, val: SequenceSampler, tc: Any, info: D.DistInfo, device: torch.device,
             micro: int, autocast: Any, val_file: TokenFile) -> dict[str, float]:
    """Mean val loss over the first eval_batches x batch_size validation sequences (the same every
    time), perplexity, and bits per byte (loss in bits x val tokens per val byte)."""
    model.eval()
    total = torch.zeros((), device=device)
    plan = plan_batches(tc.batch_size, micro, info.world_size)
    for b in range(tc.eval_batches):
        first = plan.first_example(b, info.rank)
        for a, end, _ in plan.micro_batches():
            x, y = (t.to(device) for t in val.batch(first + a, end - a))
            with autocast:
                logits = model(x).logits
            total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum")
    model.train()
    loss = float(D.mean_over_ranks(total, info)) / (tc.eval_batches * plan.per_rank * tc.seq_len)
    tokens_per_byte = val_file.n_tokens / val_file.n_bytes
    return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0)),
            "val_bpb": loss / math.log(2) * tokens_per_byte}


def _log_eval(s: Session, step: int, row: dict[str, float]) -> None:
    s.record(step, row)
    s.log(f"step {step}: val loss {row['val_loss']:.4f}, perplexity {row['val_ppl']:.2f}, "
          f"bits/byte {row['val_bpb']:.3f}")


def _sample_now(tc: Any, done: int) -> bool:
    return tc.sample_tokens > 0 and (done % tc.sample_every == 0 if tc.sample_every else True)


def samples(model: Transformer, tokenizer: Tokenizer, val: SequenceSampler, n_tokens: int,
            n_prompts: int = 3) -> list[dict]:
    """Greedy continuations of the openings of the first validation documents."""

    tokens = val.tokens
    eos = eos_id(tokenizer)
    starts = [0] + [int(i) + 1 for i in (tokens[:200_000] == eos).nonzero()[0][: n_prompts - 1]]
    prompts = [[int(t) for t in tokens[a: a + 8]] for a in starts if a + 8 < len(tokens)]
    n_tokens = min(n_tokens, model.cfg.max_seq_len - 8)
    model.eval()
    outputs = Engine(model).generate(prompts, SamplingConfig(max_new_tokens=n_tokens, temperature=0.0,
                                                            stop_tokens=(eos,), vocab_limit=tokenizer.id_count))
    model.train()
    return [{"prompt": tokenizer.decode(p), "completion": tokenizer.decode([t for t in o if t != eos])}
            for p, o in zip(prompts, outputs, strict=True)]


def _write_samples(s: Session, step: int, rows: list[dict]) -> None:
    with open(s.run_dir / "samples.jsonl", "a", encoding="utf-8") as f:
        for sample in rows:
            f.write(json.dumps({"step": step, **sample}, ensure_ascii=False) + "\n")
    if rows:
        s.log(f"step {step} sample: {rows[0]['prompt']!r} -> {rows[0]['completion'][:120]!r}")


# ---------------------------------------------------------------------- checkpoints


def _checkpoint(cfg: PretrainConfig, s: Session, step: int, wrapped: torch.nn.Module, model: Transformer,
                optimizer: torch.optim.Optimizer, counters: dict[str, Any], tokenizer: Tokenizer) -> None:

    model_state, optim_state = _full_states(cfg, s, wrapped, model, optimizer)
    s.checkpoint(step, cfg=cfg, write_model=lambda d: save_weights(cfg.model, model_state, d, tokenizer),
                 optimizer_state=optim_state, counters=counters, keep=cfg.train.keep_checkpoints)


def _full_states(cfg: PretrainConfig, s: Session, wrapped: torch.nn.Module, model: Transformer,
                 optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    if not (cfg.train.fsdp and s.info.enabled):
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}, optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(wrapped, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _write_final_model(s: Session) -> None:
    """Copy the last checkpoint's model files to the run folder, so `--model RUN` works."""
    import shutil

    found = list_checkpoints(s.run_dir / "checkpoints")
    if not found:
        return
    for name in ("model.yaml", "model.safetensors", "tokenizer.json", "vocab.txt"):
        if (found[-1] / name).is_file():
            shutil.copy2(found[-1] / name, s.run_dir / f".{name}.tmp")
            (s.run_dir / f".{name}.tmp").replace(s.run_dir / name)
    s.log(f"final model: {s.run_dir} (llmlab generate --model {s.run_dir})")
