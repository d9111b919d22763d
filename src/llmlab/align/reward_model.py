"""Reward models: a causal-LM trunk and a scalar head read at the last real token, trained with the
Bradley-Terry loss on preference pairs (InstructGPT, Ouyang et al. 2022, https://arxiv.org/abs/2203.02155;
Llama 2's margin term, Touvron et al. 2023, https://arxiv.org/abs/2307.09288).

    ids     [p p p r r r <end> <pad> <pad>]     prompt + response, right-padded
    hidden  the trunk's final hidden states (B, T, d), after its final norm
    reward  score(hidden[b, last_b]),  last_b = attention_mask[b].sum() - 1   (B,)

The trunk is an llmlab Transformer or a transformers base model (`LlamaModel`, `GPT2Model`, ...),
so a reward model starts from any policy folder `load_policy` reads. Saved folders:

    llmlab trunk   DIR/            an llmlab model folder + score.safetensors + reward_model.yaml
                   DIR/hf/         the same weights as an HF `...ForSequenceClassification` (num_labels=1,
                                   pad_token_id set): transformers scores exactly as llmlab does
    HF trunk       DIR/            an HF `...ForSequenceClassification` folder + reward_model.yaml

Any HF `...ForSequenceClassification` folder with one label loads too (reward_model.yaml is optional there).

The training loop is in rm_train.py. Left out: value heads for PPO (a per-token head), reward
ensembles, and centring rewards (TRL's center_rewards_coefficient).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.align.dpo import expected_over_label
from llmlab.align.models import ChatTokenizer, hf_tokenizer_ids, merged_state_dict, sequence_lengths
from llmlab.config import read_yaml
from llmlab.errors import UserError
from llmlab.files import write_json_atomic, write_text_atomic
from llmlab.model.hf_io import export_hf, hf_model_type, to_hf_config, to_hf_state
from llmlab.model.io import load_model, save_weights
from llmlab.model.llama import Transformer
from llmlab.model.weights import (
    check_vocab_fits,
    require_safetensors,
    save_pretrained_atomic,
    save_safetensors,
)

if TYPE_CHECKING:
    from llmlab.align.models import ChatTokenizer

RM_FILE = "reward_model.yaml"
SCORE_FILE = "score.safetensors"


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, *, margin: float | torch.Tensor = 0.0,
                       p_chosen: torch.Tensor | None = None) -> torch.Tensor:
    """-log sigma(r_c - r_r - m), per pair (B,): the negative log-likelihood of the observed preference
    under Bradley-Terry, P(c > r) = sigma(r_c - r_r). A margin m asks for a gap of at least m
    (Llama 2 uses larger margins for pairs labelled "significantly better").

    With soft labels p = p_chosen (B,), P(chosen is the better), the loss is the cross-entropy against
    p, i.e. the expected loss over the label (the margin asked of whichever response the label says):

        -p log sigma(r_c - r_r - m) - (1 - p) log sigma(r_r - r_c - m)

    minimised, for m = 0, at r_c - r_r = log(p / (1 - p)); p = 1 is the hard loss exactly."""
    hard = -F.logsigmoid(r_chosen - r_rejected - margin)
    if p_chosen is None:
        return hard
    return expected_over_label(p_chosen, hard, -F.logsigmoid(r_rejected - r_chosen - margin))


def pairwise_accuracy(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> float:
    """The share of pairs the model ranks right (a tie counts as wrong)."""
    return float((r_chosen > r_rejected).float().mean())


class RewardModel(nn.Module):
    def __init__(self, trunk: nn.Module, score: nn.Linear | None = None) -> None:
        super().__init__()
        self.trunk = trunk
        d = trunk.cfg.d_model if _is_llmlab(trunk) else trunk.config.hidden_size
        self.score = score if score is not None else nn.Linear(d, 1, bias=False)
        if score is None:
            nn.init.normal_(self.score.weight, std=1.0 / (d + 1) ** 0.5)  # TRL / HF's reward-head init scale
            self.score.to(next(trunk.parameters()).device)

    def hidden_states(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The trunk's last hidden states (B, T, d), after its final norm."""
        if _is_llmlab(self.trunk):
            padded = not bool(attention_mask.all())
            out = self.trunk(ids, key_padding_mask=attention_mask.bool() if padded else None, return_hidden=True)
            return out.hidden_states[-1]
        return self.trunk(input_ids=ids, attention_mask=attention_mask).last_hidden_state

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Rewards (B,) of right-padded sequences, read at each row's last real token."""
        hidden = self.hidden_states(ids, attention_mask)  # (B, T, d)
        last = attention_mask.long().sum(dim=1) - 1  # (B,): right padding, so real tokens are 0..n-1
        pooled = hidden[torch.arange(ids.shape[0], device=ids.device), last]  # (B, d)
        return self.score(pooled.to(self.score.weight.dtype)).squeeze(-1)


