"""The `llmlab data ...` commands: thin wrappers over the generators, loaders and scorers."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from llmlab.context import Context
from llmlab.data.config import GenerateConfig, ScoreConfig, ValidateConfig
from llmlab.data.corpora import GENERATORS, TEXT_KINDS
from llmlab.data.loaders import load_rows
from llmlab.data.multilingual import LANGUAGES
from llmlab.data.scoring import format_report, score_responses
from llmlab.errors import UserError
from llmlab.files import atomic_open, write_json_atomic
from llmlab.runs import progress


def _say(ctx: Context, message: str) -> None:
    if not ctx.quiet:
        print(message, file=sys.stderr)


def _check_out_file(out: str) -> None:
    """Refuse an output path that is a folder (or lies under a file) before any work starts."""
    path = Path(out)
    if path.is_dir():
        raise UserError(f"--out {out}: is a directory, not a file")
    for parent in path.parents:
        if parent.is_dir():
            return
        if parent.exists():
            raise UserError(f"--out {out}: {parent} is not a folder")


def generate(cfg: GenerateConfig, ctx: Context) -> int:
    rows = GENERATORS[cfg.kind](cfg)
    as_text = cfg.kind in TEXT_KINDS and cfg.out.endswith(".txt")
    if not as_text and cfg.out != "-" and not cfg.out.endswith(".jsonl"):
        raise UserError(f"--out {cfg.out}: use a .jsonl file{' or .txt' if cfg.kind in TEXT_KINDS else ''}, or '-'")
    if cfg.out != "-":
        _check_out_file(cfg.out)
    stats: Counter[str] = Counter()
    total = None if cfg.chars else cfg.n
    if cfg.kind == "multilingual":
        total = cfg.n * len(LANGUAGES)
    sep = TEXT_KINDS.get(cfg.kind, "")

    def lines() -> Any:
        for row in progress(rows, total=total, desc=f"generate {cfg.kind}", quiet=ctx.quiet, unit="row"):
            meta = row.get("meta", {})
            stats["rows"] += 1
            stats[f"family={meta.get('family', row.get('family', '-'))}"] += 1
            for key in ("rejected_kind",):
                if key in meta:
                    stats[f"{key}={meta[key]}"] += 1
            stats["chosen_longer"] += bool(meta.get("chosen_longer"))
            stats["label_flipped"] += bool(meta.get("label_flipped"))
            stats["chars"] += len(row.get("text", ""))
            yield (row["text"].rstrip("\n") + sep) if as_text else json.dumps(row, ensure_ascii=False) + "\n"

    if cfg.out == "-":
        sys.stdout.writelines(lines())
        sys.stdout.flush()
    else:
        with atomic_open(cfg.out) as f:
            f.writelines(lines())
    _say(ctx, _summary(cfg, stats))
    return 0


def _summary(cfg: GenerateConfig, stats: Counter[str]) -> str:
    where = "stdout" if cfg.out == "-" else cfg.out
    split = "" if cfg.kind in ("multilingual", "code-mixed") else f" ({cfg.resolved_split} split)"
    parts = [f"wrote {stats['rows']} {cfg.kind} rows{split} to {where}"]
    if cfg.kind in ("pretrain", "multilingual", "code-mixed"):
        parts.append(f"{stats['chars']:,} characters")
    if cfg.kind == "prefs" and stats["rows"]:
        kinds = {k.split("=", 1)[1]: v for k, v in stats.items() if k.startswith("rejected_kind=")}
        parts.append(f"chosen longer in {stats['chosen_longer'] / stats['rows']:.0%}")
        parts.append(f"{stats['label_flipped']} labels flipped")
        parts.append("rejected kinds " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    return "; ".join(parts)


def score(cfg: ScoreConfig, ctx: Context) -> int:
    if cfg.out:
        _check_out_file(cfg.out)
    loaded = load_rows(cfg.input, "responses", strict=cfg.strict)
    for problem in loaded.skipped:
        _say(ctx, f"skipped: {problem}")
    report = score_responses((r["prompt"], r["response"]) for r in loaded.rows)
    if report["n"] == 0:
        raise UserError(f"{cfg.input}: no row has a task-world prompt; nothing to score")
    print(format_report(report))
    if cfg.out:
        write_json_atomic(Path(cfg.out), report)
        _say(ctx, f"wrote {cfg.out}")
    return 0


def validate(cfg: ValidateConfig, ctx: Context) -> int:
    """Check every row with the schemas the trainers use (`llmlab.data.schemas`): a file that passes
    here loads in `sft` / `rm train` / `dpo`; exit code 2 when a row is malformed."""
    loaded = load_rows(cfg.input, cfg.schema, strict=cfg.strict)
    for problem in loaded.skipped:
        print(problem)
    print(f"{cfg.input}: {len(loaded.rows)} valid {cfg.schema} rows, {len(loaded.skipped)} malformed")
    return 2 if loaded.skipped else 0
