"""Alignment data: preference pairs and chats, from rows to padded tensors.

    rows (JSONL / HF dataset on disk / the task world)
      -> load_preference_rows  {"prompt", "chosen", "rejected"[, "p_chosen"]}, checked; bad rows "file:line: why"
      -> encode_pairs          PairExample(prompt_ids, chosen_ids, rejected_ids, p_chosen), truncated to fit
      -> collate_pairs         ids (2B, T): the B chosen sequences, then the B rejected, right-padded;
                               p_chosen (B,)

      -> load_chat_rows / encode_chats / (pack_chats) / collate_chats   the same for SFT

Preference rows come in TRL's two forms: three strings, or conversational (`prompt` a message
list; `chosen`/`rejected` a list ending in one assistant message, optionally repeating the
prompt first). Both become `prompt` (string or message list) plus the two response strings, so
the tokenizer's chat template is applied in one place (`ChatTokenizer`).

A row may carry a soft label, "p_chosen" = P(chosen is the better), a number in [0, 1] (the AI
labellers, `cai label` and `feedback combine`, write it in [0.5, 1]); a row without one is a hard
label, p_chosen = 1. The losses read it from the batch (dpo.soft_label_loss, reward_model.
bradley_terry_loss); `data.soft_labels=false` drops it, training on the labels alone.

Truncation of a pair (the policy of TRL's DPO trainer, "keep_end" for the prompt):

    prompt   [p0 p1 p2 p3 p4 p5]  -> keep the last max_prompt_length tokens   [p3 p4 p5]
    chosen   [c0 c1 c2 c3 c4]     -> cut so prompt + response <= max_length   [c0 c1 c2]
    rejected [r0 r1]              -> (already fits)                           [r0 r1]

The end of a prompt holds the question and the assistant turn's opening, so it is the part
kept. Left out: KTO's unpaired format, images, and tool calls.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from llmlab.data.config import GenerateConfig
from llmlab.data.corpora import pref_rows, sft_rows
from llmlab.data.loaders import _located_rows  # subtle: the located reader, so our checks name file:line
from llmlab.data.schemas import SCHEMAS, normalise_chat, normalise_pair
from llmlab.errors import DataError, UserError

if TYPE_CHECKING:
    from llmlab.align.config import PairDataConfig
    from llmlab.align.models import ChatTokenizer

Message = dict[str, str]
Row = dict[str, Any]


# ---------------------------------------------------------------------- preference rows


def load_preference_rows(data: PairDataConfig) -> tuple[list[Row], list[str]]:
    """(rows {"prompt", "chosen", "rejected", ...}, skipped "where: why" messages).

    No data.input: data.n task-world preference pairs drawn with data.seed from data.tasks. Otherwise every row of every
    file, checked against the "prefs" schema (p_chosen, where present, a number in [0, 1]) and then for
    empty fields and chosen == rejected; strict=True raises the first problem as a DataError, strict=False
    skips and reports it. data.soft_labels=False removes p_chosen from the rows (it is still checked).
    """
    if not data.input:
        return list(pref_rows(GenerateConfig(kind="prefs", n=data.n, seed=data.seed, tasks=data.tasks))), []
    rows, skipped = _load(data.input, "prefs", normalise_pair, strict=data.strict)
    if not data.soft_labels:
        rows = [{k: v for k, v in row.items() if k != "p_chosen"} for row in rows]
    return rows, skipped


# ---------------------------------------------------------------------- chat rows


def load_chat_rows(paths: tuple[str, ...] = (), *, strict: bool, n: int = 2000,
                   seed: int = 0) -> tuple[list[Row], list[str]]:
    """(rows {"messages": [...], ...}, skipped messages); no paths: `n` task-world SFT chats."""
    if not paths:
        return list(sft_rows(GenerateConfig(kind="sft", n=n, seed=seed))), []
    return _load(paths, "chat", normalise_chat, strict=strict)


def _load(paths: Iterable[str], schema: str, normalise: Any, *, strict: bool) -> tuple[list[Row], list[str]]:
    validate = SCHEMAS[schema]
    rows: list[Row] = []
    skipped: list[str] = []
    for path in paths:
        for where, row in _located_rows(Path(path), schema, "train"):
            result = validate(row) or normalise(row)
            if isinstance(result, dict):
                rows.append(result)
            elif strict:
                raise DataError(f"{where}: {result}")
            else:
                skipped.append(f"{where}: {result}")
    if not rows:
        first = f"; first: {skipped[0]}" if skipped else ""
        raise DataError(f"{', '.join(paths)}: no valid rows ({len(skipped)} skipped{first})")
    return rows, skipped


def soft_labelled(rows: Iterable[Row]) -> int:
    """How many rows carry a soft label below 1 (a row without p_chosen is a hard label)."""
    return sum(float(row.get("p_chosen", 1.0)) < 1.0 for row in rows)


def holdout_split(rows: list[Row], fraction: float, *, seed: int) -> tuple[list[Row], list[Row]]:
    """(train, held-out): a seeded shuffle, then the last `fraction` of rows (at least one when
    fraction > 0 and there are two rows or more) is held out."""
    if not 0.0 <= fraction < 1.0:
        raise UserError(f"the held-out fraction must be in [0, 1), got {fraction}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(rows) - 1, max(1, round(fraction * len(rows)))) if fraction > 0 else 0
    cut = len(rows) - n_eval
    return [rows[i] for i in order[:cut]], [rows[i] for i in order[cut:]]


# ---------------------------------------------------------------------- pairs -> ids


@dataclass
class PairExample:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    truncated: bool = False
    p_chosen: float = 1.0  # the soft label P(chosen is the better); 1: a hard label


def encode_pairs(rows: Iterable[Row], tok: ChatTokenizer, *, max_length: int,
                 max_prompt_length: int) -> tuple[list[PairExample], dict[str, int]]:
    """Tokenize and truncate (see the module docstring); counts {"rows", "truncated_prompt",
    "truncated_response"} (a pair counts once however many of its parts were cut)."""
    if not 1 <= max_prompt_length < max_length:
        raise UserError(f"need 1 <= max_prompt_length ({max_prompt_length}) < max_length ({max_length})")
    examples: list[PairExample] = []
    counts = {"rows": 0, "truncated_prompt": 0, "truncated_response": 0}
    for row in rows:
        prompt = tok.render_prompt(row["prompt"])
        chosen, rejected = tok.render_response(row["chosen"]), tok.render_response(row["rejected"])
        cut_prompt = len(prompt) > max_prompt_length
        if cut_prompt:
            prompt = prompt[-max_prompt_length:]
        room = max_length - len(prompt)
        cut_response = max(len(chosen), len(rejected)) > room
        counts["rows"] += 1
        counts["truncated_prompt"] += cut_prompt
        counts["truncated_response"] += cut_response
        examples.append(PairExample(prompt, chosen[:room], rejected[:room], truncated=cut_prompt or cut_response,
                                    p_chosen=float(row.get("p_chosen", 1.0))))
    return examples, counts


def collate_pairs(examples: list[PairExample], pad_id: int) -> dict[str, torch.Tensor]:
    """One batch of 2B right-padded sequences, chosen first:

        row b        prompt_b + chosen_b     (b < B)
        row B + b    prompt_b + rejected_b
        ids, response_mask, attention_mask: (2B, T), T the longest of the 2B sequences
        p_chosen: (B,) float32, each pair's soft label (1 for a hard label)
    """
    sequences = [(e.prompt_ids, e.chosen_ids) for e in examples] + [(e.prompt_ids, e.rejected_ids)
                                                                    for e in examples]
    ids = [p + r for p, r in sequences]
    masks = [[False] * len(p) + [True] * len(r) for p, r in sequences]
    p_chosen = torch.tensor([e.p_chosen for e in examples], dtype=torch.float32)
    return _pad(ids, masks, pad_id, mask_name="response_mask") | {"p_chosen": p_chosen}


def _pad(ids: list[list[int]], masks: list[list[bool]], pad_id: int, *, mask_name: str) -> dict[str, torch.Tensor]:
    T = max(len(x) for x in ids)
    out_ids = torch.full((len(ids), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), T), dtype=torch.bool)
    attention = torch.zeros((len(ids), T), dtype=torch.bool)
    for i, (x, m) in enumerate(zip(ids, masks, strict=True)):
        out_ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[i, : len(m)] = torch.tensor(m, dtype=torch.bool)
        attention[i, : len(x)] = True
    return {"ids": out_ids, mask_name: mask, "attention_mask": attention}


# ---------------------------------------------------------------------- chats -> ids


@dataclass
class ChatExample:
    ids: list[int]
    mask: list[bool]  # True on the tokens the SFT loss trains on: assistant contents and their turn closers
    truncated: bool = False


def render_chat(tok: ChatTokenizer, messages: list[Message]) -> tuple[list[int], list[bool]]:
    """(ids, assistant mask) of a chat, built turn by turn from the same two pieces the preference
    data uses: each assistant turn is `render_prompt(history)` (mask False on what it adds to the
    ids so far) then `render_response(content)` (mask True). For llmlab's format this is
    `render_ids` without its final newline.

    A template that rewrites earlier turns once a later one exists (the rendered history is not a
    prefix) gets only its last assistant turn trained, which is always well defined.
    """
    ids: list[int] = []
    mask: list[bool] = []
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        history = tok.render_prompt(messages[:i])
        if history[: len(ids)] != ids:  # not prefix-stable: fall back to the last turn alone
            history = tok.render_prompt(messages[:last])
            response = tok.render_response(messages[last]["content"])
            return history + response, [False] * len(history) + [True] * len(response)
        response = tok.render_response(m["content"])
        mask += [False] * (len(history) - len(ids)) + [True] * len(response)
        ids = history + response
    return ids, mask


def encode_chats(rows: Iterable[Row], tok: ChatTokenizer, *,
                 max_length: int) -> tuple[list[ChatExample], dict[str, int]]:
    """Tokenize chats with their assistant masks; keep the first max_length tokens. Counts
    {"rows", "truncated", "dropped"}: a row with no assistant token left after the cut is dropped."""
    examples: list[ChatExample] = []
    counts = {"rows": 0, "truncated": 0, "dropped": 0}
    for row in rows:
        ids, mask = render_chat(tok, row["messages"])
        counts["rows"] += 1
        truncated = len(ids) > max_length
        ids, mask = ids[:max_length], mask[:max_length]
        counts["truncated"] += truncated
        if not any(mask[1:]):  # position 0 is never predicted
            counts["dropped"] += 1
            continue
        examples.append(ChatExample(ids, mask, truncated))
    return examples, counts


def pack_chats(examples: Iterable[ChatExample], max_length: int) -> list[ChatExample]:
    """Concatenate examples, in order, into sequences of at most max_length tokens (whole examples
    only; each must already fit). The first token of every example is unmasked, so no loss term
    predicts one example from another:

        [a0 a1 a2 | b0 b1 b2 b3]   mask [0 1 1 | 0 1 1 1]   (b0 is never a target)

    Attention still crosses examples inside a pack, as in GPT-style pretraining; the role
    markers that open each chat separate them for the model."""
    packs: list[ChatExample] = []
    ids: list[int] = []
    mask: list[bool] = []
    truncated = False
    for e in examples:
        if len(e.ids) > max_length:
            raise UserError(f"an example of {len(e.ids)} tokens does not fit a pack of {max_length}")
        if len(ids) + len(e.ids) > max_length:
            packs.append(ChatExample(ids, mask, truncated))
            ids, mask, truncated = [], [], False
        ids = ids + e.ids
        mask = [*mask, False, *e.mask[1:]]
        truncated = truncated or e.truncated
    if ids:
        packs.append(ChatExample(ids, mask, truncated))
    return packs


def collate_chats(examples: list[ChatExample], pad_id: int) -> dict[str, torch.Tensor]:
    """ids, loss_mask, attention_mask: (B, T), right-padded."""
    return _pad([e.ids for e in examples], [e.mask for e in examples], pad_id, mask_name="loss_mask")


def sample_indices(first: int, count: int, n: int, *, seed: int) -> list[int]:
    """The rows at global sample positions first .. first + count - 1 of a stream that reads the n
    rows epoch after epoch, each epoch in its own seeded order. A pure function of the positions,
    so a run resumed at step s reads exactly the batches it would have read (train/token_data.py
    does the same for token sequences)."""
    return [_epoch_order(n, seed, k // n)[k % n] for k in range(first, first + count)]


@functools.lru_cache(maxsize=4)
def _epoch_order(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(n))
    random.Random(f"llmlab-align:{seed}:{epoch}").shuffle(order)
    return tuple(order)


def batches(n: int, batch_size: int, *, seed: int, epoch: int) -> Iterator[list[int]]:
    """Indices of an epoch's batches: a shuffle that is a function of (seed, epoch), so a resumed run
    sees the same batches; the last partial batch is dropped unless it is the only one."""
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    size = min(batch_size, n)
    for start in range(0, n - size + 1, size):
        yield order[start: start + size]
