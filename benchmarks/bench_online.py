"""Online RL benchmark: `llmlab grpo` / `llmlab rloo` against TRL's `GRPOTrainer` / `RLOOTrainer`, step time.

    .venv/bin/python benchmarks/bench_online.py --threads 1            # ~4.9M model, 2 + 10 steps each; a few minutes
    .venv/bin/python benchmarks/bench_online.py --threads 1 --write    # and benchmarks/results/online_cpu.md
    .venv/bin/python benchmarks/bench_online.py --steps 2 --cases llmlab TRL   # a smoke test

One seeded llmlab Llama (d_model 256, 6 layers, 4 heads, a 512-id BPE trained on task-world text: ~4.9M
parameters) is saved twice: as an llmlab folder (`save_model`) for llmlab and as an HF Llama folder
(`export_hf`, llmlab's chat template) for TRL. Both sides stop a response at the same tokens (<|end|> and
<|endoftext|>: the HF folder's generation_config lists both), sample at temperature 1 (no top-p / top-k),
and get the same reward: the task world's gold score of the response text (decoded and cut at the stop
token by llmlab's tokenizer on both sides). Per step: 8 task-world prompts x G=4 responses of at most 32
new tokens, all 32 generated in one batch and trained in one forward (TRL: per_device_train_batch_size 32,
one generation batch per optimizer step, num_iterations 1), fp32 AdamW at lr 1e-5 (betas 0.9 / 0.999,
constant schedule, grad norm clipped at 1), one torch thread, no vLLM, no logging or checkpoints inside
the timed steps. GRPO: beta 0.04, k3 KL in the loss (TRL: use_bias_correction_kl=False, loss_type "grpo",
llmlab's loss_norm "sequence"), group-scaled advantages. RLOO: beta 0.05, k1 KL in the reward.

Correctness first, in this process, per algorithm: TRL generates and scores one batch itself
(`_generate_and_score_completions`, the same prompts); on TRL's token ids, llmlab's prompt rendering gives the
same prompt ids, llmlab's forward on the llmlab folder gives TRL's reference log-probs (from the HF folder:
the same model), llmlab's rewards and advantages give TRL's advantages, and llmlab's loss
(`online.micro_loss`) gives TRL's `_compute_loss`, and the same gradients. The policy is first moved off the
reference by the same noise on both sides, so that the KL terms are not zero. Tolerances: log-probs 1e-4,
advantages 1e-4, loss 1e-5, gradients 1e-5 + 1e-4 relative.

Then, per algorithm, each trainer runs 2 warm-up steps and --steps timed ones in this process:
    llmlab          `online(cfg)` on the llmlab folder; step_s from metrics.jsonl (the whole step: rollout,
                    score, reference / old log-probs, advantages, update, metrics)
    TRL             the trainer's `train()`; a TrainerCallback's on_step_begin -> on_step_end (generation
                    happens inside: `_prepare_inputs`)
    llmlab (HF)     `online(cfg)` on the HF folder: llmlab's loop with HF's model and `generate`, to separate
                    llmlab's engine from llmlab's loop
    llmlab, one micro-batch
                    the first case with train.micro_batch_size=0: one forward over the whole batch, padded to
                    its longest prompt, as TRL does. llmlab's default (micro_batch_size=1) takes one prompt's G
                    responses per forward (the same update: the gradients accumulate with the step's global
                    counts), so rows are padded to their group's longest response only. The two rows show
                    what the padding costs (task-world prompts run from 14 to 357 tokens).
The step is split into generate (llmlab: `sample_rollouts`; TRL: `_generate_single_turn`), score (rewards,
reference and old log-probs, advantages) and update (loss, backward, optimizer), by wrapping those functions.
"between steps" is the median wall time from one step's end to the next one's (what a step window might hide).
`--rounds N` runs every case N times in alternating order and pools the steps; `--cases` picks the cases.

Writes benchmarks/results/online_cpu.md with --write. The machine is shared: the table records the
load average and how many cores other processes kept busy during each case.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded: both folders are built here
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from llmlab.bench.harness import (
    BUSY_CORES,
    cpu_clock,
    describe_load,
    describe_machine,
    load_average,
    log_with_elapsed,
    machine_info,
    markdown_table,
    other_cores,
    ratio,
    write_results,
)

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = {"d_model": 256, "n_layers": 6, "n_heads": 4, "max_seq_len": 512}  # with 512 ids: ~4.9M parameters
VOCAB = 512
N_PROMPTS, PROMPTS_PER_STEP, G, NEW_TOKENS, LR, WARMUP = 256, 8, 4, 32, 1e-5, 2
BETA = {"grpo": 0.04, "rloo": 0.05}
TOL = {"logp": 1e-4, "advantages": 1e-4, "loss": 1e-5}
GRAD_TOL = {"rtol": 1e-4, "atol": 1e-5}  # as tests/align/test_rl_trl.py: the two LM heads round differently


# ---------------------------------------------------------------------- the model, twice


def build_model(root: Path) -> tuple[dict[str, str], int]:
    """({"llmlab": folder, "hf": folder}, parameters): one seeded model saved as both."""
    import torch

    from llmlab.data.chat import CHAT_SPECIALS, END
    from llmlab.data.config import GenerateConfig
    from llmlab.data.corpora import pretrain_documents, sft_rows
    from llmlab.model.config import ModelConfig
    from llmlab.model.hf_io import export_hf
    from llmlab.model.io import save_model
    from llmlab.model.llama import Transformer
    from llmlab.tokenizers.bpe_train import train_bpe

    docs = list(pretrain_documents(GenerateConfig(kind="pretrain", chars=60_000)))
    docs += [m["content"] for row in sft_rows(GenerateConfig(kind="sft", n=300)) for m in row["messages"]]
    tok = train_bpe(docs, vocab_size=VOCAB, special_tokens=CHAT_SPECIALS)
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=tok.vocab_size, **MODEL))
    save_model(model, root / "llmlab", tok)
    hf = export_hf(model, root / "hf", tok)  # eos (and pad) <|endoftext|>; the template closes a turn with <|end|>
    # subtle: TRL stops at generation_config's eos ids (plus the tokenizer's eos); llmlab at <|end|> and
    # <|endoftext|>. List both, so that both sides stop at the same tokens.
    gen = json.loads((hf / "generation_config.json").read_text())
    gen["eos_token_id"] = [tok.special_tokens[END], tok.special_tokens["<|endoftext|>"]]
    (hf / "generation_config.json").write_text(json.dumps(gen))
    return {"llmlab": str(root / "llmlab"), "hf": str(hf)}, sum(p.numel() for p in model.parameters())


def task_prompts() -> list[Any]:
    """The train prompts `online()` draws with data.n=N_PROMPTS, data.seed=0 (align.online.prompt_sets)."""
    from llmlab.align.onpolicy import task_world_prompts

    return task_world_prompts(N_PROMPTS, seed=0, stream="online")


# ---------------------------------------------------------------------- the two trainers


def llmlab_config(algo: str, model: str, steps: int, extra: tuple[str, ...] = ()) -> Any:
    from llmlab.align.config import GRPOConfig, RLOOConfig
    from llmlab.config import load_config

    return load_config({"grpo": GRPOConfig, "rloo": RLOOConfig}[algo], None, [
        f"model={model}", f"kl_coef={BETA[algo]}", "loss_norm=sequence", "scale_rewards=group",
        f"rollout.samples={G}", f"rollout.max_new_tokens={NEW_TOKENS}", "rollout.temperature=1.0", "rollout.top_p=1.0",
        f"rollout.batch_size={PROMPTS_PER_STEP * G}", "reward.gold=1.0", f"data.n={N_PROMPTS}", "data.seed=0",
        "eval.n_prompts=0", "sample_every=0", f"train.max_steps={steps}", f"train.batch_size={PROMPTS_PER_STEP}",
        f"train.lr={LR}", "train.warmup_steps=0", "train.min_lr_ratio=1.0", "train.weight_decay=0.0",
        "train.beta1=0.9", "train.beta2=0.999", "train.grad_clip=1.0", "train.log_every=1", "train.checkpoint_every=0",
        "train.eval_every=0", "train.device=cpu", "train.dtype=float32", "train.seed=0", *extra,
    ])


def gold_reward(tok: Any) -> Any:
    """TRL's reward function: the gold score of llmlab's text of the completion ids (as `online` scores)."""
    from llmlab.align.generation import cut_at_stop
    from llmlab.data.tasks import score

    def gold(prompts: list[Any], completions: list[Any], completion_ids: list[list[int]], **kwargs: Any) -> list[float]:
        texts = [tok.decode(cut_at_stop(ids, tok.eos_ids)).strip() for ids in completion_ids]
        return [score(p[-1]["content"], t) for p, t in zip(prompts, texts, strict=True)]

    return gold


def trl_trainer(algo: str, hf_dir: str, prompts: list[Any], tok: Any, out: Path, steps: int) -> Any:
    import datasets
    import trl

    common = dict(output_dir=str(out), report_to="none", use_cpu=True, bf16=False, fp16=False,
                  gradient_checkpointing=False, per_device_train_batch_size=PROMPTS_PER_STEP * G,
                  gradient_accumulation_steps=1, num_generations=G, max_completion_length=NEW_TOKENS,
                  temperature=1.0, top_p=1.0, top_k=0, num_iterations=1, beta=BETA[algo], epsilon=0.2,
                  learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, adam_beta1=0.9,
                  adam_beta2=0.999, max_grad_norm=1.0, max_steps=steps, logging_strategy="no", save_strategy="no",
                  disable_tqdm=True, seed=0, model_init_kwargs={"dtype": "float32"})
    data = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": p.text}]} for p in prompts])
    if algo == "grpo":
        args = trl.GRPOConfig(**common, loss_type="grpo", scale_rewards="group", use_bias_correction_kl=False)
        trainer = trl.GRPOTrainer(model=hf_dir, reward_funcs=gold_reward(tok), args=args, train_dataset=data)
    else:
        args = trl.RLOOConfig(**common, normalize_advantages=False)
        trainer = trl.RLOOTrainer(model=hf_dir, reward_funcs=gold_reward(tok), args=args, train_dataset=data)
    assert args.generation_batch_size == PROMPTS_PER_STEP * G and args.steps_per_generation == 1
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train's loop; _compute_loss reads it
    return trainer


# ---------------------------------------------------------------------- correctness first


def check(algo: str, paths: dict[str, str], prompts: list[Any], root: Path, log: Any) -> dict[str, Any]:
    """TRL's generated and scored batch of 8 prompts x G, recomputed by llmlab's pieces (see the module doc)."""
    import copy

    import torch

    from llmlab.align import online
    from llmlab.align.models import load_policy
    from llmlab.align.rewards import Rewards
    from llmlab.model.hf_io import to_hf_state
    from llmlab.train.precision import autocast_for

    cpu = torch.device("cpu")
    cfg = llmlab_config(algo, paths["llmlab"], 1)
    policy, tok = load_policy(paths["llmlab"], device=cpu)
    ref = load_policy(paths["llmlab"], device=cpu)[0].eval().requires_grad_(False)
    trainer = trl_trainer(algo, paths["hf"], prompts, tok, root / f"check-{algo}", 1)
    # the policy moves away from the reference (the same noise on both sides), so that the KL terms are not 0
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for q in policy.parameters():
            q.add_(0.01 * torch.randn(q.shape, generator=g))
    missing, unexpected = trainer.model.load_state_dict(to_hf_state(policy), strict=False)
    assert not unexpected and all(k == "lm_head.weight" for k in missing), (missing, unexpected)  # tied head
    batch = [trainer.train_dataset[i] for i in range(PROMPTS_PER_STEP) for _ in range(G)]  # each prompt G times
    torch.manual_seed(0)
    out = trainer._generate_and_score_completions(batch)

    def rows(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        return [x[m.bool()].tolist() for x, m in zip(ids, mask, strict=True)]

    mine = [prompts[i] for i in range(PROMPTS_PER_STEP) for _ in range(G)]
    p_ids, c_ids = rows(out["prompt_ids"], out["prompt_mask"]), rows(out["completion_ids"], out["completion_mask"])
    same_prompts = p_ids == [tok.render_prompt(p.text) for p in mine]
    texts = [tok.decode(online.cut_at_stop(t, tok.eos_ids)).strip() for t in c_ids]
    r = online.Rollouts(mine, p_ids, c_ids, texts, [bool(t) and t[-1] in tok.eos_ids for t in c_ids])
    r.scored = Rewards(cfg.reward, device=cpu, batch_size=64)(r.prompts, r.texts, r.closed, [len(t) for t in c_ids])
    W = out["completion_ids"].shape[1]
    r.mask = online.layout_mask(c_ids, W)
    fwd = online.Forward(cfg, tok, cpu, autocast_for(cpu, "float32"), tok.inner.id_count)
    need_old = algo == "rloo"  # kl in the reward: the rollout policy's log-probs before the update
    online.score_old(fwd, policy, ref, r, PROMPTS_PER_STEP, G, need_old=need_old)
    online.advantages(cfg, r, cfg.kl_coef)
    mask = out["completion_mask"].bool()
    if algo == "grpo":
        trl_ref = out["ref_per_token_logps"]
        logp_err = float((r.ref_logp[mask] - trl_ref[mask]).abs().max())
    else:  # TRL keeps the summed log-probs of the rollout policy
        logp_err = float(((r.old_logp * r.mask).sum(1) - out["old_logps"]).abs().max())
    adv_err = float((r.advantages - out["advantages"]).abs().max())
    n_tokens = int(r.mask.sum())
    loss, _ = online.micro_loss(cfg, fwd, policy, r, list(range(len(r))), kl_coef=cfg.kl_coef, n_sequences=len(r),
                                n_tokens=n_tokens, reuse=not need_old)
    trl_loss = trainer._compute_loss(trainer.model, out)
    loss_err = abs(float(loss.detach()) - float(trl_loss.detach()))
    loss.backward()
    trl_loss.backward()
    grads = copy.deepcopy(policy)  # llmlab's gradients under HF's names (fused projections split)
    for q, w in zip(grads.parameters(), policy.parameters(), strict=True):
        q.data = w.grad
    theirs = {k: q.grad for k, q in trainer.model.named_parameters()}
    ours = to_hf_state(grads)
    grad_ok = ours.keys() == theirs.keys() and all(torch.allclose(v, theirs[k], **GRAD_TOL) for k, v in ours.items())
    grad_err = max(float((v - theirs[k]).abs().max()) for k, v in ours.items())
    grad_max = max(float(v.abs().max()) for v in ours.values())
    result = {"algo": algo, "prompt_ids_equal": same_prompts, "logp_err": logp_err, "adv_err": adv_err,
              "loss_err": loss_err, "loss": float(loss.detach()), "trl_loss": float(trl_loss.detach()),
              "grad_err": grad_err, "grad_max": grad_max, "grad_ok": grad_ok,
              "tokens": n_tokens, "mean_reward": sum(r.scored.reward) / len(r),
              "nonzero_advantages": int((out["advantages"].abs() > 0).sum())}
    result["ok"] = (same_prompts and logp_err < TOL["logp"] and adv_err < TOL["advantages"]
                    and loss_err < TOL["loss"] and grad_ok)
    log(f"correctness {algo}: prompt ids equal {same_prompts}; log-probs max err {logp_err:.1e}; advantages max err "
        f"{adv_err:.1e} ({result['nonzero_advantages']} nonzero); loss llmlab {result['loss']:.6f}, TRL "
        f"{result['trl_loss']:.6f}; gradients max err {grad_err:.1e} (largest {grad_max:.1e}) "
        f"({'ok' if result['ok'] else 'MISMATCH'})")
    return result


# ---------------------------------------------------------------------- timing


class Splits:
    """Wall time of each call of wrapped functions, per name in call order. Each wrapped function runs once per
    step (no evaluation, one generation batch per step), so call i belongs to step i."""

    def __init__(self) -> None:
        self.calls: dict[str, list[float]] = {}

    def wrap(self, name: str, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.calls.setdefault(name, []).append(time.perf_counter() - t0)

        return timed

    def per_step(self, n: int) -> list[dict[str, float]]:
        if any(len(v) != n for v in self.calls.values()):
            raise RuntimeError(f"expected one call per step ({n}): {({k: len(v) for k, v in self.calls.items()})}")
        return [{k: v[i] for k, v in self.calls.items()} for i in range(n)]


CASES = {  # name -> (model folder, extra llmlab overrides); None: TRL
    "llmlab": ("llmlab", ()),
    "TRL": None,
    "llmlab (HF model)": ("hf", ()),
    "llmlab, one micro-batch": ("llmlab", ("train.micro_batch_size=0",)),
}


def measured(step_s: list[float], ends: list[float], splits: list[dict[str, float]], lengths: list[float],
             busy: float, threads: int, tokens: list[dict[str, int]] | None = None) -> dict[str, Any]:
    """The raw numbers of one run's timed steps (warm-up dropped); `pooled` merges runs."""
    return {"step_s": step_s, "generate_s": [s["generate"] for s in splits], "update_s": [s["update"] for s in splits],
            "between_s": [b - a - s for a, b, s in zip(ends, ends[1:], step_s[1:], strict=False)],
            "completion_len": lengths, "other_cores": [busy], "threads": [threads], "tokens": tokens or []}


