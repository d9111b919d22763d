"""`llmlab convert gqa`: MHA -> GQA conversion, uptraining, and the quality table.

    --model M ──pool k, v heads (gqa.py)──> OUT/converted ──`llmlab pretrain` init=──> OUT/uptrain
                                                                                          │
    OUT/model.* (the final model) <────────────────────────────────────────────────────────┘
    OUT/gqa.json, gqa.md: original | converted (0 steps) | uptrained, measured by quality.py

Uptraining is `llmlab pretrain` started from the converted weights (PretrainConfig.init), for
uptrain_steps (default 5% of the pretraining run's steps, as Ainslie et al. 2023): no loop of
its own. When --model is a pretrain run folder its recipe (train.*, data.*) is repeated, warmup
scaled as the steps are, with the train.* and data.* keys given now on top.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmlab.config import ConfigError, load_config, read_yaml
from llmlab.errors import UserError
from llmlab.files import write_json_atomic, write_text_atomic
from llmlab.inference.config import GQAConvertConfig
from llmlab.runs import Run, start_run
from llmlab.train.config import PretrainConfig

if TYPE_CHECKING:
    from llmlab.model.llama import Transformer
    from llmlab.tokenizers.base import Tokenizer


def uptrain_config(cfg: GQAConvertConfig, given: tuple[str, ...] = (),
                   flags: dict[str, Any] | None = None) -> tuple[int, PretrainConfig]:
    """(uptraining steps, the PretrainConfig whose train.* and data.* uptraining and the evaluation
    use; its model.* is a placeholder, set by the caller). `given`, `flags`: the command line's
    overrides and flags, of which the train.* and data.* ones go on top of a pretraining run's own
    config (train.max_steps excepted: the steps are uptrain_steps')."""
    folder = Path(cfg.model)
    pretrained = pretrain_run_config(folder)
    if cfg.uptrain_steps is not None:
        steps = cfg.uptrain_steps
    elif pretrained is not None:
        steps = round(cfg.uptrain_fraction * pretrained.train.max_steps)
    else:
        raise UserError(f"--model {folder}: not an `llmlab pretrain` run folder, so its pretraining steps are "
                        "unknown; give uptrain_steps=N (0: no uptraining)")
    if pretrained is None:
        return steps, PretrainConfig(train=replace(cfg.train, max_steps=max(steps, 1)), data=cfg.data)
    ours = tuple(o for o in given if o.startswith(("train.", "data.")))
    our_flags = {k: v for k, v in (flags or {}).items() if k.startswith(("train.", "data."))}
    warmup = round(pretrained.train.warmup_steps * steps / pretrained.train.max_steps)
    resolved = load_config(PretrainConfig, folder / "config.yaml",
                           (f"train.warmup_steps={warmup}", *ours, f"train.max_steps={max(steps, 1)}", "resume="),
                           flags=our_flags)
    return steps, resolved


def pretrain_run_config(folder: Path) -> PretrainConfig | None:
    """The config of the `llmlab pretrain` run whose folder `folder` is; None for any other folder."""
    path = folder / "config.yaml"
    if not path.is_file():
        return None
    raw = read_yaml(path)
    if not {"model", "train", "data"} <= set(raw) or not isinstance(raw["model"], dict):
        return None
    try:
        return load_config(PretrainConfig, path)
    except ConfigError:  # another trainer's run (sft, dpo): its keys are not pretraining's
        return None


def command(cfg: GQAConvertConfig, ctx: Any) -> int:
    """The command (ctx: its Context): convert, uptrain, measure, write; a missed gate is a UserError. Bad
    input (no model folder, an impossible G, no tokenizer) fails before the run folder is made."""
    import torch

    from llmlab.inference.gqa import check_groups
    from llmlab.model.device import pick_device
    from llmlab.model.io import load_model

    if cfg.threads:  # on a shared CPU one thread decodes far faster than two that wait for each other
        torch.set_num_threads(cfg.threads)
    original, tokenizer = load_model(cfg.model)
    if tokenizer is None:
        raise UserError(f"{cfg.model}: no tokenizer.json; uptraining and the evaluation need the model's tokenizer")
    check_groups(original.cfg.kv_heads, cfg.n_kv_heads)
    ev = cfg.eval
    longest = ev.prompt_tokens + max(ev.new_tokens, ev.speed_tokens)
    if longest > original.cfg.max_seq_len:
        raise UserError(f"eval.prompt_tokens + eval.new_tokens (or speed_tokens) = {longest} is longer than the "
                        f"model's max_seq_len = {original.cfg.max_seq_len}")
    steps, base = uptrain_config(cfg, ctx.overrides, ctx.flags)
    base = replace(base, model=original.cfg)  # checks train.seq_len against the model's max_seq_len
    original = original.to(pick_device(base.train.device))
    run = start_run("convert gqa", cfg, out=ctx.out, quiet=ctx.quiet)
    convert_gqa(cfg, original, tokenizer, base, steps, run)
    return 0


def convert_gqa(cfg: GQAConvertConfig, original: Transformer, tokenizer: Tokenizer, base: PretrainConfig,
                steps: int, run: Run) -> dict[str, Any]:
    """Everything after the checks: returns what gqa.json holds."""
    import torch

    from llmlab.inference.gqa import convert_model
    from llmlab.inference.quality import gate_failures, held_out_prompts, markdown_table, measure
    from llmlab.model.io import load_model, save_model
    from llmlab.train.pretrain import eos_id, pretrain
    from llmlab.train.token_data import SequenceSampler, prepare_token_files

    device, ev = original.embed.weight.device, cfg.eval
    run.log(f"{cfg.model}: {original.cfg.n_heads} query heads, {original.cfg.kv_heads} key/value heads -> "
            f"{cfg.n_kv_heads} ({cfg.method}); uptraining {steps} steps")

    converted_dir = run.dir / "converted"
    with torch.no_grad():
        converted = convert_model(original, cfg.n_kv_heads, method=cfg.method)
    save_model(converted, converted_dir, tokenizer)
    models = {"original": original, f"{cfg.method} G={cfg.n_kv_heads}, 0 steps": converted}
    final, final_dir = converted, converted_dir
    data = replace(base.data, tokenizer=str(converted_dir))
    if steps:
        uptrain = replace(base, model=converted.cfg, data=data, init=str(converted_dir), resume="")
        final_dir = pretrain(uptrain, out=run.dir / "uptrain", quiet=run.quiet)
        final = load_model(final_dir, device=device)[0]
        models[f"{cfg.method} G={cfg.n_kv_heads}, {steps} steps"] = final
    save_model(final, run.dir, tokenizer)
    run.log(f"final model: {run.dir} (from {final_dir})")

    tokenizer_json = (converted_dir / "tokenizer.json").read_bytes()
    _, val_file = prepare_token_files(data, tokenizer, tokenizer_json, eos_id=eos_id(tokenizer), log=run.log)
    val = SequenceSampler(val_file.array(), base.train.seq_len, seed=base.train.seed, shuffle=False, name="val")
    prompts = held_out_prompts(val.tokens, ev.prompts, ev.prompt_tokens)
    rows, reference = [], None
    for name, model in models.items():
        row, outputs = measure(model, name=name, val=val, val_file=val_file, train=base.train, ev=ev, prompts=prompts,
                               reference=reference, vocab_limit=tokenizer.id_count)
        reference = reference or outputs  # the original's
        rows.append(row)
        run.log(f"{name}: {json.dumps(row)}")
    failures = gate_failures(rows[0], rows[-1], ev)
    table = markdown_table(rows)
    report = {"model": cfg.model, "n_heads": original.cfg.n_heads, "n_kv_heads": cfg.n_kv_heads,
              "method": cfg.method, "uptrain_steps": steps, "device": str(device), "rows": rows,
              "gate": {"asked": ev.gated, "max_ppl_ratio": ev.max_ppl_ratio, "min_agreement": ev.min_agreement,
                       "min_top1_agreement": ev.min_top1_agreement, "failures": failures}}
    write_json_atomic(run.dir / "gqa.json", report)
    write_text_atomic(run.dir / "gqa.md", table)
    run.log("\n" + table)
    if failures:
        raise UserError(f"GQA quality gate missed: {'; '.join(failures)} (table: {run.dir / 'gqa.md'})")
    return report
