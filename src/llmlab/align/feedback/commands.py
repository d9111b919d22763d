"""`llmlab feedback label` and `llmlab feedback combine`.

label: a judge labels the pairs of a file; the labels file is rewritten atomically after each batch, so an
interrupted or failed run (a judge endpoint that went down) keeps every label already made, and running
the same command again labels only the pairs it lacks. combine: see combine.py.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from llmlab.align.feedback.combine import (
    METHODS,
    Pair,
    Table,
    agreement,
    build_table,
    disagreements,
    fit_bradley_terry,
    label_row,
    preference_rows,
    read_labels,
)
from llmlab.align.feedback.config import FeedbackCombineConfig, FeedbackLabelConfig
from llmlab.align.feedback.judges import GoldJudge, build_judge, position_consistency
from llmlab.context import Context
from llmlab.data.loaders import iter_jsonl
from llmlab.errors import DataError, UserError
from llmlab.files import write_json_atomic, write_jsonl_atomic, write_text_atomic
from llmlab.runs import progress


def read_pairs(path: str | Path) -> list[Pair]:
    """(prompt, a, b) of every row, {prompt, a, b} or {prompt, chosen, rejected} (a = chosen), once each."""
    pairs: dict[Pair, None] = {}
    for lineno, row in iter_jsonl(path):
        keys = ("prompt", "a", "b") if isinstance(row, dict) and "a" in row else ("prompt", "chosen", "rejected")
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in keys):
            raise DataError(f"{path}:{lineno}: a pair row is {{prompt, a, b}} or {{prompt, chosen, rejected}}, "
                            "all strings")
        pairs[(row[keys[0]], row[keys[1]], row[keys[2]])] = None
    if not pairs:
        raise DataError(f"{path}: file is empty")
    return list(pairs)


def _existing_labels(out: Path, source: str) -> list[dict[str, Any]]:
    """The rows a previous run wrote to `out` (none if it does not exist); they must be this judge's."""
    if not out.exists():
        return []
    rows = []
    for lineno, row in iter_jsonl(out):
        label_row(row, f"{out}:{lineno}")
        if row.get("source") != source:
            raise UserError(f"{out}:{lineno}: labels by {row.get('source')!r}, not by {source!r}; "
                            "give each judge its own --out file")
        rows.append(row)
    return rows


def label_command(cfg: FeedbackLabelConfig, ctx: Context) -> int:
    pairs = read_pairs(cfg.pairs)
    out = Path(cfg.out)
    if out.is_dir():
        raise UserError(f"--out {out}: is a folder, not a labels file")
    judge = build_judge(cfg.judge)
    rows = _existing_labels(out, judge.name)
    done = {(r["prompt"], r["a"], r["b"]) for r in rows}
    todo = [p for p in pairs if p not in done and (p[0], p[2], p[1]) not in done]
    verdicts = []
    batches = [todo[i: i + cfg.batch_size] for i in range(0, len(todo), cfg.batch_size)]
    for batch in progress(batches, desc=f"labelling ({judge.name})", quiet=ctx.quiet, unit="batch"):
        prompts, a, b = ([p[k] for p in batch] for k in range(3))
        got = judge.compare(prompts, a, b)
        verdicts += got
        rows += [{"prompt": p, "a": x, "b": y, "label": v.label, "p_a": v.p_a, "source": judge.name,
                  "rationale": v.rationale, "consistent": v.consistent}
                 for (p, x, y), v in zip(batch, got, strict=True)]
        write_jsonl_atomic(out, rows)
    counts = {k: sum(r["label"] == k for r in rows) for k in ("a", "b", "tie")}
    line = f"{out}: {len(rows)} labels by {judge.name} ({len(rows) - len(verdicts)} kept from before, " \
           f"{len(verdicts)} new); a {counts['a']}, b {counts['b']}, tie {counts['tie']}"
    if not math.isnan(consistency := position_consistency(verdicts)):
        line += f"; position consistency {consistency:.3f}"
    if hasattr(judge, "unparseable"):  # a judge that parses model answers counts the ones it could not
        line += f"; unparseable answers {judge.unparseable} of {judge.asked}"
    print(line)
    return 0