def _is_llmlab(module: nn.Module) -> bool:

    return isinstance(module, Transformer)


def reward_model_from_policy(policy: nn.Module) -> RewardModel:
    """A reward model on a causal LM's trunk: llmlab's Transformer as it is (its head is unused),
    an HF causal LM's base model (`model.model`, `model.transformer`, ...)."""
    return RewardModel(policy if _is_llmlab(policy) else policy.base_model)


# ---------------------------------------------------------------------- scoring


@torch.no_grad()
def score_texts(rm: RewardModel, tok: ChatTokenizer, pairs: list[tuple[Any, str]], *, max_length: int = 0,
                batch_size: int = 16) -> list[float]:
    """Rewards of (prompt, response) pairs; the prompt is a string or a message list, rendered by
    the tokenizer's chat template. Over-long sequences (past max_length; 0: the trunk's context)
    keep the prompt's end and the response's start."""

    max_length, _ = sequence_lengths(rm, max_length)
    device = rm.score.weight.device
    rm.eval()
    out: list[float] = []
    for start in range(0, len(pairs), batch_size):
        seqs = []
        for prompt, response in pairs[start: start + batch_size]:
            p, r = tok.render_prompt(prompt), tok.render_response(response)
            p = p[-max(1, max_length - len(r)):] if len(p) + len(r) > max_length else p
            seqs.append((p + r)[:max_length])
        T = max(map(len, seqs))
        ids = torch.full((len(seqs), T), tok.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), T), dtype=torch.bool)
        for i, s in enumerate(seqs):
            ids[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), True
        out += rm(ids.to(device), mask.to(device)).float().tolist()
    return out


# ---------------------------------------------------------------------- save and load


def save_reward_model(rm: RewardModel, tok: ChatTokenizer, directory: str | Path) -> Path:
    """Write the folder described in the module docstring (LoRA merged into the trunk's weights)."""
    import yaml

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = merged_state_dict(rm.trunk)
    weight = rm.score.weight.detach().float().cpu().contiguous()
    if _is_llmlab(rm.trunk):
        save_weights(rm.trunk.cfg, state, directory, tok.inner)
        save_safetensors({"weight": weight}, directory / SCORE_FILE)
        _export_hf_sequence_classification(rm.trunk.cfg, state, weight, tok, directory / "hf")
        kind = "llmlab"
    else:
        seq = _hf_sequence_classifier(rm.trunk.config, tok.pad_id)
        seq.base_model.load_state_dict(state)
        seq.score.weight.data.copy_(weight)
        save_pretrained_atomic(seq, directory, safe_serialization=True)
        tok.save(directory)
        kind = "hf"
    write_text_atomic(directory / RM_FILE, yaml.safe_dump({"trunk": kind, "pad_id": tok.pad_id}))
    return directory


