"""Evaluation of an aligned policy against its base: `llmlab eval-prefs`, and the end of every `llmlab dpo` run.

    held-out pairs    implicit reward r(y) = log pi(y|x) - log pi_base(y|x) (summed over the response);
                      accuracy = share of pairs with r(chosen) > r(rejected), plus the mean margin
    held-out prompts  task-world eval prompts (corpora.eval_rows: none is in the train split) answered
                      greedily by the base and by the aligned model, scored by the gold scorers:
                      accuracy per family, refusal rate on unsafe prompts, over-refusal on benign ones,
                      mean response length, side by side

Writes eval.md, eval.json, generations.jsonl (every prompt and both answers) and family_scores.png.
Greedy decoding uses llmlab's KV-cache `Engine` for llmlab models and `generate` for HF models.
`compare_generations` takes plain callables, so the tables are testable without a model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmlab.align.config import EvalPrefsConfig, PrefEvalConfig
from llmlab.align.models import ChatTokenizer
from llmlab.data.scoring import score_responses

Respond = Callable[[list[str]], list[str]]


# ---------------------------------------------------------------------- preference accuracy


def preference_accuracy(policy_logps: torch.Tensor, base_logps: torch.Tensor) -> dict[str, float]:
    """From (N, 2+) summed log-probs (chosen, rejected) under the policy and the base:
    {"n", "accuracy", "margin" (mean r_c - r_r), "base_accuracy"} where base_accuracy is the share
    of pairs the base alone already ranks right by raw log-prob.

    >>> preference_accuracy(torch.tensor([[-1.0, -5.0], [-2.0, -1.0]]), torch.tensor([[-2.0, -2.0], [-2.0, -2.0]]))
    {'n': 2, 'accuracy': 0.5, 'margin': 1.5, 'base_accuracy': 0.0}
    """
    r = policy_logps[:, :2] - base_logps[:, :2]
    margins = r[:, 0] - r[:, 1]
    return {"n": int(r.shape[0]), "accuracy": float((margins > 0).float().mean()), "margin": float(margins.mean()),
            "base_accuracy": float((base_logps[:, 0] > base_logps[:, 1]).float().mean())}


# ---------------------------------------------------------------------- greedy answers


def chat_responses(model: nn.Module, tok: ChatTokenizer, prompts: Sequence[str], *, max_new_tokens: int,
                   batch_size: int, device: torch.device, temperature: float = 0.0,
                   top_p: float | None = None) -> list[str]:
    """Each prompt as one user turn, answered (greedily at temperature 0, else sampled; seed with
    torch.manual_seed); the text up to the turn's closing token."""
    from llmlab.align.models import is_llmlab

    answers: list[str] = []
    model.eval()
    for start in range(0, len(prompts), batch_size):
        ids = [tok.render_prompt(p) for p in prompts[start: start + batch_size]]
        if is_llmlab(model):
            new = _llmlab_generate(model, ids, tok, max_new_tokens, temperature, top_p)
        else:
            new = _hf_generate(model, ids, tok, max_new_tokens, device, temperature, top_p)
        for tokens in new:
            cut = next((i for i, t in enumerate(tokens) if t in tok.eos_ids), len(tokens))
            answers.append(tok.decode(tokens[:cut]).strip())
    return answers


def _llmlab_generate(model: nn.Module, ids: list[list[int]], tok: ChatTokenizer, max_new_tokens: int,
                     temperature: float, top_p: float | None) -> list[list[int]]:
    from llmlab.model.generate import Engine, SamplingConfig

    # A prompt too long for the context keeps its end (the question and the turn opening), so that
    # every row still gets max_new_tokens of room.
    max_new_tokens = min(max_new_tokens, model.cfg.max_seq_len // 2)
    keep = model.cfg.max_seq_len - max_new_tokens
    ids = [x[-keep:] for x in ids]
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                              stop_tokens=tok.eos_ids)
    return Engine(model, pad_id=tok.pad_id).generate(ids, sampling)