def _named(spec: str, what: str) -> dict[str, str]:
    """NAME=VALUE,... as a dict (a bare VALUE is named by its file stem); duplicate names are an error."""
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, eq, value = item.partition("=")
        name, value = (name, value) if eq else (Path(item).stem, item)
        if not name or not value or name in out:
            raise UserError(f"--{what} {spec!r}: {'a duplicate' if name in out else 'an empty'} name or value "
                            f"in {item!r}; expected NAME=VALUE,NAME=VALUE")
        out[name] = value
    return out


def _weights(spec: str) -> dict[str, float]:
    try:
        return {k: float(v) for k, v in _named(spec, "weights").items()}
    except ValueError:
        raise UserError(f"weights {spec!r}: expected NAME=NUMBER,...") from None


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _kappa_cell(k: dict[str, Any]) -> str:
    lo, hi = k["interval"]
    return f"{_fmt(k['kappa'])} [{_fmt(lo)}, {_fmt(hi)}] | {_fmt(k['agreement'])} | {k['n']}"


def report_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Feedback agreement ({report['method']})", "",
             f"{report['pairs']} pairs; labelled by " + ", ".join(f"{s} {n}" for s, n in report["labelled"].items())
             + f"; {report['preferences']} preferences written, {report['disagreements']} pairs disagreed on.",
             "", "Hard labels a / b / tie; kappa with a 95% bootstrap interval over pairs.", ""]
    if report["cohen"]:
        lines += ["## Between sources (Cohen's kappa)", "", "| sources | kappa [95% CI] | agreement | n |",
                  "|---|---|---|---|"] + [f"| {k} | {_kappa_cell(v)} |" for k, v in report["cohen"].items()] + [""]
    if "fleiss" in report:
        f = report["fleiss"]
        lines += [f"Fleiss' kappa over the {f['n']} pairs every source labelled: {_fmt(f['kappa'])} "
                  f"[{_fmt(f['interval'][0])}, {_fmt(f['interval'][1])}]", ""]
    if "gold" in report:
        lines += ["## Against gold (Cohen's kappa)", "", "| source | kappa [95% CI] | agreement | n |",
                  "|---|---|---|---|"] + [f"| {k} | {_kappa_cell(v)} |" for k, v in report["gold"].items()] + [""]
    if "reliability" in report:
        lines += ["## Bradley–Terry reliabilities", "", "| source | r |", "|---|---|"]
        lines += [f"| {s} | {r:.3f} |" for s, r in report["reliability"].items()] + [""]
    return "\n".join(lines)


def combine_command(cfg: FeedbackCombineConfig, ctx: Context) -> int:
    files = _named(cfg.labels, "labels")
    weights = _weights(cfg.weights) if cfg.weights else None
    if weights and (unknown := set(weights) - set(files)):
        raise UserError(f"weights name {sorted(unknown)}, which are not among the labels {sorted(files)}")
    table: Table = build_table({name: read_labels(path) for name, path in files.items()})
    if not table.pairs:
        raise UserError(f"--labels {cfg.labels}: no labelled pairs")
    gold = [v.p_a for v in GoldJudge().compare(*([p[k] for p in table.pairs] for k in range(3)))] if cfg.gold \
        else None
    extra: dict[str, Any] = {}
    if cfg.method == "bt":
        fit = fit_bradley_terry(table)
        combined, extra["reliability"] = fit.p_a, fit.reliability
    else:
        combined = METHODS[cfg.method](table, weights)
    prefs = preference_rows(table, combined)
    disagreed = disagreements(table, combined, gold)
    report = {"method": cfg.method, "sources": files, **agreement(table, combined, gold, n_boot=cfg.n_boot,
                                                                   seed=cfg.seed), **extra,
              "preferences": len(prefs), "disagreements": len(disagreed)}
    out = Path(cfg.out)
    write_jsonl_atomic(out / "prefs.jsonl", prefs)
    write_jsonl_atomic(out / "disagreements.jsonl", disagreed)
    write_json_atomic(out / "agreement.json", report)
    write_text_atomic(out / "agreement.md", report_markdown(report))
    summary = f"{out}: {len(prefs)} preferences ({cfg.method}) from {len(table.pairs)} pairs, " \
              f"{len(disagreed)} disagreements"
    if "fleiss" in report:
        summary += f"; Fleiss' kappa {_fmt(report['fleiss']['kappa'])}"
    if gold is not None:
        summary += f"; combined vs gold kappa {_fmt(report['gold']['combined']['kappa'])}"
    print(summary)
    return 0
