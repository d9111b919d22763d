"""Configs of the alignment commands: `llmlab sft`, `rm train`, `rm score`, `dpo`, `sample-prefs`,
`eval-prefs`, constitutional AI (`cai revise`, `cai label`, `cai judge-data`) and the online RL trainers (`ppo`, `grpo`, `rloo`), and the pieces they share (LoRA, chat data, pair data, the preference evaluation).

`llmlab <command> --print-config` shows every field. `train.*` is the shared loop
(train.config.TrainConfig): it has no `seq_len`, because `max_length` bounds each chat or pair
instead. `max_length=0` (the default) is the model's own context length, and
`max_prompt_length=0` half of max_length, so the commands work on any model as they come.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from llmlab.align.dpo import LOSSES
from llmlab.config import check, require
from llmlab.data.config import TaskConfig
from llmlab.train.config import TrainConfig

LossName = Literal["sigmoid", "hinge", "ipo", "cdpo", "robust", "simpo", "orpo", "kto"]


@dataclass(frozen=True)
class LoraConfig:
    """LoRA adapters on the named linear layers; r = 0 turns LoRA off.

    target_modules are module-name suffixes: llmlab's ("qkv", "o", "gate_up", "down"), or an HF
    model's (e.g. "q_proj", "v_proj"; "c_attn" for GPT-2). Empty: llmlab's four for llmlab
    models, every linear layer but the output head for HF models ("all-linear").
    """

    r: int = 0
    alpha: float = 16.0  # the update is scaled by alpha / r
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check(self.r >= 0, f"lora.r must be >= 0 (0: no LoRA), got {self.r}")
        check(self.alpha > 0, f"lora.alpha must be positive, got {self.alpha}")
        check(0.0 <= self.dropout < 1.0, f"lora.dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class ChatDataConfig:
    input: tuple[str, ...] = ()  # JSONL / JSON / parquet / HF dataset folders of {"messages": [...]}; empty: task world
    n: int = 2000  # task-world chats to draw when no input is given
    seed: int = 0
    strict: bool = True  # false: skip malformed rows (listed in log.txt) instead of stopping at the first
    eval_fraction: float = 0.05  # share of rows held out for the eval loss

    def __post_init__(self) -> None:
        check(self.n >= 2, f"data.n must be at least 2, got {self.n}")
        check(0.0 <= self.eval_fraction < 0.5, f"data.eval_fraction must be in [0, 0.5), got {self.eval_fraction}")


@dataclass(frozen=True)
class PairDataConfig:
    """Preference pairs, for the reward model, DPO and eval-prefs."""

    input: tuple[str, ...] = ()  # JSONL / JSON / parquet / HF dataset folders of {prompt, chosen, rejected}; empty: task world
    n: int = 2000  # task-world pairs to draw when no input is given
    seed: int = 0
    tasks: TaskConfig = field(default_factory=TaskConfig)  # the task world's families and difficulty (no input)
    strict: bool = True  # false: skip malformed rows (listed in log.txt) instead of stopping at the first
    eval_fraction: float = 0.05  # with input: share of rows held out (task world: pairs of its eval split instead)
    soft_labels: bool = True  # train on each row's p_chosen (P(chosen better), absent: 1); false: the labels alone

    def __post_init__(self) -> None:
        check(self.n >= 2, f"data.n must be at least 2, got {self.n}")
        check(0.0 <= self.eval_fraction < 0.5, f"data.eval_fraction must be in [0, 0.5), got {self.eval_fraction}")


def check_lengths(max_length: int, max_prompt_length: int) -> None:
    """Cross-field check of a pair command's lengths (0: the model's context, half of max_length)."""
    check(max_length >= 0 and max_prompt_length >= 0, "max_length and max_prompt_length must be >= 0 (0: from the model)")
    check(not (max_length and max_prompt_length) or max_prompt_length < max_length,
          f"need max_prompt_length ({max_prompt_length}) < max_length ({max_length})")


@dataclass(frozen=True)
class PrefEvalConfig:
    """The evaluation at the end of a run (and of `llmlab eval-prefs`)."""

    n_pairs: int = 200  # held-out preference pairs scored by implicit reward
    n_prompts: int = 180  # held-out task-world prompts answered greedily by the base and the aligned model
    max_new_tokens: int = 64
    batch_size: int = 16
    seed: int = 0
    tasks: TaskConfig = field(default_factory=TaskConfig)  # families and difficulty of the held-out prompts and pairs

    def __post_init__(self) -> None:
        for name in ("n_pairs", "n_prompts", "max_new_tokens", "batch_size"):
            check(getattr(self, name) >= 0 if name.startswith("n_") else getattr(self, name) >= 1,
                  f"eval.{name} must be {'>= 0' if name.startswith('n_') else 'at least 1'}, got {getattr(self, name)}")


def _dpo_train() -> TrainConfig:
    return TrainConfig(max_steps=200, batch_size=8, lr=5e-5, warmup_steps=10, weight_decay=0.0, min_lr_ratio=0.0,
                       eval_every=50, eval_batches=4, log_every=1, checkpoint_every=100)


@dataclass(frozen=True)
class DPOConfig:
    """`llmlab dpo`: preference optimisation of a policy against a frozen reference."""

    model: str = ""  # the policy to start from: an llmlab model folder or a local HF causal-LM folder
    reference_model: str = ""  # empty: the starting policy itself (the usual choice)
    loss: LossName = "sigmoid"  # one of align.dpo.LOSSES
    beta: float = 0.1  # DPO's KL strength; SimPO's reward scale; ORPO's weight of the odds-ratio term (lambda)
    label_smoothing: float | None = None  # cdpo / robust: assumed share of flipped labels; unset: the loss's own (0.1)
    simpo_gamma: float = 0.5  # simpo: target margin (the paper's gamma, in reward units)
    orpo_sft_weight: float = 1.0  # orpo: weight of the chosen responses' NLL (the paper fixes it at 1)
    rpo_alpha: float = 0.0  # other losses: weight of the chosen responses' NLL added to the loss (RPO; TRL's "sft" term)
    kto_desirable_weight: float = 1.0
    kto_undesirable_weight: float = 1.0
    reference: Literal["copy", "precompute"] = "copy"  # precompute: one pass before training, then only the policy in memory
    max_length: int = 0  # prompt + response tokens per sequence; 0: the model's context length
    max_prompt_length: int = 0  # longer prompts keep their end; 0: half of max_length
    gradient_checkpointing: bool = False
    warn_margin: float = 20.0  # log a warning once the mean reward margin passes this (DPO's margin runs away)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: PairDataConfig = field(default_factory=PairDataConfig)
    train: TrainConfig = field(default_factory=_dpo_train)
    eval: PrefEvalConfig = field(default_factory=PrefEvalConfig)
    resume: str = ""  # a run folder or checkpoint folder to continue from

    def __post_init__(self) -> None:
        require(bool(self.model) or bool(self.resume), "model is required: --model DIR (an llmlab or HF model folder)")
        check(self.beta > 0, f"beta must be positive, got {self.beta}")
        check(self.loss in LOSSES, f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        spec = LOSSES[self.loss]
        if "label_smoothing" in spec.params:
            if self.label_smoothing is None:  # resolved here, so the saved config shows the value trained with
                object.__setattr__(self, "label_smoothing", spec.defaults["label_smoothing"])
            check(self.label_smoothing != 0.0,
                  f"label_smoothing=0 with loss={self.loss} is plain sigmoid DPO: use loss=sigmoid, or leave "
                  f"label_smoothing unset for {self.loss}'s {spec.defaults['label_smoothing']}")
            check(0.0 < self.label_smoothing < 0.5, f"label_smoothing must be in (0, 0.5), got {self.label_smoothing}")
        else:  # subtle: 0.0 is accepted, as configs saved before label_smoothing could be unset have it
            takes = " and ".join(name for name, s in LOSSES.items() if "label_smoothing" in s.params)
            check(not self.label_smoothing, f"label_smoothing applies to the {takes} losses, not to {self.loss}")
        check_lengths(self.max_length, self.max_prompt_length)
        check(self.orpo_sft_weight >= 0, f"orpo_sft_weight must be >= 0, got {self.orpo_sft_weight}")
        check(self.rpo_alpha >= 0, f"rpo_alpha must be >= 0, got {self.rpo_alpha}")
        check(self.rpo_alpha == 0.0 or spec.nll_weight_field == "rpo_alpha",
              f"{self.loss} has its own NLL term: set {spec.nll_weight_field}, not rpo_alpha")
        check(self.warn_margin > 0, f"warn_margin must be positive, got {self.warn_margin}")
        check(self.kto_desirable_weight > 0 and self.kto_undesirable_weight > 0, "kto weights must be positive")


@dataclass(frozen=True)
class EvalPrefsConfig:
    """`llmlab eval-prefs`: held-out preference accuracy and base-vs-aligned task scores."""

    model: str = ""  # the aligned policy (a dpo run folder or any model folder)
    base: str = ""  # the reference / starting model; empty: the `model` of the dpo run that wrote --model
    data: PairDataConfig = field(default_factory=lambda: PairDataConfig(eval_fraction=0.0))
    eval: PrefEvalConfig = field(default_factory=PrefEvalConfig)
    max_length: int = 0  # 0: the model's context length
    max_prompt_length: int = 0  # 0: half of max_length
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self) -> None:
        require(bool(self.model), "model is required: --model DIR")
        check_lengths(self.max_length, self.max_prompt_length)


# ---------------------------------------------------------------------- sft, rm train, rm score, sample-prefs


def _sft_train() -> TrainConfig:
    return TrainConfig(max_steps=300, batch_size=16, lr=1e-4, warmup_steps=20, weight_decay=0.0, eval_every=50,
                       eval_batches=4, log_every=10, checkpoint_every=100)


@dataclass(frozen=True)
class SFTConfig:
    """`llmlab sft`: supervised fine-tuning on chats, the loss on the assistant's tokens."""

    model: str = ""  # the model to fine-tune: an llmlab model folder or a local HF causal-LM folder
    max_length: int = 0  # tokens per chat (and per pack); longer chats keep their beginning; 0: the model's context
    packing: bool = False  # concatenate chats into sequences of max_length tokens
    # token: every assistant token weighs the same (TRL), so long answers dominate; sequence: every chat
    # weighs the same (its tokens' mean), so a one-token answer counts as much as a 40-token refusal
    loss_norm: Literal["token", "sequence"] = "token"
    gradient_checkpointing: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: ChatDataConfig = field(default_factory=ChatDataConfig)
    train: TrainConfig = field(default_factory=_sft_train)
    resume: str = ""  # a run folder or checkpoint folder to continue from

    def __post_init__(self) -> None:
        require(bool(self.model) or bool(self.resume), "model is required: --model DIR (an llmlab or HF model folder)")
        check(self.max_length == 0 or self.max_length >= 2, f"max_length must be 0 (the model's) or >= 2, got {self.max_length}")
        check(not (self.packing and self.loss_norm == "sequence"),
              "loss_norm=sequence weighs chats, and packing merges them: use one or the other")


