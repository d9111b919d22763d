"""Multi-source feedback: reading label rows (either order, relabels, skips, bad rows), the three ways of
combining by hand, the Bradley–Terry fit over sources against scipy on a float64 reference and on
synthetic labels whose truth is known, and agreement / disagreements against llmlab.stats directly."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from llmlab.align.feedback.combine import (
    METHODS,
    agreement,
    build_table,
    disagreements,
    fit_bradley_terry,
    majority,
    preference_rows,
    read_labels,
    weighted,
)
from llmlab.errors import DataError
from llmlab.stats import cohen_kappa, fleiss_kappa


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_label_rows_in_either_order_relabels_and_skips(tmp_path: Path) -> None:
    judge = write(tmp_path / "judge.jsonl", [
        {"prompt": "p1", "a": "x", "b": "y", "label": "a", "p_a": 0.8, "source": "rm"},
        {"prompt": "p2", "a": "u", "b": "v", "label": "tie"},
    ])
    human = write(tmp_path / "human.jsonl", [
        {"prompt": "p1", "a": "y", "b": "x", "label": "a"},  # swapped: prefers y, i.e. b of the judge's pair
        {"prompt": "p2", "a": "u", "b": "v", "label": "skip"},  # labels nothing
        {"prompt": "p3", "a": "m", "b": "n", "label": "a"},
        {"prompt": "p3", "a": "n", "b": "m", "label": "b"},  # relabelled, swapped: the last row wins
    ])
    table = build_table({"judge": read_labels(judge), "human": read_labels(human)})
    assert table.pairs == [("p1", "x", "y"), ("p2", "u", "v"), ("p3", "n", "m")]
    assert table.p == {"judge": [0.8, 0.5, None], "human": [0.0, None, 0.0]}
    assert weighted(table) == pytest.approx([0.4, 0.5, 0.0])
    assert weighted(table, {"judge": 3.0}) == pytest.approx([0.6, 0.5, 0.0])
    assert majority(table) == [0.5, 0.5, 0.0]  # one vote each way on p1: no preference
    rows = preference_rows(table, weighted(table))
    assert rows == [{"prompt": "p1", "chosen": "y", "rejected": "x", "p_chosen": pytest.approx(0.6), "sources": 2},
                    {"prompt": "p3", "chosen": "m", "rejected": "n", "p_chosen": 1.0, "sources": 1}]


@pytest.mark.parametrize(("line", "message"), [
    ('{"prompt": "p", "a": "x", "b": ', "bad.jsonl:2: invalid JSON"),
    ('["p", "x", "y"]', "bad.jsonl:2: a label row must be a JSON object, got list"),
    ('{"prompt": "p", "a": 3, "b": "y", "label": "a"}', "bad.jsonl:2: 'a' must be a string"),
    ('{"prompt": "p", "a": "x", "b": "y", "p_a": 1.5}', "bad.jsonl:2: 'p_a' must be a number in [0, 1], got 1.5"),
])
def test_a_malformed_label_row_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "p", "a": "x", "b": "y", "label": "a"}\n' + line + "\n")
    with pytest.raises(DataError) as e:
        read_labels(path)
    assert message in str(e.value)


def numpy_objective(theta: np.ndarray, n_q: int, rows: np.ndarray, prior_q: float,
                    prior_r: float) -> tuple[float, np.ndarray]:
    """The negative log-posterior and its gradient, written again in float64 NumPy:
    L = sum_rows p log(1 + e^-z) + (1 - p) log(1 + e^z) + prior_q/2 |q|^2 + prior_r/2 |r - 1|^2,
    z = r_s (q_a - q_b); dL/dz = sigmoid(z) - p, dz/dq_a = r_s = -dz/dq_b, dz/dr_s = q_a - q_b."""
    q, r = theta[:n_q], theta[n_q:]
    a, b, s, p = rows[:, 0].astype(int), rows[:, 1].astype(int), rows[:, 2].astype(int), rows[:, 3]
    d = q[a] - q[b]
    z = r[s] * d
    loss = np.sum(p * np.logaddexp(0.0, -z) + (1 - p) * np.logaddexp(0.0, z))
    g = 1 / (1 + np.exp(-z)) - p
    grad_q, grad_r = prior_q * q, prior_r * (r - 1)
    np.add.at(grad_q, a, g * r[s])
    np.add.at(grad_q, b, -g * r[s])
    np.add.at(grad_r, s, g * d)
    return loss + 0.5 * prior_q * q @ q + 0.5 * prior_r * (r - 1) @ (r - 1), np.concatenate([grad_q, grad_r])


def synthetic(n_prompts: int, reliabilities: dict[str, float], seed: int):
    """Three responses per prompt with true qualities q ~ N(0, 1.5^2); every source labels all three pairs
    of a prompt, hard labels drawn from sigmoid(r_s (q_a - q_b))."""
    rng = random.Random(seed)
    truth, labels = {}, {s: {} for s in reliabilities}
    for i in range(n_prompts):
        prompt = f"p{i}"
        q = {f"r{k}": rng.gauss(0, 1.5) for k in range(3)}
        truth.update({(prompt, k): v for k, v in q.items()})
        for a, b in (("r0", "r1"), ("r0", "r2"), ("r1", "r2")):
            for s, rel in reliabilities.items():
                p = 1 / (1 + math.exp(-rel * (q[a] - q[b])))
                labels[s][(prompt, a, b)] = 1.0 if rng.random() < p else 0.0
    return truth, labels


def test_bt_fit_matches_scipy_on_a_float64_reference() -> None:
    scipy_optimize = pytest.importorskip("scipy.optimize")
    _, labels = synthetic(8, {"good": 2.0, "noisy": 0.3, "contrary": -1.0}, seed=3)
    labels["soft"] = {pair: 0.7 for pair in list(labels["good"])[:10]}  # soft labels, on some pairs only
    table = build_table(labels)
    fit = fit_bradley_terry(table, prior_q=0.5, prior_r=2.0)
    keys = list(fit.quality)
    index = {k: i for i, k in enumerate(keys)}
    rows = np.array([(index[(pr, a)], index[(pr, b)], s, p) for i, (pr, a, b) in enumerate(table.pairs)
                     for s, name in enumerate(table.sources) if (p := table.p[name][i]) is not None])
    x0 = np.concatenate([np.zeros(len(keys)), np.ones(len(table.sources))])
    ref = scipy_optimize.minimize(numpy_objective, x0, args=(len(keys), rows, 0.5, 2.0), jac=True, method="BFGS",
                                  options={"gtol": 1e-8})
    assert np.abs(ref.jac).max() < 1e-6  # converged (BFGS may stop on "precision loss" right at the optimum)
    assert scipy_optimize.check_grad(lambda x: numpy_objective(x, len(keys), rows, 0.5, 2.0)[0],
                                     lambda x: numpy_objective(x, len(keys), rows, 0.5, 2.0)[1], ref.x + 0.1) < 1e-4
    np.testing.assert_allclose([fit.quality[k] for k in keys], ref.x[:len(keys)], atol=1e-4)
    np.testing.assert_allclose([fit.reliability[s] for s in table.sources], ref.x[len(keys):], atol=1e-4)
    ours = np.array([fit.quality[k] for k in keys] + [fit.reliability[s] for s in table.sources])
    loss, grad = numpy_objective(ours, len(keys), rows, 0.5, 2.0)
    assert loss <= ref.fun + 1e-8 and np.abs(grad).max() < 1e-6


def test_bt_fit_recovers_known_qualities_and_reliabilities() -> None:
    """A careful source, a sloppy one, a coin and a contrarian label 600 pairs. The fit ranks the sources'
    reliabilities in their true order (the coin near 0, the contrarian below it), its qualities track
    the truth, and its combined label beats the plain average, which the contrarian drags towards chance."""
    truth, labels = synthetic(200, {"careful": 3.0, "sloppy": 0.8, "coin": 0.0, "contrarian": -2.0}, seed=0)
    table = build_table(labels)
    fit = fit_bradley_terry(table)
    r = fit.reliability
    assert r["careful"] > r["sloppy"] > r["coin"] > r["contrarian"]
    assert abs(r["coin"]) < 0.3 and r["contrarian"] < -0.5
    # qualities are identified within a prompt only (its pairs fix differences): compare them centred per prompt
    keys = list(truth)

    def centred(q: dict) -> list[float]:
        return [q[(pr, k)] - sum(q[(pr, f"r{j}")] for j in range(3)) / 3 for pr, k in keys]

    corr = np.corrcoef(centred(truth), centred(fit.quality))[0, 1]
    assert corr > 0.8  # measured 0.866: three hard-labelled pairs per prompt bound what any fit recovers

    def accuracy(p_a: list[float]) -> float:
        right = [(p > 0.5) == (truth[(pr, a)] > truth[(pr, b)]) for p, (pr, a, b) in zip(p_a, table.pairs, strict=True)]
        return sum(right) / len(right)

    bt, avg = accuracy(fit.p_a), accuracy(weighted(table))
    assert bt > 0.85 and bt > avg + 0.1, (bt, avg)
    assert METHODS["bt"](table, None) == fit.p_a


def test_agreement_and_disagreements_against_llmlab_stats() -> None:
    hands = {  # five pairs, three sources; gold prefers a everywhere but the last
        "judge": {("p", f"a{i}", f"b{i}"): v for i, v in enumerate([1.0, 1.0, 0.0, 0.5, 0.0])},
        "rm": {("p", f"a{i}", f"b{i}"): v for i, v in enumerate([0.9, 0.2, 0.1, 0.8, 0.3])},
        "human": {("p", f"a{i}", f"b{i}"): v for i, v in enumerate([1.0, 1.0, 1.0, 0.0, 0.0])},
    }
    gold = [1.0, 1.0, 1.0, 1.0, 0.0]
    table = build_table(hands)
    combined = weighted(table)
    report = agreement(table, combined, gold, n_boot=200)
    judge, rm, human = ["a", "a", "b", "tie", "b"], ["a", "b", "b", "a", "b"], ["a", "a", "a", "b", "b"]
    assert report["cohen"]["judge~rm"]["kappa"] == pytest.approx(cohen_kappa(judge, rm))
    assert report["cohen"]["rm~human"]["agreement"] == pytest.approx(2 / 5)
    lo, hi = report["cohen"]["judge~human"]["interval"]
    assert lo <= cohen_kappa(judge, human) <= hi
    counts = [[sum(lab[i] == c for lab in (judge, rm, human)) for c in ("a", "b", "tie")] for i in range(5)]
    assert report["fleiss"]["kappa"] == pytest.approx(fleiss_kappa(counts)) and report["fleiss"]["n"] == 5
    assert report["gold"]["human"]["kappa"] == pytest.approx(cohen_kappa(human, ["a", "a", "a", "a", "b"]))
    assert set(report["gold"]) == {"judge", "rm", "human", "combined"}
    json.dumps(report, allow_nan=False)  # NaN kappas are null: the report is strict JSON

    rows = disagreements(table, combined, gold)
    # pair 3 (tie / a / b: 2/3 outside the largest camp) first, then pairs 2 and 1 (1/3 each), by spread
    assert [r["a"] for r in rows] == ["a3", "a2", "a1"]
    assert rows[0]["labels"] == {"judge": "tie", "rm": "a", "human": "b"} and rows[0]["gold"] == "a"
    assert [r["contested"] for r in rows] == pytest.approx([2 / 3, 1 / 3, 1 / 3])
    assert [r["spread"] for r in rows] == pytest.approx([0.8, 1.0, 0.8])
    assert {"prompt", "a", "b"} <= set(rows[0])
