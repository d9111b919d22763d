"""`llmlab feedback label` and `llmlab feedback combine` as a user runs them (in-process `main`): labels equal
the judge's own verdicts, a rerun labels only what is missing, a judge endpoint that fails mid-way loses no
label already written, the outputs of combine, and bad inputs as one line, exit 2, no file changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.test_endpoint_judge import prefers_correct, scripted_server
from llmlab.align.feedback.combine import agreement, build_table, read_labels, weighted
from llmlab.align.feedback.judges import build_judge
from llmlab.cli import main
from llmlab.data.answers import REFUSALS
from llmlab.data.schemas import check_prefs
from llmlab.data.tasks import sample_tasks


def task_pairs(n: int) -> list[dict[str, str]]:
    """Task-world pairs, {prompt, chosen, rejected}: the gold answer against a refusal or a wrong answer,
    every third the other way round."""
    rows = []
    for i, t in enumerate(sample_tasks(n, seed=5)):
        rejected = REFUSALS[0] if t.should_refuse is False and i % 2 else "I believe it is 12345."
        chosen = t.answer if t.answer != rejected else REFUSALS[1]
        if i % 3 == 0:  # some pairs the wrong way round, so that gold prefers b there
            chosen, rejected = rejected, chosen
        rows.append({"prompt": t.prompt, "chosen": chosen, "rejected": rejected})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_label_writes_the_judges_verdicts_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = task_pairs(12)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", rows[:8])
    out = tmp_path / "labels" / "safety.jsonl"
    assert main(["feedback", "label", "--pairs", str(pairs), "--judge", "safety", "--out", str(out),
                 "batch_size=3"]) == 0
    got = read_jsonl(out)
    want = build_judge("safety").compare([r["prompt"] for r in rows[:8]], [r["chosen"] for r in rows[:8]],
                                         [r["rejected"] for r in rows[:8]])
    assert [(g["prompt"], g["a"], g["b"]) for g in got] == [(r["prompt"], r["chosen"], r["rejected"]) for r in rows[:8]]
    assert [(g["p_a"], g["label"], g["rationale"]) for g in got] == [(v.p_a, v.label, v.rationale) for v in want]
    assert {g["source"] for g in got} == {"safety"} and all(g["consistent"] is None for g in got)
    assert "8 labels by safety (0 kept from before, 8 new)" in capsys.readouterr().out

    write_jsonl(pairs, rows)  # four more pairs, and the first one given swapped: it is already labelled
    write_jsonl(pairs, [{"prompt": rows[0]["prompt"], "a": rows[0]["rejected"], "b": rows[0]["chosen"]}, *rows[1:]])
    assert main(["feedback", "label", "--pairs", str(pairs), "--judge", "safety", "--out", str(out)]) == 0
    again = read_jsonl(out)
    assert again[:8] == got and len(again) == 12
    assert "12 labels by safety (8 kept from before, 4 new)" in capsys.readouterr().out


def test_a_judge_endpoint_failing_mid_way_keeps_the_labels_made(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": f"q{i}", "a": f"correct {i}", "b": f"meh {i}"}
                                                   for i in range(6)])
    out = tmp_path / "llm.jsonl"
    served = {"n": 0}

    def dies_after_two_batches(body: dict) -> str | int:
        served["n"] += 1
        return prefers_correct(body) if served["n"] <= 8 else 503  # batches of 2 pairs: 4 requests each

    with scripted_server(dies_after_two_batches) as (url, _):
        argv = ["feedback", "label", "--pairs", str(pairs), "--judge", f"endpoint={url},model=j,workers=1",
                "--out", str(out), "batch_size=2"]
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: judge endpoint {url} answered HTTP 503") and err.count("\n") == 1
    kept = read_jsonl(out)
    assert [r["prompt"] for r in kept] == ["q0", "q1", "q2", "q3"] and all(r["p_a"] == 1.0 for r in kept)
    with scripted_server(prefers_correct) as (url2, seen):  # back up (on another port): only the rest is asked
        argv[5] = f"endpoint={url2},model=j,workers=1"
        assert main(argv) == 0
    assert len(seen) == 4 and read_jsonl(out)[:4] == kept and len(read_jsonl(out)) == 6
    assert "position consistency 1.000; unparseable answers 0 of 4" in capsys.readouterr().out


def test_combine_writes_preferences_agreement_and_disagreements(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    pairs = write_jsonl(tmp_path / "pairs.jsonl", task_pairs(18))
    labels = {}
    for judge in ("gold", "safety"):
        labels[judge] = tmp_path / f"{judge}.jsonl"
        assert main(["feedback", "label", "--pairs", str(pairs), "--judge", judge, "--out", str(labels[judge])]) == 0
    human = [{"prompt": r["prompt"], "a": r["a"], "b": r["b"], "label": "b" if i % 4 == 0 else "a", "source": "ann"}
             for i, r in enumerate(read_jsonl(labels["gold"]))]
    human[1]["label"] = "skip"
    write_jsonl(tmp_path / "human.jsonl", human)
    out = tmp_path / "combined"
    spec = f"gold={labels['gold']},safety={labels['safety']},ann={tmp_path / 'human.jsonl'}"
    assert main(["feedback", "combine", "--labels", spec, "--gold", "--out", str(out), "weights=ann=2",
                 "n_boot=200"]) == 0
    table = build_table({n: read_labels(p) for n, p in
                         [("gold", labels["gold"]), ("safety", labels["safety"]), ("ann", tmp_path / "human.jsonl")]})
    combined = weighted(table, {"ann": 2.0})
    report = json.loads((out / "agreement.json").read_text())
    gold_p = [json.loads(line)["p_a"] for line in labels["gold"].read_text().splitlines()]
    want = agreement(table, combined, gold_p, n_boot=200)
    assert report["cohen"] == want["cohen"] and report["gold"] == want["gold"] and report["fleiss"] == want["fleiss"]
    assert report["labelled"] == {"gold": 18, "safety": 18, "ann": 17}
    prefs = read_jsonl(out / "prefs.jsonl")
    assert len(prefs) == sum(p != 0.5 for p in combined) and all(check_prefs(r) is None for r in prefs)
    dis = read_jsonl(out / "disagreements.jsonl")
    assert dis and all({"prompt", "a", "b", "labels", "gold"} <= set(r) for r in dis)
    assert [r["contested"] for r in dis] == sorted((r["contested"] for r in dis), reverse=True)
    assert "## Against gold" in (out / "agreement.md").read_text()
    assert f"{len(prefs)} preferences (weighted) from 18 pairs" in capsys.readouterr().out


GOOD_PAIRS = '{"prompt": "Calculate 3 - 63.", "chosen": "-60", "rejected": "60"}\n'
GOOD_LABELS = '{"prompt": "Calculate 3 - 63.", "a": "-60", "b": "60", "label": "a", "source": "gold"}\n'
FILES = {
    "pairs.jsonl": GOOD_PAIRS,
    "malformed.jsonl": GOOD_PAIRS + '{"prompt": "x", "chosen": \n',
    "shape.jsonl": GOOD_PAIRS + '{"prompt": "x", "response": "y"}\n',
    "labels.jsonl": GOOD_LABELS,
    "bad-labels.jsonl": GOOD_LABELS + '{"prompt": "x", "a": "y", "b": "z", "p_a": "high"}\n',
    "foreign.jsonl": '{"prompt": "Write a poem.", "a": "x", "b": "y", "label": "a"}\n',
    "afile": "",
}
LABEL = ["feedback", "label", "--quiet"]
COMBINE = ["feedback", "combine", "--quiet"]
CASES = {
    "label/missing-pairs": ([*LABEL, "--pairs", "nope.jsonl", "--judge", "gold", "--out", "o.jsonl"], "nope.jsonl"),
    "label/malformed-line": ([*LABEL, "--pairs", "malformed.jsonl", "--judge", "gold", "--out", "o.jsonl"],
                             "malformed.jsonl:2: invalid JSON"),
    "label/wrong-shape": ([*LABEL, "--pairs", "shape.jsonl", "--judge", "gold", "--out", "o.jsonl"],
                          "shape.jsonl:2: a pair row is {prompt, a, b} or {prompt, chosen, rejected}"),
    "label/unknown-judge": ([*LABEL, "--pairs", "pairs.jsonl", "--judge", "oracle", "--out", "o.jsonl"],
                            "unknown judge 'oracle'"),
    "label/out-of-another-judge": ([*LABEL, "--pairs", "pairs.jsonl", "--judge", "safety", "--out", "labels.jsonl"],
                                   "labels.jsonl:1: labels by 'gold', not by 'safety'"),
    "label/out-malformed": ([*LABEL, "--pairs", "pairs.jsonl", "--judge", "gold", "--out", "malformed.jsonl"],
                            "malformed.jsonl:1: 'a' must be a string"),
    "label/no-judge": ([*LABEL, "--pairs", "pairs.jsonl", "--out", "o.jsonl"], "judge is required"),
    "label/endpoint-down": ([*LABEL, "--pairs", "pairs.jsonl", "--judge", "endpoint=http://127.0.0.1:9/v1",
                             "--out", "o.jsonl"], "judge endpoint http://127.0.0.1:9/v1 is unreachable"),
    "combine/missing-labels": ([*COMBINE, "--labels", "a=nope.jsonl", "--out", "o"], "nope.jsonl"),
    "combine/bad-p_a": ([*COMBINE, "--labels", "bad-labels.jsonl", "--out", "o"],
                        "bad-labels.jsonl:2: 'p_a' must be a number in [0, 1], got 'high'"),
    "combine/duplicate-name": ([*COMBINE, "--labels", "x=labels.jsonl,x=labels.jsonl", "--out", "o"],
                               "a duplicate name"),
    "combine/weights-with-bt": ([*COMBINE, "--labels", "labels.jsonl", "--method", "bt", "--weights", "labels=2",
                                 "--out", "o"], "weights apply to method=weighted only"),
    "combine/unknown-weight": ([*COMBINE, "--labels", "labels.jsonl", "--weights", "bob=2", "--out", "o"],
                               "weights name ['bob']"),
    "combine/gold-on-foreign-prompts": ([*COMBINE, "--labels", "foreign.jsonl", "--gold", "--out", "o"],
                                        "the gold judge knows only task-world prompts"),
    "combine/out-is-a-file": ([*COMBINE, "--labels", "labels.jsonl", "--out", "afile"], "is a file, not a folder"),
    "combine/unknown-method": ([*COMBINE, "--labels", "labels.jsonl", "--method", "vote", "--out", "o"], "method"),
}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>" for p in folder.rglob("*")}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_inputs_are_one_line_and_change_nothing(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    argv, message = CASES[case]
    before = snapshot(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err
    assert snapshot(tmp_path) == before