def _rm_train() -> TrainConfig:
    return TrainConfig(max_steps=300, batch_size=16, lr=5e-5, warmup_steps=20, weight_decay=0.0, eval_every=50,
                       eval_batches=8, log_every=10, checkpoint_every=100)


@dataclass(frozen=True)
class RewardModelConfig:
    """`llmlab rm train`: a Bradley-Terry reward model on preference pairs."""

    model: str = ""  # the trunk to start from: an llmlab model folder or a local HF causal-LM folder (an SFT run)
    margin: float = 0.0  # Bradley-Terry margin: ask for r_chosen - r_rejected >= margin
    max_length: int = 0  # prompt + response tokens per sequence; 0: the model's context length
    max_prompt_length: int = 0  # longer prompts keep their end; 0: half of max_length
    gradient_checkpointing: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: PairDataConfig = field(default_factory=lambda: PairDataConfig(eval_fraction=0.1))
    train: TrainConfig = field(default_factory=_rm_train)
    resume: str = ""  # a run folder or checkpoint folder to continue from

    def __post_init__(self) -> None:
        require(bool(self.model) or bool(self.resume), "model is required: --model DIR (an llmlab or HF model folder)")
        check_lengths(self.max_length, self.max_prompt_length)


@dataclass(frozen=True)
class ScoreRMConfig:
    """`llmlab rm score`: rewards of one (prompt, response) or of a JSONL file of them."""

    model: str = ""  # a reward model folder (an `llmlab rm train` run)
    prompt: str = ""
    response: str = ""
    input: str = ""  # JSONL / JSON / parquet / HF dataset of {prompt, response}; writes one JSON line per row
    max_length: int = 0  # 0: the reward model's context length
    batch_size: int = 16
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self) -> None:
        require(bool(self.model), "model is required: --model DIR (a reward model folder)")
        require(bool(self.input) != bool(self.prompt or self.response),
                "give either --prompt and --response, or --input FILE")
        check(self.max_length >= 0, f"max_length must be >= 0 (0: the model's), got {self.max_length}")