def _hf_sequence_classifier(config: Any, pad_id: int) -> nn.Module:
    import copy

    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(config)
    config.num_labels, config.pad_token_id = 1, pad_id
    config.architectures = None
    try:
        seq = AutoModelForSequenceClassification.from_config(config)
    except ValueError as e:
        raise UserError(f"transformers has no sequence-classification model for {config.model_type!r} "
                        f"({str(e).splitlines()[0]})") from None
    if not isinstance(getattr(seq, "score", None), nn.Linear):
        raise UserError(f"{type(seq).__name__} has no `score` head; llmlab's reward models need one")
    return seq


def _export_hf_sequence_classification(cfg: Any, state: dict[str, torch.Tensor], weight: torch.Tensor,
                                       tok: ChatTokenizer, directory: Path) -> None:
    """An HF `<Arch>ForSequenceClassification` folder of an llmlab trunk, written without transformers:
    the causal-LM export (model/hf_io.py) without lm_head, plus score.weight (1, d)."""
    with torch.device("meta"):
        shell = Transformer(cfg)
    shell.load_state_dict(state, assign=True)
    export_hf(shell, directory, tok.inner)
    hf_state = {k: v for k, v in to_hf_state(shell).items() if k != "lm_head.weight"}
    hf_state["score.weight"] = weight
    save_safetensors(hf_state, directory / "model.safetensors", metadata={"format": "pt"})
    arch = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2"}[hf_model_type(cfg)]
    eos = tok.eos_ids[-1] if tok.eos_ids else None
    config = to_hf_config(cfg, eos_id=eos) | {"architectures": [f"{arch}ForSequenceClassification"],
                                              "num_labels": 1, "pad_token_id": tok.pad_id,
                                              "id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}
    write_json_atomic(directory / "config.json", config)


def is_reward_model(directory: str | Path) -> bool:
    return (Path(directory) / RM_FILE).is_file()


def _is_hf_sequence_classifier(directory: Path) -> bool:
    """An HF folder whose config names a `...ForSequenceClassification` architecture with one label."""
    import json

    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    archs = config.get("architectures") or []
    return any(a.endswith("ForSequenceClassification") for a in archs) and config.get("num_labels", 1) == 1 \
        and len(config.get("id2label") or {"0": ""}) == 1


def load_reward_model(directory: str | Path, *, device: str | torch.device = "cpu",
                      dtype: torch.dtype | None = None) -> tuple[RewardModel, ChatTokenizer]:
    """(reward model in eval mode, tokenizer) from a folder `save_reward_model` wrote."""
    from safetensors.torch import load_file

    directory = Path(directory)
    if is_reward_model(directory):
        kind = read_yaml(directory / RM_FILE).get("trunk")
    elif _is_hf_sequence_classifier(directory):
        kind = "hf"
    else:
        raise UserError(f"{directory}: not a reward model folder (no {RM_FILE} and no HF ...ForSequenceClassification "
                        "config.json; train one with `llmlab rm train`)")
    if kind == "llmlab":

        trunk, tokenizer = load_model(directory, device=device, dtype=dtype)
        weight = load_file(str(directory / SCORE_FILE))["weight"]
        score = nn.Linear(weight.shape[1], 1, bias=False)
        score.weight.data.copy_(weight)
        rm = RewardModel(trunk, score.to(device=device, dtype=dtype or torch.float32))
        return rm.eval(), ChatTokenizer(tokenizer)
    if kind == "hf":
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        require_safetensors(directory)  # pickled weights are never loaded
        seq = AutoModelForSequenceClassification.from_pretrained(str(directory), dtype=dtype or torch.float32,
                                                                 use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        check_vocab_fits(hf_tokenizer_ids(tokenizer), seq.get_input_embeddings().num_embeddings, source=str(directory))
        rm = RewardModel(seq.base_model, seq.score).to(device)
        return rm.eval(), ChatTokenizer(tokenizer)
    raise UserError(f"{directory / RM_FILE}: trunk must be 'llmlab' or 'hf', got {kind!r}")