def pooled(name: str, algo: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A table row from the runs of one case."""
    raw = {k: [x for r in runs for x in r[k]] for k in runs[0]}
    step_s = raw["step_s"]
    row = {"trainer": name, "algo": algo, "steps": len(step_s), "median_s": statistics.median(step_s),
           "mean_s": statistics.fmean(step_s), "min_s": min(step_s), "generate_s": statistics.median(raw["generate_s"]),
           "score_s": statistics.median(t - g - u for t, g, u in zip(step_s, raw["generate_s"], raw["update_s"],
                                                                       strict=True)),
           "update_s": statistics.median(raw["update_s"]),
           "between_s": statistics.median(raw["between_s"]) if raw["between_s"] else 0.0,
           "completion_len": statistics.fmean(raw["completion_len"]), "other_cores": max(raw["other_cores"]),
           "threads": max(raw["threads"]), "raw": raw}
    if raw["tokens"]:
        row["tokens"] = {k: statistics.fmean(t[k] for t in raw["tokens"]) for k in raw["tokens"][0]}
    return row


def time_llmlab(algo: str, model: str, steps: int, out: Path, extra: tuple[str, ...]) -> dict[str, Any]:
    """`online()` for WARMUP + steps steps; step_s from metrics.jsonl, its parts from wrapped functions."""
    import torch

    from llmlab.align import online

    splits = Splits()
    tokens: list[dict[str, int]] = []
    sample = online.sample_rollouts

    def counted(*args: Any, **kwargs: Any) -> Any:
        r = sample(*args, **kwargs)
        lengths = [len(p) + len(x) for p, x in zip(r.prompt_ids, r.response_ids, strict=True)]
        G = kwargs["samples"]
        tokens.append({"real": sum(lengths), "padded": len(lengths) * max(lengths),  # right-padded to the longest
                       "prompt_once": sum(map(len, r.prompt_ids[::G])) + sum(map(len, r.response_ids))})
        return r

    saved = online.sample_rollouts, online._updates
    online.sample_rollouts = splits.wrap("generate", counted)
    online._updates = splits.wrap("update", online._updates)
    since = cpu_clock()
    try:
        run = online.online(llmlab_config(algo, model, WARMUP + steps, extra), out=out, quiet=True)
    finally:
        online.sample_rollouts, online._updates = saved
    busy = other_cores(since)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    rows = [r for r in rows if "step_s" in r]
    if len(rows) != WARMUP + steps:
        raise RuntimeError(f"{out}: {len(rows)} step rows in metrics.jsonl, expected {WARMUP + steps}")
    per_step, timed = splits.per_step(len(rows)), rows[WARMUP:]
    return measured([r["step_s"] for r in timed], [r["time"] for r in timed], per_step[WARMUP:],
                    [r["response_len"] for r in timed], busy, torch.get_num_threads(), tokens[WARMUP:])


def time_trl(algo: str, hf_dir: str, prompts: list[Any], tok: Any, steps: int, out: Path) -> dict[str, Any]:
    """The trainer's train() for WARMUP + steps steps, timed by a callback; parts from wrapped methods."""
    import torch
    import transformers

    trainer = trl_trainer(algo, hf_dir, prompts, tok, out, WARMUP + steps)
    splits = Splits()
    marks: dict[str, list[float]] = {"begin": [], "end": [], "threads": []}
    lengths: list[float] = []

    class Clock(transformers.TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            marks["threads"].append(torch.get_num_threads())
            marks["begin"].append(time.perf_counter())

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            marks["end"].append(time.perf_counter())
            lengths.append(trainer._metrics["train"]["completions/mean_length"][-1])  # cleared by each log

    trainer.add_callback(Clock())
    trainer.remove_callback(transformers.PrinterCallback)  # the end-of-training metrics dict
    generate_and_score = trainer._generate_and_score_completions
    trainer._generate_single_turn = splits.wrap("generate", trainer._generate_single_turn)
    trainer._generate_and_score_completions = splits.wrap("generate+score", generate_and_score)
    since = cpu_clock()
    trainer.train()
    busy = other_cores(since)
    step_s = [e - b for b, e in zip(marks["begin"], marks["end"], strict=True)]
    if len(step_s) != WARMUP + steps or len(lengths) != WARMUP + steps:
        raise RuntimeError(f"TRL {algo}: {len(step_s)} steps timed, {len(lengths)} lengths; expected {WARMUP + steps}")
    per_step = splits.per_step(len(step_s))
    for s, t in zip(per_step, step_s, strict=True):  # update: the step less generation and scoring
        s["update"] = t - s["generate+score"]
    return measured(step_s[WARMUP:], marks["end"][WARMUP:], per_step[WARMUP:], lengths[WARMUP:], busy,
                    max(marks["threads"]))


# ---------------------------------------------------------------------- the run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10, help=f"timed steps per trainer (after {WARMUP} warm-up steps)")
    parser.add_argument("--rounds", type=int, default=1, help="run every case this many times, in alternating order, "
                        "and pool the steps (on a shared machine: spreads the other jobs' load over the cases)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES), metavar="CASE",
                        help=f"which trainers to time (default: all of {list(CASES)})")
    parser.add_argument("--write", action="store_true", help="write benchmarks/results/online_cpu.md and .json")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import logging
    import warnings

    import datasets
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    for name in ("trl", "transformers", "accelerate", "llmlab"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    log = log_with_elapsed()
    load_start = load_average()[0]
    checks: list[dict[str, Any]] = []
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths, n_params = build_model(root)
        prompts = task_prompts()
        from llmlab.align.models import load_policy

        tok = load_policy(paths["llmlab"], device="cpu")[1]
        log(f"model: {n_params / 1e6:.2f}M parameters, vocab {tok.inner.vocab_size}; {len(prompts)} prompts")
        for algo in ("grpo", "rloo"):
            checks.append(check(algo, paths, prompts, root, log))
        if not all(c["ok"] for c in checks):
            log("correctness check failed: not timing")
            print(json.dumps(checks, indent=1))
            return 1
        cases = [(algo, name) for algo in ("grpo", "rloo") for name in args.cases]
        for round_ in range(args.rounds):
            for algo, name in cases if round_ % 2 == 0 else cases[::-1]:
                out = root / f"{algo}-{len(runs.get((algo, name), []))}-{name.replace(' ', '_')}"
                if CASES[name] is None:
                    run = time_trl(algo, paths["hf"], prompts, tok, args.steps, out)
                else:
                    folder, extra = CASES[name]
                    run = time_llmlab(algo, paths[folder], args.steps, out, extra)
                runs.setdefault((algo, name), []).append(run)
                log(f"{algo} {name}: median {statistics.median(run['step_s']):.3f} s/step, other cores busy "
                    f"{run['other_cores'][0]:.2f}")
    rows = [pooled(name, algo, runs[algo, name]) for algo, name in cases]
    load_end = load_average()[0]
    text = report(rows, checks, args, n_params, describe_load(load_start, load_end))
    print(text)
    if args.write:
        write_results(RESULTS / "online_cpu.md", text)
    return 0


def report(rows: list[dict[str, Any]], checks: list[dict[str, Any]], args: Any, n_params: int, load: str) -> str:
    trl_median = {r["algo"]: r["median_s"] for r in rows if r["trainer"] == "TRL"}

    def versus(r: dict[str, Any]) -> list[str]:
        if r["algo"] not in trl_median:
            return ["-", "-"]
        if r["trainer"] == "TRL":
            return ["1.00x", "-"]
        met = r["median_s"] <= 0.5 * trl_median[r["algo"]]
        return [ratio(trl_median[r["algo"]], r["median_s"]), "met" if met else "not met"]

    table = markdown_table(
        ["algorithm", "trainer", "median s/step", "mean s/step", "generate", "score", "update", "between steps",
         "completion tokens", "TRL / this", "target (<= 0.5x TRL)", "other cores busy"],
        [[r["algo"].upper(), r["trainer"], f"{r['median_s']:.3f}", f"{r['mean_s']:.3f}", f"{r['generate_s']:.3f}",
          f"{r['score_s']:.3f}", f"{r['update_s']:.3f}", f"{r['between_s']:.3f}", f"{r['completion_len']:.1f}",
          *versus(r), f"{r['other_cores']:.2f}"] for r in rows], align="llrrrrrrrrll")
    checks_table = markdown_table(
        ["algorithm", "prompt ids (llmlab render = TRL template)", "log-probs max abs err", "advantages max abs err",
         "loss llmlab", "loss TRL", "abs diff", "gradients max abs err (largest gradient)", ""],
        [[c["algo"].upper(), c["prompt_ids_equal"], f"{c['logp_err']:.1e}", f"{c['adv_err']:.1e}", f"{c['loss']:.6f}",
          f"{c['trl_loss']:.6f}", f"{c['loss_err']:.1e}", f"{c['grad_err']:.1e} ({c['grad_max']:.1e})",
          "ok" if c["ok"] else "MISMATCH"] for c in checks],
        align="llrrrrrrl")
    tokens = [r["tokens"] for r in rows if "tokens" in r and r["trainer"] == "llmlab"]
    padding = (f"Tokens per step in llmlab's batches (mean over its timed steps): {tokens[0]['real']:,.0f} in the "
               f"{PROMPTS_PER_STEP * G} sequences, {tokens[0]['padded']:,.0f} once right-padded to the longest (what "
               f"one forward of the whole batch computes, in both trainers: TRL pads prompts left to the longest and "
               f"completions right), {tokens[0]['prompt_once']:,.0f} with each prompt counted once (a shared-prefix "
               f"forward).\n\n" if tokens else "")
    machine = describe_machine(machine_info(("torch", "transformers", "trl")))
    busy = max(r["other_cores"] for r in rows)
    noise = (f"**The machine was shared**: other processes kept up to {busy:.1f} of its {os.cpu_count()} cores busy "
             f"during the timed runs, so the seconds are larger and noisier than on a quiet machine; compare the "
             f"ratios, which come from the same run.\n\n" if busy > BUSY_CORES else "")
    return (f"# Online RL step time: llmlab vs TRL (CPU)\n\n"
            f"`benchmarks/bench_online.py --threads {args.threads} --steps {args.steps} --rounds {args.rounds}` on "
            f"{time.strftime('%Y-%m-%d %H:%M')}: {machine}; {load}.\n\n"
            f"Model: an llmlab Llama of {n_params / 1e6:.2f}M parameters ({MODEL}, vocab {VOCAB}), random seeded "
            f"weights, the same weights in both trainers. Per step: {PROMPTS_PER_STEP} task-world prompts x G={G} "
            f"responses of at most {NEW_TOKENS} new tokens, temperature 1, gold-score reward, lr {LR}, one update. "
            f"{WARMUP} warm-up steps, then {args.steps} timed, per run; {args.rounds} run(s) per case, in alternating "
            f"order, steps pooled. Seconds per step; generate / score / update are medians of the step's parts "
            f"(score: rewards, reference and old log-probs, advantages; between steps: from one step's end to the "
            f"next one's start). \"other cores busy\": the most, over a case's runs, that other processes kept busy "
            f"on average.\n\n"
            f"## Correctness (before timing)\n\nOn one batch TRL generated and scored (8 prompts x {G}), the policy "
            f"moved off the reference by the same noise on both sides: tolerances {TOL}, gradients {GRAD_TOL}. GRPO "
            f"compares the reference's per-token log-probs, RLOO the rollout policy's summed log-probs (TRL's "
            f"old_logps).\n\n{checks_table}\n\n## Step time\n\n{noise}{table}\n\n{padding}")


if __name__ == "__main__":
    raise SystemExit(main())