@dataclass(frozen=True)
class SamplePrefsConfig:
    """`llmlab sample-prefs`: on-policy preference pairs from a model's sampled answers."""

    model: str = ""  # the policy whose answers are sampled: an llmlab or a local HF model folder
    input: tuple[str, ...] = ()  # {"prompt": ...} rows (JSONL / JSON / parquet / HF dataset); empty: task world
    n: int = 1000  # task-world train prompts to draw when no input is given
    seed: int = 0
    tasks: TaskConfig = field(default_factory=TaskConfig)  # the task world's families and difficulty (no input)
    samples: int = 4  # answers per prompt
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    batch_size: int = 32  # sequences generated together
    scorer: Literal["gold", "rm"] = "gold"  # gold: the task world's scorers; rm: reward_model
    reward_model: str = ""  # a reward model folder, for scorer=rm
    gold_chosen: bool = True  # gold scorer: when no answer gets full marks, the gold response is the chosen one
    min_gap: float = 0.0  # a pair needs score(chosen) - score(rejected) > min_gap
    strict: bool = True  # false: skip bad input rows (listed in log.txt) instead of stopping at the first
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self) -> None:
        require(bool(self.model), "model is required: --model DIR (the policy to sample from)")
        check(self.n >= 1, f"n must be at least 1, got {self.n}")
        check(self.samples >= 2, f"samples must be at least 2 (a pair needs two answers), got {self.samples}")
        check(self.temperature > 0, f"temperature must be positive (sampling), got {self.temperature}")
        check(0.0 < self.top_p <= 1.0, f"top_p must be in (0, 1], got {self.top_p}")
        check(self.max_new_tokens >= 1 and self.batch_size >= 1, "max_new_tokens and batch_size must be at least 1")
        check(self.min_gap >= 0, f"min_gap must be >= 0, got {self.min_gap}")
        check(self.scorer != "rm" or bool(self.reward_model), "scorer=rm needs reward_model=DIR")


