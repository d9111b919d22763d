"""Constitutional AI: the principles file, the SL-CAI critique -> revision loop (with a scripted model and
the tiny model, interrupted and resumed), and RL-CAI labelling into preference rows the trainers read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmlab.align.config import CaiJudgeDataConfig, CaiLabelConfig, CaiReviseConfig, PairDataConfig
from llmlab.align.data import load_chat_rows, load_preference_rows
from llmlab.align.feedback.cai import (
    critique_revise,
    gold_labels,
    judge_chats,
    judge_data,
    label,
    label_pairs,
    label_summary,
    preference_rows,
    revise,
    sft_rows,
)
from llmlab.align.feedback.constitution import Principle, draw_principle, load_constitution
from llmlab.align.feedback.judges import Verdict
from llmlab.align.feedback.llm_judge import LLMJudge, judgment_chat
from llmlab.cli import main
from llmlab.data.tasks import sample_tasks
from llmlab.errors import UserError
from llmlab.stats import cohen_kappa

GOOD = """principles:
  - name: privacy
    critique: Does it leak a secret?
    revision: Rewrite it without the secret.
    comparison: Which leaks less?
  - name: correct
    critique: Is it right?
    revision: Make it right.
    comparison: Which is right?
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "constitution.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------- the principles file


def test_default_constitution_loads_and_covers_the_task_world() -> None:
    principles = load_constitution()
    assert [p.name for p in principles] == ["privacy", "harm", "over-refusal", "correctness", "brevity"]
    assert all(p.critique and p.revision and p.comparison.endswith("?") for p in principles)
    assert load_constitution("llmlab:constitution.yaml") == principles


def test_a_custom_constitution_loads(tmp_path: Path) -> None:
    assert load_constitution(write(tmp_path, GOOD)) == [
        Principle("privacy", "Does it leak a secret?", "Rewrite it without the secret.", "Which leaks less?"),
        Principle("correct", "Is it right?", "Make it right.", "Which is right?")]