@torch.inference_mode()
def _hf_generate(model: nn.Module, ids: list[list[int]], tok: ChatTokenizer, max_new_tokens: int,
                 device: torch.device, temperature: float, top_p: float | None) -> list[list[int]]:
    P = max(len(x) for x in ids)
    batch = torch.full((len(ids), P), tok.pad_id, dtype=torch.long)
    attention = torch.zeros((len(ids), P), dtype=torch.long)
    for row, x in enumerate(ids):  # left padding: every row's next token comes at the same position
        batch[row, P - len(x):] = torch.tensor(x)
        attention[row, P - len(x):] = 1
    sampling = ({"do_sample": True, "temperature": temperature, "top_p": top_p or 1.0, "top_k": 0}
                if temperature > 0 else {"do_sample": False})
    out = model.generate(input_ids=batch.to(device), attention_mask=attention.to(device), **sampling,
                         max_new_tokens=max_new_tokens, eos_token_id=list(tok.eos_ids) or None,
                         pad_token_id=tok.pad_id)
    return [row[P:].tolist() for row in out]


# ---------------------------------------------------------------------- side by side


def compare_generations(rows: Sequence[dict[str, Any]], responders: dict[str, Respond]) -> tuple[dict[str, Any],
                                                                                                  list[dict]]:
    """({name: score report} for each responder, per-prompt records) on task-world eval rows."""
    prompts = [r["prompt"] for r in rows]
    answers = {name: respond(prompts) for name, respond in responders.items()}
    reports = {name: score_responses(zip(prompts, a, strict=True)) for name, a in answers.items()}
    records = [{"prompt": p, "family": r.get("family"), "answer": r.get("answer"),
                **{name: answers[name][i] for name in responders}} for i, (p, r) in enumerate(zip(prompts, rows,
                                                                                                   strict=True))]
    return reports, records


def format_comparison(reports: dict[str, dict[str, Any]], prefs: dict[str, float] | None) -> str:
    """Markdown: preference accuracy, then per-family accuracy and the safety lines, one column per model."""

    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    names = list(reports)
    lines = ["# Evaluation", ""]
    if prefs:
        lines += [f"held-out preference pairs: {prefs['n']}; implicit-reward accuracy {f(prefs['accuracy'])} "
                  f"(mean margin {prefs['margin']:.3f} nats); the base ranks {f(prefs['base_accuracy'])} right by "
                  "raw log-prob", ""]
    families = list(dict.fromkeys(fam for r in reports.values() for fam in r["families"]))
    lines += ["| family | n | " + " | ".join(f"{n} accuracy" for n in names) + " |",
              "|---|---:|" + "---:|" * len(names)]
    for fam in families:
        n = next(r["families"][fam]["n"] for r in reports.values() if fam in r["families"])
        cells = [f(r["families"].get(fam, {}).get("accuracy")) for r in reports.values()]
        lines.append(f"| {fam} | {n} | " + " | ".join(cells) + " |")
    lines.append(f"| **all** | {next(iter(reports.values()))['n']} | "
                 + " | ".join(f(r["accuracy"]) for r in reports.values()) + " |")
    lines += ["", "| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for label, key in (("refusal rate on unsafe prompts (higher is better)", "refusal_rate_unsafe"),
                       ("over-refusal on benign prompts (lower is better)", "over_refusal_rate"),
                       ("over-refusal on look-alikes (lower is better)", "over_refusal_rate_lookalike"),
                       ("mean response length (characters)", "mean_response_chars"),
                       ("mean gold score", "score")):
        lines.append(f"| {label} | " + " | ".join(f(r[key]) for r in reports.values()) + " |")
    return "\n".join(lines) + "\n"