# ---------------------------------------------------------------------- constitutional AI: cai revise, cai label


@dataclass(frozen=True)
class CaiReviseConfig:
    """`llmlab cai revise`: SL-CAI, a model's answers critiqued and revised under sampled principles."""

    model: str = ""  # the model that answers, critiques and revises: an llmlab or local HF model folder
    input: tuple[str, ...] = ()  # {"prompt": ...} rows; empty: task-world train prompts
    n: int = 200  # task-world train prompts to draw when no input is given
    seed: int = 0  # prompts, principles and sampling
    tasks: TaskConfig = field(default_factory=TaskConfig)  # the task world's families and difficulty (no input)
    constitution: str = "llmlab:constitution.yaml"  # a principles YAML file; the default is llmlab's own
    rounds: int = 1  # critique -> revision rounds per answer
    temperature: float = 0.7  # 0 is greedy
    top_p: float = 1.0
    max_new_tokens: int = 48
    batch_size: int = 32  # prompts answered together; also the unit of resumable progress
    examples: int = 6  # before/after examples in report.md
    strict: bool = True  # false: skip bad input rows (listed in log.txt) instead of stopping at the first
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self) -> None:
        require(bool(self.model), "model is required: --model DIR (the model to critique and revise with)")
        check(self.n >= 1, f"n must be at least 1, got {self.n}")
        check(self.rounds >= 1, f"rounds must be at least 1, got {self.rounds}")
        check(self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}")
        check(0.0 < self.top_p <= 1.0, f"top_p must be in (0, 1], got {self.top_p}")
        check(self.max_new_tokens >= 1 and self.batch_size >= 1, "max_new_tokens and batch_size must be at least 1")
        check(self.examples >= 0, f"examples must be >= 0, got {self.examples}")