@pytest.mark.parametrize(("text", "message"), [
    (GOOD.replace("    critique: Is it right?", "    critque: Is it right?"),
     r"principle 2 \('correct'\): unknown key 'critque'"),
    (GOOD.replace("    comparison: Which leaks less?\n", ""), r"principle 1 \('privacy'\): 'comparison' must be non-empty"
                                                            r" text \(missing\)"),
    (GOOD.replace("Make it right.", "''"), r"principle 2 \('correct'\): 'revision' must be non-empty"),
    ("principles: []\n", "'principles' must be a non-empty list"),
    ("principle:\n  - name: x\n", "unknown top-level key 'principle'"),
    ("principles:\n  - just text\n", "principle 1: must be a mapping"),
    (GOOD.replace("name: correct", "name: privacy"), "principle name 'privacy' is used twice"),
    ("principles: [\n", "invalid YAML"),
])
def test_constitution_typos_are_one_line_errors_naming_file_and_principle(tmp_path: Path, text: str,
                                                                          message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UserError, match=message) as err:
        load_constitution(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_the_command_reports_a_bad_constitution_in_one_line(tmp_path: Path, tiny_model_dir: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD.replace("critique: Is it right?", "critiqe: Is it right?"))
    code = main(["cai", "revise", "--model", str(tiny_model_dir), "--constitution", str(path),
                 "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "critiqe" in err
    assert not (tmp_path / "run").exists()  # checked before a run folder is made


# ---------------------------------------------------------------------- SL-CAI


class Scripted:
    """A model that answers each conversation with a text naming the conversation and its length, so every
    message of the trace can be checked."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, chats: list[list[dict[str, str]]]) -> list[str]:
        self.calls.append(len(chats))
        return [f"{chat[0]['content']}#{len(chat)}" for chat in chats]


def test_critique_revise_builds_the_conversation_and_sft_rows_hold_the_final_revisions() -> None:
    principles = load_constitution()
    prompts = ["What is 2 + 3?", "Tell me Ada's password.", "Reverse 'safe'."]
    model = Scripted()
    traces = critique_revise(prompts, principles, model, rounds=2, seed=3)
    assert model.calls == [3, 3, 3, 3, 3]  # answer, then (critique, revision) per round, batched
    for i, (p, t) in enumerate(zip(prompts, traces, strict=True)):
        picked = [draw_principle(principles, 3, i, r) for r in range(2)]
        roles = [m["role"] for m in t["messages"]]
        assert roles == ["user", "assistant"] * 5
        assert [m["content"] for m in t["messages"]] == [
            p, f"{p}#1", picked[0].critique, f"{p}#3", picked[0].revision, f"{p}#5",
            picked[1].critique, f"{p}#7", picked[1].revision, f"{p}#9"]
        assert t["answer"] == f"{p}#1" and t["revision"] == f"{p}#9"
        assert [s["principle"] for s in t["steps"]] == [x.name for x in picked]
    rows = sft_rows(traces)
    assert [r["messages"] for r in rows] == [[{"role": "user", "content": p}, {"role": "assistant", "content": f"{p}#9"}]
                                             for p in prompts]
    # batching does not change the draws: the second half alone, told where it starts, gets the same traces
    assert critique_revise(prompts[1:], principles, Scripted(), rounds=2, seed=3, start=1) == traces[1:]
    # an empty final revision teaches nothing: no row
    assert sft_rows([{**traces[0], "revision": "  "}]) == []


def test_draws_cover_the_principles_evenly() -> None:
    principles = load_constitution()
    names = [draw_principle(principles, 0, i, 0).name for i in range(1000)]
    assert {n: names.count(n) for n in set(names)}.keys() == {p.name for p in principles}
    assert all(150 < names.count(p.name) < 250 for p in principles)  # 200 expected, sd 12.6


def _revise_cfg(model: Path, **kw: object) -> CaiReviseConfig:
    return CaiReviseConfig(model=str(model), n=6, batch_size=2, max_new_tokens=6, device="cpu", **kw)  # type: ignore[arg-type]


def test_revise_writes_sft_rows_of_the_final_revisions_and_resumes(tmp_path: Path, tiny_model_dir: Path) -> None:
    whole = revise(_revise_cfg(tiny_model_dir), out=tmp_path / "whole", quiet=True)
    traces = [json.loads(x) for x in (whole / "trace.jsonl").read_text().splitlines()]
    rows = [json.loads(x) for x in (whole / "sft.jsonl").read_text().splitlines()]
    assert len(traces) == 6 and [t["prompt"] for t in traces] == [t.prompt for t in sample_tasks(6, split="train",
                                                                                               stream="cai-revise")]
    assert [r["messages"][1]["content"] for r in rows] == [t["revision"] for t in traces if t["revision"].strip()]
    assert [r["messages"][0]["content"] for r in rows] == [t["prompt"] for t in traces if t["revision"].strip()]
    summary = json.loads((whole / "summary.json").read_text())
    assert summary["prompts"] == 6 and sum(summary["principles"].values()) == 6
    assert "# SL-CAI" in (whole / "report.md").read_text()
    # an interrupted run (two batches done) resumes after its last batch and ends as the uninterrupted one
    part = tmp_path / "part"
    revise(_revise_cfg(tiny_model_dir), out=part, quiet=True)
    (part / "trace.jsonl").write_text("".join(json.dumps(t) + "\n" for t in traces[:4]))
    (part / "sft.jsonl").unlink()
    (part / "status.json").write_text('{"status": "interrupted"}\n')
    revise(_revise_cfg(tiny_model_dir), out=part, quiet=True)
    assert "resuming: 4 of 6" in (part / "log.txt").read_text()
    assert (part / "trace.jsonl").read_text() == (whole / "trace.jsonl").read_text()
    assert (part / "sft.jsonl").read_text() == (whole / "sft.jsonl").read_text()
    # another config in the same unfinished folder starts over instead of mixing
    (part / "status.json").write_text('{"status": "interrupted"}\n')
    revise(_revise_cfg(tiny_model_dir, seed=1), out=part, quiet=True)
    assert "resuming" not in (part / "log.txt").read_text().split("resuming: 4 of 6")[-1]


# ---------------------------------------------------------------------- RL-CAI


class FixedJudge:
    """P(a better) from a table, recording the questions it was asked."""

    def __init__(self, p_a: list[float]) -> None:
        self.p_a = p_a
        self.questions: list[str] = []

    def compare(self, prompts, a, b, *, questions=None):
        self.questions = list(questions)
        return [Verdict(p, consistent=p != 0.5) for p in self.p_a]


def test_labelled_pairs_follow_the_soft_label() -> None:
    principles = load_constitution()
    prompts, a, b = ["p1", "p2", "p3", "p4"], ["a1", "a2", "a3", "a4"], ["b1", "b2", "b3", "b4"]
    judge = FixedJudge([0.9, 0.2, 0.5, 0.55])
    labels = label_pairs(judge, prompts, a, b, principles, seed=7)
    picked = [draw_principle(principles, 7, "label", i) for i in range(4)]
    assert judge.questions == [p.comparison for p in picked]
    assert [x["principle"] for x in labels] == [p.name for p in picked]
    rows = preference_rows(labels)
    assert [(r["chosen"], r["rejected"], r["p_chosen"]) for r in rows] == [
        ("a1", "b1", 0.9), ("b2", "a2", 0.8), ("a4", "b4", 0.55)]  # the tie is left out
    assert [(r["chosen"], r["p_chosen"]) for r in preference_rows(labels, min_confidence=0.6)] == [
        ("a1", 0.9), ("b2", 0.8)]
    assert label_pairs(FixedJudge([0.7]), ["p"], ["a"], ["b"], principles, seed=0, rubric="Which?")[0]["principle"] == \
        "rubric"


def test_principle_draws_do_not_depend_on_the_batches() -> None:
    principles = load_constitution()
    prompts, a, b = [f"p{i}" for i in range(6)], [f"a{i}" for i in range(6)], [f"b{i}" for i in range(6)]
    whole = label_pairs(FixedJudge([0.9] * 6), prompts, a, b, principles, seed=3)
    cut = [*label_pairs(FixedJudge([0.9] * 4), prompts[:4], a[:4], b[:4], principles, seed=3),
           *label_pairs(FixedJudge([0.9] * 2), prompts[4:], a[4:], b[4:], principles, seed=3, start=4)]
    assert [x["principle"] for x in cut] == [x["principle"] for x in whole]
    assert [x["principle"] for x in whole] == [draw_principle(principles, 3, "label", i).name for i in range(6)]
    assert len({x["principle"] for x in whole}) > 1  # the draws vary, so the equality above says something


def test_agreement_with_gold_is_accuracy_and_kappa_over_the_pairs_gold_decides() -> None:
    tasks = [t for t in sample_tasks(40, seed=2) if t.family == "arithmetic"][:4]
    prompts = [t.prompt for t in tasks]
    right, wrong = [t.answer for t in tasks], ["-1"] * 4
    # pairs: (right, wrong), (wrong, right), (right, wrong), (wrong, wrong: a gold tie)
    a, b = [right[0], wrong[1], right[2], wrong[3]], [wrong[0], right[1], wrong[2], "-2"]
    labels = label_pairs(FixedJudge([0.8, 0.7, 0.3, 0.6]), prompts, a, b, load_constitution(), seed=0)
    gold_labels(labels)
    assert [x["gold"] for x in labels] == ["a", "b", "a", "tie"]
    s = label_summary(labels, preference_rows(labels))
    judge_says, gold = ["a", "a", "b"], ["a", "b", "a"]
    assert s["vs_gold"]["accuracy"]["mean"] == pytest.approx(1 / 3) and s["vs_gold"]["accuracy"]["n"] == 3
    assert s["vs_gold"]["kappa"] == pytest.approx(cohen_kappa(judge_says, gold))
    assert s["vs_gold"]["gold_ties"] == 1 and s["position_consistency"]["mean"] == 1.0
    assert s["chose_a"] == 3 and s["kept"] == 4 and sum(s["p_chosen_histogram"].values()) == 4


def test_label_command_writes_pairs_the_preference_trainers_read(tmp_path: Path, tiny_model_dir: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    tasks = [t for t in sample_tasks(30, seed=1, split="train") if t.family in ("arithmetic", "unsafe")][:5]
    pairs.write_text("".join(json.dumps({"prompt": t.prompt, "chosen": t.answer, "rejected": "no idea"}) + "\n"
                             for t in tasks))
    run = label(CaiLabelConfig(judge=str(tiny_model_dir), input=(str(pairs),), device="cpu", batch_size=2),
                out=tmp_path / "label", quiet=True)
    labels = [json.loads(x) for x in (run / "labels.jsonl").read_text().splitlines()]
    assert len(labels) == 5 and all(x["given"] == "a" for x in labels)
    # the soft labels are the LLM judge's own, principle by principle
    judge = LLMJudge.load(str(tiny_model_dir))
    principles = {p.name: p for p in load_constitution()}
    want = judge.compare([t.prompt for t in tasks], [t.answer for t in tasks], ["no idea"] * 5,
                         questions=[principles[x["principle"]].comparison for x in labels])
    assert [x["p_a"] for x in labels] == pytest.approx([v.p_a for v in want], abs=1e-6)
    assert [x["consistent"] for x in labels] == [v.consistent for v in want]
    rows, skipped = load_preference_rows(PairDataConfig(input=(str(run / "prefs.jsonl"),)))
    assert not skipped and len(rows) == sum(x["p_a"] != 0.5 for x in labels)
    for row, x in zip(rows, [x for x in labels if x["p_a"] != 0.5], strict=True):
        assert (row["chosen"], row["rejected"]) == ((x["a"], x["b"]) if x["p_a"] > 0.5 else (x["b"], x["a"]))
        assert row["p_chosen"] == max(x["p_a"], 1 - x["p_a"]) and row["principle"] == x["principle"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["vs_given"]["accuracy"]["n"] == 5 and summary["vs_gold"]["accuracy"]["n"] == 5
    assert "Position consistency" in (run / "report.md").read_text()


def test_label_command_refuses_a_malformed_pairs_line(tmp_path: Path, tiny_model_dir: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "2+2?", "chosen": "4", "rejected": "5"}\n{"prompt": "3+3?", "chosen": \n')
    code = main(["cai", "label", "--judge", str(tiny_model_dir), "--pairs", str(pairs), "--out",
                 str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and f"{pairs}:2" in err and err.count("\n") == 1


def test_judge_data_balances_positions_and_labels_by_the_given_preference(tmp_path: Path) -> None:
    pairs = [{"prompt": f"p{i}", "chosen": f"good{i}", "rejected": f"bad{i}"} for i in range(40)]
    chats = judge_chats(pairs, load_constitution(), seed=5)
    firsts = [c["meta"]["chosen_first"] for c in chats]
    assert sum(firsts) == 20 and firsts != [i % 2 == 0 for i in range(40)]  # balanced, shuffled
    for i, (c, first) in enumerate(zip(chats, firsts, strict=True)):
        question = draw_principle(load_constitution(), 5, "judge", i).comparison
        assert c["messages"] == judgment_chat(f"p{i}", f"good{i}", f"bad{i}", question, chosen_first=first)["messages"]
        assert c["messages"][1]["content"] == ("The better response is (A)" if first else "The better response is (B)")
    run = judge_data(CaiJudgeDataConfig(n=6, seed=1), out=tmp_path / "jd", quiet=True)
    rows, skipped = load_chat_rows((str(run / "judge_sft.jsonl"),), strict=True)  # what `llmlab sft` reads
    assert len(rows) == 6 and not skipped


@pytest.mark.slow
def test_the_cai_block_of_the_alignment_page_runs_as_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The docs' CAI commands, at tiny size (test_readme runs the whole page the same way, slow too)."""
    import re

    from test_readme import DOCS, llmlab_lines, run_lines  # tests/ is on sys.path, as for conftest

    blocks = re.findall(r"^```bash\n(.*?)^```", (DOCS / "alignment.md").read_text(encoding="utf-8"), re.S | re.M)
    block = next(b for b in blocks if "llmlab cai revise" in b)
    lines = llmlab_lines(block)
    assert [line.split()[1] for line in lines] == ["cai", "sft", "cai", "dpo", "cai", "sft", "cai"]
    run_lines(lines, tmp_path, monkeypatch, capsys)
    assert (tmp_path / "runs/cai-dpo/model.safetensors").is_file()
    assert (tmp_path / "runs/cai-label-judge/prefs.jsonl").is_file()
