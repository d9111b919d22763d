"""The label store of `llmlab review serve` (serve/review_log.py): reading pairs, the stored rows, and the
labels file across label, undo, restart, a torn last line, a failed write and a second server."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from llmlab.data.loaders import load_rows
from llmlab.errors import DataError, UserError
from llmlab.serve import review_log
from llmlab.serve.review_log import LabelLog, Pair, label_row, labels_path, load_pairs, shown_order

PAIRS = [Pair(f"prompt {i}", f"a{i}", f"b{i}") for i in range(5)]
WHEN = 1796515200.0  # 2026-12-06T00:00:00Z


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_both_pair_forms_are_read(tmp_path: Path) -> None:
    path = write(tmp_path / "pairs.jsonl", ['{"prompt": "p", "a": "x", "b": "y"}', "",
                                            '{"prompt": "q", "chosen": "good", "rejected": "bad", "meta": 1}'])
    assert load_pairs(path) == [Pair("p", "x", "y"), Pair("q", "good", "bad", given=True)]


@pytest.mark.parametrize(("line", "problem"), [
    ('{"prompt": "p", "a": "x"', "invalid JSON"),
    ('["p", "x", "y"]', "expected a JSON object, got list"),
    ('{"prompt": "p", "a": "x"}', "missing key 'b'"),
    ('{"prompt": "p", "chosen": "x"}', "missing key 'rejected'"),
    ('{"a": "x", "b": "y"}', "missing key 'prompt'"),
    ('{"prompt": "p", "a": 3, "b": "y"}', "'a' must be a string, got int"),
    ('{"prompt": " ", "a": "x", "b": "y"}', "'prompt' is empty"),
])
def test_a_malformed_line_names_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = write(tmp_path / "pairs.jsonl", ['{"prompt": "p", "a": "x", "b": "y"}', "", line])
    with pytest.raises(DataError) as e:
        load_pairs(path)
    assert str(e.value).startswith(f"{path}:3: ") and problem in str(e.value)


def test_an_empty_pairs_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no pairs"):
        load_pairs(write(tmp_path / "pairs.jsonl", [""]))


def test_the_shown_order_is_a_fair_coin_fixed_by_seed_and_pair() -> None:
    orders = [shown_order(0, i) for i in range(2000)]
    assert orders == [shown_order(0, i) for i in range(2000)]  # the same after a restart
    assert orders != [shown_order(1, i) for i in range(2000)]
    assert set(orders) == {"ab", "ba"}
    assert 900 <= orders.count("ab") <= 1100  # 2000 fair coins: within 4.5 standard deviations of 1000


def test_the_row_schema() -> None:
    pair = Pair("p", "x", "y")
    base = {"prompt": "p", "a": "x", "b": "y", "source": "human", "pair": 3, "shown": "ba",
            "time": "2026-12-06T00:00:00Z"}
    assert label_row(pair, 3, "a", shown="ba", when=WHEN) == {**base, "label": "a", "p_a": 1, "chosen": "x",
                                                              "rejected": "y"}
    assert label_row(pair, 3, "b", shown="ba", when=WHEN) == {**base, "label": "b", "p_a": 0, "chosen": "y",
                                                              "rejected": "x"}
    assert label_row(pair, 3, "tie", shown="ba", when=WHEN) == {**base, "label": "tie", "p_a": 0.5}
    assert label_row(pair, 3, "skip", shown="ba", when=WHEN) == {**base, "label": "skip", "p_a": None}
    with pytest.raises(ValueError, match="label must be one of"):
        label_row(pair, 3, "left", shown="ab", when=WHEN)


def test_labels_path() -> None:
    assert labels_path("out/prefs.jsonl") == Path("out/prefs.labels.jsonl")
    assert labels_path("human") == Path("human.labels.jsonl")


def test_label_undo_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "prefs.jsonl"
    log = LabelLog(out, PAIRS, seed=7)
    assert (log.current(), log.rows, out.exists()) == (0, [], False)  # nothing written before the first label
    for index, label in enumerate(["a", "tie", "skip", "b"]):
        log.add(index, label, when=WHEN)
    assert log.undo()["pair"] == 3
    assert log.current() == 3
    log.add(3, "a", when=WHEN)
    expected = [label_row(PAIRS[i], i, label, shown=shown_order(7, i), when=WHEN)
                for i, label in enumerate(["a", "tie", "skip", "a"])]
    assert jsonl(labels_path(out)) == expected == log.rows
    assert jsonl(out) == [expected[0], expected[3]]  # only the decided pairs are preferences
    log.close()

    again = LabelLog(out, PAIRS, seed=7)  # a restart: resumes at the first unlabelled pair
    assert again.current() == 4 and again.rows == expected
    again.undo()
    again.undo()  # back past the skip
    again.close()
    third = LabelLog(out, PAIRS, seed=7)
    assert third.current() == 2 and third.rows == expected[:2]
    assert jsonl(out) == [expected[0]]
    third.close()


def test_the_preferences_file_is_valid_preference_data(tmp_path: Path) -> None:
    out = tmp_path / "prefs.jsonl"
    log = LabelLog(out, PAIRS)
    for index, label in enumerate(["b", "a", "tie"]):
        log.add(index, label)
    log.close()
    rows = load_rows(out, "prefs").rows  # the schema `llmlab dpo` and `llmlab rm train` check
    assert [(r["chosen"], r["rejected"]) for r in rows] == [("b0", "a0"), ("a1", "b1")]


def test_only_the_current_pair_can_be_labelled_and_undo_needs_a_label(tmp_path: Path) -> None:
    log = LabelLog(tmp_path / "prefs.jsonl", PAIRS)
    with pytest.raises(UserError, match="nothing to undo"):
        log.undo()
    log.add(0, "a")
    with pytest.raises(UserError, match=r"pair 0 is not the current pair \(1\)"):
        log.add(0, "b")  # a double press
    with pytest.raises(UserError, match="pair 4 is not the current pair"):
        log.add(4, "b")
    assert len(log.rows) == 1 and len(jsonl(labels_path(tmp_path / "prefs.jsonl"))) == 1
    log.add(1, "b")
    log.add(2, "a")
    log.add(3, "a")
    log.add(4, "tie")
    assert log.current() is None
    log.close()


def test_a_torn_last_line_is_cut_and_the_preferences_rebuilt(tmp_path: Path) -> None:
    """A kill inside the write of a line (never confirmed), and one between the labels append and the
    preferences rewrite: the restart has the confirmed labels and a preferences file that matches them."""
    out = tmp_path / "prefs.jsonl"
    log = LabelLog(out, PAIRS)
    log.add(0, "a")
    log.add(1, "b")
    log.close()
    labels = labels_path(out)
    confirmed = labels.read_bytes()
    torn = json.dumps(label_row(PAIRS[2], 2, "a", shown="ab", when=WHEN))[:40]
    labels.write_bytes(confirmed + torn.encode())
    out.write_text(out.read_text().splitlines(keepends=True)[0])  # one behind
    log = LabelLog(out, PAIRS)
    assert log.current() == 2 and labels.read_bytes() == confirmed
    assert [r["pair"] for r in jsonl(out)] == [0, 1]
    log.add(2, "tie")  # the next line is whole, not glued to the torn one
    assert [r["pair"] for r in jsonl(labels)] == [0, 1, 2]
    log.close()


def test_a_failed_write_is_cut_back_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "prefs.jsonl"
    log = LabelLog(out, PAIRS)
    log.add(0, "a")
    before = labels_path(out).read_bytes()
    real_write = os.write

    def half_then_full(fd: int, data: bytes) -> int:
        if len(data) > 20:
            return real_write(fd, data[:20])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(review_log.os, "write", half_then_full)
    with pytest.raises(OSError, match="No space"):
        log.add(1, "b")
    monkeypatch.undo()
    assert labels_path(out).read_bytes() == before and log.current() == 1
    log.add(1, "b")
    assert [r["pair"] for r in jsonl(labels_path(out))] == [0, 1]
    log.close()


def test_labels_of_other_pairs_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "prefs.jsonl"
    log = LabelLog(out, PAIRS)
    log.add(0, "a")
    log.add(1, "a")
    log.close()
    other = [PAIRS[0], Pair("another prompt", "a1", "b1"), *PAIRS[2:]]
    with pytest.raises(DataError, match=r"prefs.labels.jsonl:2: pair 1 differs from the pairs file"):
        LabelLog(out, other)
    with pytest.raises(DataError, match=r":2: not a label row"):
        LabelLog(out, PAIRS[:1])  # pair 1 is out of range
    rows = labels_path(out).read_text().splitlines()
    write(labels_path(out), [rows[0], rows[1], rows[0]])
    with pytest.raises(DataError, match=":3: pair 0 is labelled twice"):
        LabelLog(out, PAIRS)


def test_a_file_not_written_by_a_review_is_never_overwritten(tmp_path: Path) -> None:
    out = write(tmp_path / "prefs.jsonl", ['{"prompt": "mine", "chosen": "x", "rejected": "y"}'])
    with pytest.raises(UserError, match="is not the output of a review"):
        LabelLog(out, PAIRS)
    assert jsonl(out) == [{"prompt": "mine", "chosen": "x", "rejected": "y"}]
    with pytest.raises(UserError, match="is not the output of a review"):
        LabelLog(out, PAIRS)


def test_a_second_server_on_the_same_output_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "prefs.jsonl"
    first = LabelLog(out, PAIRS)
    with pytest.raises(UserError, match="another review server is writing it"):
        LabelLog(out, PAIRS)
    first.close()
    LabelLog(out, PAIRS).close()  # free again once the first is closed