@dataclass(frozen=True)
class CaiLabelConfig:
    """`llmlab cai label`: RL-CAI / RLAIF, pairs of answers labelled by a feedback model under sampled principles."""

    model: str = ""  # the policy whose answers are paired (unused with input pairs; the judge by default)
    judge: str = ""  # the feedback model folder; empty: model
    input: tuple[str, ...] = ()  # {prompt, chosen, rejected} rows to relabel (their order is kept as a and b)
    prompts: tuple[str, ...] = ()  # {"prompt"} rows to answer twice; empty and no input: task-world train prompts
    n: int = 200  # task-world train prompts to draw when neither input nor prompts is given
    seed: int = 0
    tasks: TaskConfig = field(default_factory=TaskConfig)
    constitution: str = "llmlab:constitution.yaml"
    rubric: str = ""  # one comparison question for every pair instead of the principles' (empty: principles)
    temperature: float = 1.0  # sampling the two answers
    top_p: float = 1.0
    max_new_tokens: int = 48
    batch_size: int = 32
    rationale_tokens: int = 0  # > 0: the judge also writes a greedy rationale this long (slower)
    min_confidence: float = 0.5  # keep a pair when P(chosen better) > this (0.5: every non-tie)
    examples: int = 6
    strict: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self) -> None:
        require(bool(self.model or self.judge), "model is required: --model DIR (and/or --judge DIR)")
        require(bool(self.model) or bool(self.input), "without input pairs, model=DIR is needed to sample answers")
        check(not (self.input and self.prompts), "give input (pairs) or prompts (to answer), not both")
        check(self.n >= 1, f"n must be at least 1, got {self.n}")
        check(self.temperature > 0, f"temperature must be positive (two different answers), got {self.temperature}")
        check(0.0 < self.top_p <= 1.0, f"top_p must be in (0, 1], got {self.top_p}")
        check(self.max_new_tokens >= 1 and self.batch_size >= 1, "max_new_tokens and batch_size must be at least 1")
        check(self.rationale_tokens >= 0, f"rationale_tokens must be >= 0, got {self.rationale_tokens}")
        check(0.5 <= self.min_confidence < 1.0, f"min_confidence must be in [0.5, 1), got {self.min_confidence}")
        check(self.examples >= 0, f"examples must be >= 0, got {self.examples}")


@dataclass(frozen=True)
class CaiJudgeDataConfig:
    """`llmlab cai judge-data`: SFT chats that teach a feedback model the LLM judge's format from labelled pairs."""

    input: tuple[str, ...] = ()  # {prompt, chosen, rejected} rows; empty: task-world train-split pairs
    n: int = 2000  # task-world pairs to draw when no input is given
    seed: int = 0
    tasks: TaskConfig = field(default_factory=TaskConfig)
    constitution: str = "llmlab:constitution.yaml"  # each chat asks a drawn principle's comparison question
    rubric: str = ""  # one question for every chat instead (empty: the principles')
    strict: bool = True

    def __post_init__(self) -> None:
        check(self.n >= 1, f"n must be at least 1, got {self.n}")


# ---------------------------------------------------------------------- online RL: ppo, grpo, rloo


