"""Preference and chat data: loading with file:line reports, truncation by hand, collate layout, packing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llmlab.align.config import PairDataConfig
from llmlab.align.data import (
    ChatExample,
    PairExample,
    collate_chats,
    collate_pairs,
    encode_chats,
    encode_pairs,
    holdout_split,
    load_chat_rows,
    load_preference_rows,
    pack_chats,
    soft_labelled,
)
from llmlab.data.config import TaskConfig
from llmlab.errors import DataError, UserError


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


class CharTok:
    """A stand-in ChatTokenizer: one id per character, prompt = "P" + text, response = text + "$"."""

    pad_id = 0

    def render_prompt(self, prompt):
        text = prompt if isinstance(prompt, str) else "".join(m["content"] for m in prompt)
        return [ord(c) for c in "P" + text]

    def render_response(self, text):
        return [ord(c) for c in text + "$"]


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


# ---------------------------------------------------------------------- loading


def test_default_preference_rows_are_the_task_world() -> None:
    rows, skipped = load_preference_rows(PairDataConfig(n=5, seed=1))
    assert len(rows) == 5 and skipped == []
    assert rows == load_preference_rows(PairDataConfig(n=5, seed=1))[0]
    assert all(isinstance(r[k], str) and r[k] for r in rows for k in ("prompt", "chosen", "rejected"))


def test_default_preference_rows_follow_data_tasks() -> None:
    """data.tasks reaches the task-world pairs of every trainer that reads pairs (rm train, dpo, eval-prefs)."""
    from llmlab.data.tasks import parse_task

    rows, _ = load_preference_rows(PairDataConfig(n=12, tasks=TaskConfig(families=("compare", "count"))))
    assert len(rows) == 12 and {parse_task(r["prompt"]).family for r in rows} == {"compare", "count"}


def test_string_and_conversational_forms_agree(tmp_path: Path) -> None:
    strings = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "2+2?", "chosen": "4", "rejected": "5"}])
    chats = write_jsonl(tmp_path / "c.jsonl", [
        {"prompt": user("2+2?"), "chosen": assistant("4"), "rejected": assistant("5")},
        # TRL's implicit-prompt form: chosen repeats the prompt before the assistant turn
        {"prompt": user("2+2?"), "chosen": user("2+2?") + assistant("4"), "rejected": assistant("5")},
    ])
    (s,), _ = load_preference_rows(PairDataConfig(input=(str(strings),), strict=True))
    c1, c2 = load_preference_rows(PairDataConfig(input=(str(chats),), strict=True))[0]
    assert s == {"prompt": "2+2?", "chosen": "4", "rejected": "5"}
    assert c1 == c2 == {"prompt": user("2+2?"), "chosen": "4", "rejected": "5"}
    tok = CharTok()
    assert encode_pairs([s], tok, max_length=50, max_prompt_length=20) == \
        encode_pairs([c1], tok, max_length=50, max_prompt_length=20)


def test_bad_rows_are_reported_with_file_and_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "ok", "chosen": "a", "rejected": "b"},
        {"prompt": "  ", "chosen": "a", "rejected": "b"},
        {"prompt": "q", "chosen": "same", "rejected": "same"},
        {"prompt": "q", "chosen": "", "rejected": "b"},
        {"prompt": "q", "chosen": "a"},
        {"prompt": user("q"), "chosen": user("q"), "rejected": assistant("b")},
    ])
    rows, skipped = load_preference_rows(PairDataConfig(input=(str(path),), strict=False))
    assert len(rows) == 1
    assert skipped == [f"{path}:2: 'prompt' is empty",
                       f"{path}:3: 'chosen' and 'rejected' are the same",
                       f"{path}:4: 'chosen' is empty",
                       f"{path}:5: missing key 'rejected'",
                       f"{path}:6: 'chosen' has no assistant message"]
    with pytest.raises(DataError, match=rf"^{path}:2: 'prompt' is empty$"):
        load_preference_rows(PairDataConfig(input=(str(path),), strict=True))


def test_soft_labels_are_read_checked_and_carried(tmp_path: Path) -> None:
    """p_chosen, where present, rides from the row to PairExample to the batch (B,); absent it is 1."""
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b", "p_chosen": 0.75},
                                               {"prompt": "r", "chosen": "c", "rejected": "d"},
                                               {"prompt": "s", "chosen": "e", "rejected": "f", "p_chosen": 0}])
    rows, _ = load_preference_rows(PairDataConfig(input=(str(path),)))
    assert [r.get("p_chosen") for r in rows] == [0.75, None, 0] and soft_labelled(rows) == 2
    examples, _ = encode_pairs(rows, CharTok(), max_length=10, max_prompt_length=4)
    assert [e.p_chosen for e in examples] == [0.75, 1.0, 0.0]
    batch = collate_pairs(examples, pad_id=0)
    assert batch["p_chosen"].tolist() == [0.75, 1.0, 0.0] and batch["p_chosen"].dtype == torch.float32
    hard, _ = load_preference_rows(PairDataConfig(input=(str(path),), soft_labels=False))
    assert all("p_chosen" not in r for r in hard) and soft_labelled(hard) == 0


@pytest.mark.parametrize(("value", "why"), [
    (1.5, "got 1.5"), (-0.1, "got -0.1"), ("0.7", "got str"), (True, "got bool"), (None, "got None"),
    (float("nan"), "got nan"), (float("inf"), "got inf"), ([0.7], "got list")])
def test_a_bad_soft_label_names_file_and_line(tmp_path: Path, value, why: str) -> None:
    """A number in [0, 1] or an error naming file:line (strict); skipped and reported otherwise.
    data.soft_labels=false still checks it: a bad value is a bad row either way."""
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n"
                    + json.dumps({"prompt": "q", "chosen": "a", "rejected": "b", "p_chosen": value}) + "\n")
    message = f"{path}:2: 'p_chosen' must be a number in [0, 1], {why}"
    for soft in (True, False):
        with pytest.raises(DataError) as e:
            load_preference_rows(PairDataConfig(input=(str(path),), soft_labels=soft))
        assert str(e.value) == message
    rows, skipped = load_preference_rows(PairDataConfig(input=(str(path),), strict=False))
    assert len(rows) == 1 and skipped == [message]


def test_no_valid_row_is_an_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "a"}])
    with pytest.raises(DataError, match="no valid rows"):
        load_preference_rows(PairDataConfig(input=(str(path),), strict=False))


def test_hf_dataset_on_disk(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list([{"prompt": "q", "chosen": "a", "rejected": "b"},
                                {"prompt": "q", "chosen": "c", "rejected": "c"}]).save_to_disk(tmp_path / "ds")
    rows, skipped = load_preference_rows(PairDataConfig(input=(str(tmp_path / "ds"),), strict=False))
    assert [r["chosen"] for r in rows] == ["a"]
    assert skipped == [f"{tmp_path / 'ds'}[row 1]: 'chosen' and 'rejected' are the same"]


def test_chat_rows(tmp_path: Path) -> None:
    rows, _ = load_chat_rows(strict=True, n=3)
    assert len(rows) == 3 and rows[0]["messages"][-1]["role"] == "assistant"
    path = write_jsonl(tmp_path / "c.jsonl", [{"messages": user("hi") + assistant("yo")},
                                              {"messages": user("hi")},
                                              {"messages": user("hi") + assistant(" ")}])
    rows, skipped = load_chat_rows((str(path),), strict=False)
    assert len(rows) == 1
    assert skipped == [f"{path}:2: 'messages' has no assistant message",
                       f"{path}:3: 'messages' has no non-empty assistant message"]


def test_holdout_split_is_seeded_and_disjoint() -> None:
    rows = [{"i": i} for i in range(10)]
    train, held = holdout_split(rows, 0.2, seed=0)
    assert len(train) == 8 and len(held) == 2
    assert sorted(r["i"] for r in train + held) == list(range(10))
    assert holdout_split(rows, 0.2, seed=0) == (train, held)
    assert holdout_split(rows, 0.0, seed=0)[1] == []


# ---------------------------------------------------------------------- truncation and collate


def test_truncation_counts_by_hand() -> None:
    """CharTok: prompt "P" + text, response text + "$".

    row 1  prompt "abcdef" -> 7 ids > max_prompt_length 4: keep "def" end -> [d e f]... "Pabcdef"[-4:] = "cdef"
           chosen "xy$" (3) fits in 10 - 4 = 6; rejected "123456789$" (10) cut to 6: "123456"
    row 2  prompt "ab" -> "Pab" (3) fits; room 7; "q$", "r$" fit: nothing cut
    row 3  prompt "abcd" -> "Pabcd" (5) cut to "abcd"; "z$" fits
    """
    rows = [{"prompt": "abcdef", "chosen": "xy", "rejected": "123456789"},
            {"prompt": "ab", "chosen": "q", "rejected": "r"},
            {"prompt": "abcd", "chosen": "z", "rejected": "w"}]
    examples, counts = encode_pairs(rows, CharTok(), max_length=10, max_prompt_length=4)
    assert counts == {"rows": 3, "truncated_prompt": 2, "truncated_response": 1}
    text = lambda ids: "".join(map(chr, ids))  # noqa: E731
    first = examples[0]
    assert (text(first.prompt_ids), text(first.chosen_ids), text(first.rejected_ids)) == ("cdef", "xy$", "123456")
    assert first.truncated and not examples[1].truncated and examples[2].truncated
    assert text(examples[2].prompt_ids) == "abcd"
    assert all(len(e.prompt_ids) + max(len(e.chosen_ids), len(e.rejected_ids)) <= 10 for e in examples)
    with pytest.raises(UserError, match="max_prompt_length"):
        encode_pairs(rows, CharTok(), max_length=4, max_prompt_length=4)


def test_collate_pairs_layout() -> None:
    """B = 2: rows 0, 1 are chosen, rows 2, 3 rejected, each prompt + response then padding (9)."""
    examples = [PairExample([1, 2], [3], [4, 5]), PairExample([6], [7, 8, 10], [11])]
    batch = collate_pairs(examples, pad_id=9)
    assert batch["ids"].tolist() == [[1, 2, 3, 9], [6, 7, 8, 10], [1, 2, 4, 5], [6, 11, 9, 9]]
    assert batch["response_mask"].tolist() == [[0, 0, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1], [0, 1, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["ids"].dtype == torch.long and batch["response_mask"].dtype == torch.bool


# ---------------------------------------------------------------------- chats


def test_encode_chats_truncates_and_drops() -> None:
    class Tok(CharTok):
        def render_prompt(self, prompt):
            return [ord(c) for c in "P" + "".join(m["content"] for m in prompt)]

    rows = [{"messages": user("ab") + assistant("xyz")}, {"messages": user("abcdefgh") + assistant("x")}]
    examples, counts = encode_chats(rows, Tok(), max_length=7)  # "Pabcdefghx$" keeps no assistant token
    assert counts == {"rows": 2, "truncated": 1, "dropped": 1}
    assert "".join(map(chr, examples[0].ids)) == "Pabxyz$"
    assert examples[0].mask == [False, False, False, True, True, True, True]


def test_packing_never_trains_across_examples() -> None:
    a = ChatExample([1, 2, 3], [True, True, True])  # a mask that (wrongly) covers its first token
    b = ChatExample([4, 5, 6, 7], [False, True, True, False])
    c = ChatExample([8, 9], [False, True])
    packs = pack_chats([a, b, c], max_length=7)
    assert [p.ids for p in packs] == [[1, 2, 3, 4, 5, 6, 7], [8, 9]]
    assert packs[0].mask == [False, True, True, False, True, True, False]  # b's first token is no target
    batch = collate_chats(packs, pad_id=0)
    assert batch["loss_mask"].tolist() == [[0, 1, 1, 0, 1, 1, 0], [0, 1, 0, 0, 0, 0, 0]]
    assert batch["attention_mask"].sum().item() == 9
    # every masked target is predicted from a position of its own example
    starts = {0, 3}
    for t, m in enumerate(packs[0].mask):
        if m:
            assert t not in starts
    with pytest.raises(UserError, match="does not fit"):
        pack_chats([ChatExample(list(range(9)), [True] * 9)], max_length=7)