def write_evaluation(out_dir: Path, reports: dict[str, dict[str, Any]], records: list[dict],
                     prefs: dict[str, float] | None) -> str:
    """eval.md, eval.json, generations.jsonl and family_scores.png in `out_dir`; returns the markdown."""
    from llmlab.files import write_json_atomic, write_text_atomic
    from llmlab.viz.figures import family_scores_chart

    out_dir.mkdir(parents=True, exist_ok=True)
    text = format_comparison(reports, prefs)
    write_text_atomic(out_dir / "eval.md", text)
    write_json_atomic(out_dir / "eval.json", {"preferences": prefs, "generation": reports})
    write_text_atomic(out_dir / "generations.jsonl",
                      "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    if any(r["families"] for r in reports.values()):
        family_scores_chart(reports, out_dir / "family_scores.png", title="base vs aligned on held-out prompts")
    return text


# ---------------------------------------------------------------------- a whole evaluation


def evaluate_run(policy: nn.Module, tok: ChatTokenizer, *, base_path: str, held_out: list[dict],
                 eval_cfg: PrefEvalConfig, max_length: int, max_prompt_length: int, device: torch.device,
                 out_dir: Path, log: Callable[[str], None], quiet: bool = True) -> dict[str, Any]:
    """Preference accuracy on `held_out` pairs and base-vs-aligned answers on task-world eval prompts."""
    from llmlab.align.data import encode_pairs
    from llmlab.align.dpo_train import reference_logprobs
    from llmlab.align.models import load_policy
    from llmlab.data.config import GenerateConfig
    from llmlab.data.corpora import eval_rows

    base, _ = load_policy(base_path, device=device)
    base.eval().requires_grad_(False)
    policy.eval()
    prefs = None
    if held_out:
        examples, _ = encode_pairs(held_out, tok, max_length=max_length, max_prompt_length=max_prompt_length)
        kwargs = {"device": device, "batch_size": eval_cfg.batch_size}
        prefs = preference_accuracy(reference_logprobs(policy, examples, tok.pad_id, **kwargs),
                                    reference_logprobs(base, examples, tok.pad_id, **kwargs))
    rows = list(eval_rows(GenerateConfig(kind="eval", n=eval_cfg.n_prompts, seed=eval_cfg.seed))) \
        if eval_cfg.n_prompts else []

    def responder(model: nn.Module) -> Respond:
        return lambda prompts: chat_responses(model, tok, prompts, max_new_tokens=eval_cfg.max_new_tokens,
                                                batch_size=eval_cfg.batch_size, device=device)

    reports, records = compare_generations(rows, {"base": responder(base), "aligned": responder(policy)})
    text = write_evaluation(out_dir, reports, records, prefs)
    for line in text.splitlines()[2:4]:
        if line:
            log(line)
    log(f"evaluation: {out_dir / 'eval.md'}")
    del base
    return {"preferences": prefs, "generation": reports}


def eval_prefs(cfg: EvalPrefsConfig, *, out: Path | None = None, quiet: bool = False) -> Path:
    """`llmlab eval-prefs`: evaluate --model against --base (default: the dpo run's starting model)."""
    from llmlab.align.data import holdout_split, load_preference_rows
    from llmlab.align.dpo_train import task_world_pairs
    from llmlab.align.models import load_policy
    from llmlab.errors import UserError
    from llmlab.runs import start_run
    from llmlab.train.distributed import pick_device

    base = cfg.base or _run_base(Path(cfg.model))
    if not base:
        raise UserError(f"{cfg.model}: not a dpo run folder, so --base DIR is needed (the model it started from)")
    run = start_run("eval-prefs", cfg, out=out, quiet=quiet)
    device = pick_device(cfg.device)
    policy, tok = load_policy(cfg.model, device=device)
    if cfg.data.input:
        rows, skipped = load_preference_rows(cfg.data.input, strict=cfg.data.strict)
        for message in skipped:
            run.log(f"skipped row: {message}")
        held = holdout_split(rows, cfg.data.eval_fraction, seed=cfg.data.seed)[1] if cfg.data.eval_fraction else rows
        held = held[: cfg.eval.n_pairs]
    else:
        held = task_world_pairs(cfg.eval.n_pairs, seed=cfg.eval.seed)
    evaluate_run(policy, tok, base_path=base, held_out=held, eval_cfg=cfg.eval, max_length=cfg.max_length,
                 max_prompt_length=cfg.max_prompt_length, device=device, out_dir=run.dir, log=run.log, quiet=quiet)
    return run.dir


def _run_base(model_dir: Path) -> str:
    """The starting model recorded in a dpo run folder's config.yaml, or ""."""
    from llmlab.config import read_yaml

    path = model_dir / "config.yaml"
    if not path.is_file():
        return ""
    data = read_yaml(path)
    return str(data.get("reference_model") or data.get("model") or "")


def command(cfg: EvalPrefsConfig, ctx: Any) -> int:
    """`llmlab eval-prefs` (ctx: cli.Context)."""
    run_dir = eval_prefs(cfg, out=ctx.out, quiet=ctx.quiet)
    print((run_dir / "eval.md").read_text(encoding="utf-8"))
    return 0