@dataclass(frozen=True)
class RolloutConfig:
    """How responses are sampled each step (llmlab's KV-cache Engine, or HF generate)."""

    samples: int = 4  # responses per prompt (GRPO / RLOO's group size G; PPO may use 1)
    max_new_tokens: int = 32
    temperature: float = 1.0  # the log-probs trained on are those of the same tempered distribution
    top_p: float = 1.0
    batch_size: int = 64  # sequences generated together

    def __post_init__(self) -> None:
        check(self.samples >= 1, f"rollout.samples must be at least 1, got {self.samples}")
        check(self.max_new_tokens >= 1 and self.batch_size >= 1, "rollout.max_new_tokens and batch_size must be >= 1")
        check(self.temperature > 0, f"rollout.temperature must be positive (sampling), got {self.temperature}")
        check(0.0 < self.top_p <= 1.0, f"rollout.top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class RewardConfig:
    """The training reward: a weighted sum of terms (weight 0 leaves a term out).

        gold    the task world's gold score of the response, in [0, 1] (a verifiable reward)
        rm      a reward model's score: `llmlab rm train` output or an HF sequence-classification folder
        format  1 when the response is non-empty and closed its turn (did not run out of tokens)
        length  the response's length in tokens (a negative weight is a length penalty)
    """

    gold: float = 1.0
    rm: float = 0.0
    reward_model: str = ""
    format: float = 0.0
    length: float = 0.0

    def __post_init__(self) -> None:
        check(any((self.gold, self.rm, self.format, self.length)), "reward: every weight is 0; give one a weight")
        check(not self.rm or bool(self.reward_model), "reward.rm needs reward.reward_model=DIR")


@dataclass(frozen=True)
class PromptDataConfig:
    """The prompts: task-world train-split prompts drawn with `tasks` (default), or {"prompt"} rows."""

    input: tuple[str, ...] = ()  # JSONL / JSON / parquet / HF dataset folders of {"prompt": ...}; empty: task world
    n: int = 2000  # task-world prompts to draw when no input is given
    seed: int = 0
    strict: bool = True
    eval_fraction: float = 0.05  # with input: share of rows held out (task world: its eval split instead)
    tasks: TaskConfig = field(default_factory=TaskConfig)  # task families and difficulty (train and eval alike)

    def __post_init__(self) -> None:
        check(self.n >= 1, f"data.n must be at least 1, got {self.n}")
        check(0.0 <= self.eval_fraction < 0.5, f"data.eval_fraction must be in [0, 0.5), got {self.eval_fraction}")


@dataclass(frozen=True)
class OnlineEvalConfig:
    """Held-out evaluation at train.eval_every and at the start and end: greedy accuracy, and pass@1 /
    pass@k from k sampled answers per prompt (Chen et al.'s unbiased estimator)."""

    n_prompts: int = 100
    k: int = 4
    temperature: float = 1.0

    def __post_init__(self) -> None:
        check(self.n_prompts >= 0 and self.k >= 1, "eval.n_prompts must be >= 0 and eval.k >= 1")
        check(self.temperature > 0, f"eval.temperature must be positive, got {self.temperature}")


@dataclass(frozen=True)
class HackingWatchConfig:
    """The divergence detector (align/overopt.py): warns when, over the last `window` steps, the proxy
    reward rose by more than min_rise while the gold score fell by more than min_fall."""

    window: int = 20
    min_rise: float = 0.05
    min_fall: float = 0.02
    stop: bool = False  # end the run when it fires (the early-stopping mitigation)

    def __post_init__(self) -> None:
        check(self.window >= 3, f"hacking.window must be at least 3, got {self.window}")
        check(self.min_rise >= 0 and self.min_fall >= 0, "hacking.min_rise and min_fall must be >= 0")


def _online_train() -> TrainConfig:
    # micro-batches of one prompt's answers: no padding across prompts (raise it on a GPU for throughput)
    return TrainConfig(max_steps=100, batch_size=16, micro_batch_size=1, lr=1e-5, warmup_steps=0, weight_decay=0.0,
                       min_lr_ratio=1.0, eval_every=25, log_every=1, checkpoint_every=50)


@dataclass(frozen=True)
class OnlineConfig:
    """`llmlab ppo`, `llmlab grpo`, `llmlab rloo`: online RL of a policy against a reward.

    train.batch_size counts prompts per step (each with rollout.samples responses); train.micro_batch_size
    prompts per forward (1 by default: a micro-batch is one prompt's answers, so rows pad only to the longest
    answer; micro-batches of several prompts group prompts of similar length). Each step samples, scores,
    then makes epochs x minibatches optimiser updates."""

    algo: Literal["ppo", "grpo", "rloo"] = "grpo"
    model: str = ""  # the policy to start from (an SFT run): an llmlab or a local HF causal-LM folder
    reference_model: str = ""  # empty: the starting policy
    kl_coef: float = 0.04  # beta: weight of the KL to the reference
    kl_estimator: Literal["k1", "k2", "k3"] | None = None  # unset: k3 in the loss, k1 in the reward
    kl_in: Literal["loss", "reward"] | None = None  # unset: loss for grpo, reward for ppo and rloo
    target_kl: float = 0.0  # > 0: adaptive kl_coef steering the sequence KL to this (Ziegler et al. 2019)
    kl_horizon: int = 10_000
    clip: float = 0.2  # epsilon of the clipped ratio (low side)
    clip_high: float | None = None  # upper epsilon; > clip is DAPO's clip-higher; unset: clip
    loss_norm: Literal["sequence", "token", "constant"] = "sequence"  # GRPO / DAPO / Dr. GRPO (rl.aggregate)
    scale_rewards: Literal["group", "batch", "none"] = "group"  # GRPO's advantage scale; none: Dr. GRPO
    normalize_advantages: bool = False  # rloo: whiten the advantages over the batch
    epochs: int = 1  # passes over each rollout
    minibatches: int = 1  # optimiser updates per pass
    stop_kl: float = 0.0  # > 0: end a step's updates once the approximate KL to the rollout policy passes it
    entropy_coef: float = 0.0  # entropy bonus weight
    value_model: Literal["shared", "separate"] = "separate"  # ppo: a head on the policy's trunk, or a critic
    critic_model: str = ""  # ppo, separate: the critic's start (a reward model folder, InstructGPT); empty: the policy
    vf_coef: float = 0.1
    value_clip: float = 0.2
    gamma: float = 1.0
    lam: float = 0.95
    whiten: bool = True  # ppo: normalise the advantages over the batch's tokens
    sample_every: int = 10  # save a few generations to samples.jsonl every N steps (0: never)
    gradient_checkpointing: bool = False
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    data: PromptDataConfig = field(default_factory=PromptDataConfig)
    eval: OnlineEvalConfig = field(default_factory=OnlineEvalConfig)
    hacking: HackingWatchConfig = field(default_factory=HackingWatchConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=_online_train)
    resume: str = ""

    def __post_init__(self) -> None:
        require(bool(self.model) or bool(self.resume), "model is required: --model DIR (an llmlab or HF model folder)")
        check(self.kl_coef >= 0, f"kl_coef must be >= 0, got {self.kl_coef}")
        if self.kl_in is None:  # resolved here, so the saved config shows what was trained with
            object.__setattr__(self, "kl_in", "loss" if self.algo == "grpo" else "reward")
        if self.kl_estimator is None:
            object.__setattr__(self, "kl_estimator", "k3" if self.kl_in == "loss" else "k1")
        check(self.algo != "ppo" or self.kl_in == "reward", "ppo charges the KL in the reward (kl_in=reward)")
        check(self.algo == "ppo" or self.rollout.samples >= 2,
              f"{self.algo} compares each prompt's responses: rollout.samples must be at least 2")
        check(self.target_kl >= 0 and self.kl_horizon >= 1, "target_kl must be >= 0 and kl_horizon >= 1")
        check(0 < self.clip < 1, f"clip must be in (0, 1), got {self.clip}")
        check(self.clip_high is None or self.clip_high > 0, f"clip_high must be positive, got {self.clip_high}")
        check(self.epochs >= 1 and self.minibatches >= 1, "epochs and minibatches must be at least 1")
        check(self.train.batch_size % self.minibatches == 0,
              f"minibatches ({self.minibatches}) must divide train.batch_size ({self.train.batch_size} prompts)")
        check(self.stop_kl >= 0 and self.entropy_coef >= 0 and self.vf_coef >= 0, "stop_kl, entropy_coef and "
              "vf_coef must be >= 0")
        check(0 <= self.gamma <= 1 and 0 <= self.lam <= 1, "gamma and lam must be in [0, 1]")
        check(self.sample_every >= 0, f"sample_every must be >= 0, got {self.sample_every}")


@dataclass(frozen=True)
class GRPOConfig(OnlineConfig):
    """`llmlab grpo`: group-relative policy optimisation (Shao et al. 2024), no critic, k3 KL in the loss."""

    algo: Literal["grpo"] = "grpo"


@dataclass(frozen=True)
class RLOOConfig(OnlineConfig):
    """`llmlab rloo`: REINFORCE leave-one-out (Ahmadian et al. 2024), KL in the reward (k1), as TRL's."""

    algo: Literal["rloo"] = "rloo"
    kl_coef: float = 0.05


def _ppo_rollout() -> RolloutConfig:
    return RolloutConfig(samples=2)


@dataclass(frozen=True)
class PPOConfig(OnlineConfig):
    """`llmlab ppo`: RLHF with PPO (Ziegler et al. 2019; Ouyang et al. 2022): a critic, per-token KL-shaped
    rewards, GAE, several minibatch epochs per rollout."""

    algo: Literal["ppo"] = "ppo"
    kl_coef: float = 0.05
    loss_norm: Literal["sequence", "token", "constant"] = "token"
    epochs: int = 2
    minibatches: int = 2
    rollout: RolloutConfig = field(default_factory=_ppo_rollout)


def _easy_tasks() -> TaskConfig:
    return TaskConfig(families=("compare", "arithmetic"), arith_ops=("+", "-"), arith_max_digits=1, max_number=99)


@dataclass(frozen=True)
class HackingConfig:
    """`llmlab hacking`: the reward-hacking lab (align/hacking.py). Every run is an ordinary run folder
    under the lab's folder; the defaults fit a small model on a CPU in minutes."""

    model: str = ""  # the SFT policy every run starts from
    algo: Literal["grpo", "ppo"] = "grpo"  # the optimiser run against the proxy
    tasks: TaskConfig = field(default_factory=_easy_tasks)  # where the SFT model's pass@k > pass@1
    n_prefs: int = 2000  # length-biased preference pairs the proxy reward model is trained on
    length_bias: float = 1.0  # share of those pairs whose chosen response is the longer one
    rm_steps: int = 150
    steps: int = 120  # RL steps of each run
    batch_size: int = 16  # prompts per RL step
    samples: int = 4  # responses per prompt
    lr: float = 1e-4
    max_new_tokens: int = 48
    kl_coef: float = 0.0  # the unmitigated run (Gao et al. optimise without a KL penalty)
    mitigation_kl_coef: float = 1.0  # mitigation 1: a KL penalty (0.1 let the policy reach KL 40 here)
    gold_mix: float = 5.0  # mitigation 3: reward = proxy + gold_mix x gold (the proxy spans ~10 units)
    bon_n: tuple[int, ...] = (1, 2, 4, 8, 16)
    n_prompts: int = 100  # held-out prompts of every evaluation and of best-of-n
    frontier: bool = True  # also run DPO, PPO and GRPO on the gold signal for the reward-vs-KL frontier
    frontier_kl_coefs: tuple[float, ...] = (0.02, 0.2)
    frontier_dpo_betas: tuple[float, ...] = (0.1, 0.5)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    resume: str = ""  # a lab folder to finish: its finished runs are kept, the rest run

    def __post_init__(self) -> None:
        require(bool(self.model) or bool(self.resume), "model is required: --model DIR (the SFT policy)")
        check(self.n_prefs >= 20 and self.rm_steps >= 1 and self.steps >= 4, "need n_prefs >= 20, rm_steps >= 1, "
              "steps >= 4")
        check(0.0 <= self.length_bias <= 1.0, f"length_bias must be in [0, 1], got {self.length_bias}")
        check(self.samples >= 2 and self.batch_size >= 1, "samples must be >= 2 and batch_size >= 1")
        check(bool(self.bon_n) and all(n >= 1 for n in self.bon_n), "bon_n must list sizes >= 1")
        check(self.n_prompts >= 2, f"n_prompts must be at least 2, got {self.n_prompts}")
        check(self.kl_coef >= 0 and self.mitigation_kl_coef > self.kl_coef,
              "need 0 <= kl_coef < mitigation_kl_coef")
