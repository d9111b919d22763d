"""Multi-source feedback: labels of the same pairs from several judges and people, combined into one soft
preference per pair; how far the sources agree, with each other and with gold; where they disagree.

Label rows (JSONL), as `llmlab feedback label` and the human review page write them:

    {"prompt": str, "a": str, "b": str,          the pair, as shown or as given
     "label": "a" | "b" | "tie",                 the hard choice
     "p_a": float in [0, 1],                     optional: P(a is better); default 1 / 0 / 0.5 from the label
     "source": str, "rationale": str,            optional: who labelled it, and why
     "consistent": bool | null}                  optional: a judge's choice survived swapping a and b

A row whose label is none of a / b / tie ("skip") and that has no p_a labels nothing and is passed over.
A pair is its (prompt, a, b); a row with a and b swapped labels the same pair (its p_a is flipped). Within
one file the last row of a pair wins, so a relabelled pair counts once.

Combining, per pair, over the sources that labelled it:

    weighted   sum_s w_s p_s / sum_s w_s                        (weights default to 1)
    majority   the most common hard label; p = share of "a" votes, ties counting half
    bt         a Bradley–Terry fit over sources (below)

The Bradley–Terry fit over sources gives every response a latent quality q (shared by all the pairs it
is in) and every source a reliability r, and models a source's label as

    P_s(a beats b) = sigmoid(r_s (q_a - q_b))

r = 1 is a source on the common scale, r near 0 one whose labels are noise, r < 0 one that prefers the
worse answer. q and r are the maximum a posteriori estimate under Gaussian priors q ~ N(0, 1/prior_q),
r ~ N(1, 1/prior_r), the soft labels entering as fractional counts: the priors fix what the likelihood
leaves free (r and q trade scale; separable labels push q to infinity). The combined label is
sigmoid(q_a - q_b). This is the Bradley–Terry model with annotator-specific discrimination, as in the
item-response-theory models of crowd labelling (Whitehill et al. 2009, "Whose vote should count more").
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from llmlab.data.loaders import iter_jsonl
from llmlab.data.schemas import is_probability
from llmlab.errors import DataError
from llmlab.stats import bootstrap_interval, cohen_kappa, fleiss_kappa

LABELS = ("a", "b", "tie")
Pair = tuple[str, str, str]  # (prompt, a, b)


def hard(p_a: float) -> str:
    return "a" if p_a > 0.5 else "b" if p_a < 0.5 else "tie"


# ---------------------------------------------------------------------- reading


def label_row(row: Any, where: str) -> tuple[Pair, float] | None:
    """(pair, p_a) of one label row, None for a row that labels nothing ("skip"); a DataError naming
    `where` (file:line) for a malformed one."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: a label row must be a JSON object, got {type(row).__name__}")
    for key in ("prompt", "a", "b"):
        if not isinstance(row.get(key), str):
            raise DataError(f"{where}: {key!r} must be a string (label rows are {{prompt, a, b, label}})")
    p_a = row.get("p_a")
    if p_a is None:
        if row.get("label") not in LABELS:
            return None
        p_a = {"a": 1.0, "b": 0.0, "tie": 0.5}[row["label"]]
    if not is_probability(p_a):
        raise DataError(f"{where}: 'p_a' must be a number in [0, 1], got {p_a!r}")
    return (row["prompt"], row["a"], row["b"]), float(p_a)


def read_labels(path: str | Path) -> dict[Pair, float]:
    """A labels file as {pair: p_a}, in the file's own orientation; the last row of a pair wins."""
    out: dict[Pair, float] = {}
    for lineno, row in iter_jsonl(path):
        got = label_row(row, f"{path}:{lineno}")
        if got is not None:
            pair, p_a = got
            out.pop((pair[0], pair[2], pair[1]), None)  # the same pair, swapped: this later row replaces it
            out[pair] = p_a
    return out


@dataclass
class Table:
    """Every source's p_a for every pair (None: not labelled), pairs in the orientation first seen."""

    sources: list[str]
    pairs: list[Pair] = field(default_factory=list)
    p: dict[str, list[float | None]] = field(default_factory=dict)

    def labelled(self, i: int) -> dict[str, float]:
        return {s: v for s in self.sources if (v := self.p[s][i]) is not None}


def build_table(labels: Mapping[str, Mapping[Pair, float]]) -> Table:
    """One table of the sources' labels, aligning pairs given in either order."""
    table = Table(list(labels))
    index: dict[Pair, int] = {}
    for source, rows in labels.items():
        table.p[source] = [None] * len(table.pairs)
        for (prompt, a, b), p_a in rows.items():
            if (prompt, b, a) in index:
                i, p_a = index[(prompt, b, a)], 1.0 - p_a
            elif (prompt, a, b) in index:
                i = index[(prompt, a, b)]
            else:
                i = index[(prompt, a, b)] = len(table.pairs)
                table.pairs.append((prompt, a, b))
                for s in table.p:
                    table.p[s].append(None)
            table.p[source][i] = p_a
    return table


# ---------------------------------------------------------------------- combining


def weighted(table: Table, weights: Mapping[str, float] | None = None) -> list[float]:
    w = {s: (weights or {}).get(s, 1.0) for s in table.sources}
    out = []
    for i in range(len(table.pairs)):
        got = table.labelled(i)
        total = sum(w[s] for s in got)
        out.append(sum(w[s] * p for s, p in got.items()) / total if total > 0 else 0.5)
    return out


def majority(table: Table, weights: Mapping[str, float] | None = None) -> list[float]:
    """The majority's hard label; as a soft label, the share of "a" votes with ties counting half (so a
    2-1 vote is 2/3, and an even split is 0.5: no preference)."""
    out = []
    for i in range(len(table.pairs)):
        votes = Counter(hard(p) for p in table.labelled(i).values())
        n = sum(votes.values())
        out.append((votes["a"] + 0.5 * votes["tie"]) / n if n else 0.5)
    return out


@dataclass(frozen=True)
class BTFit:
    quality: dict[tuple[str, str], float]  # (prompt, response) -> q
    reliability: dict[str, float]  # source -> r
    p_a: list[float]  # per pair: sigmoid(q_a - q_b)


def bt_negative_log_posterior(q: Any, r: Any, items_a: Any, items_b: Any, src: Any, p: Any, *,
                              prior_q: float, prior_r: float) -> Any:
    """The objective of the fit (torch tensors): -sum [p log s(r d) + (1 - p) log s(-r d)] + priors,
    d = q[items_a] - q[items_b], r = r[src], one entry per (source, pair) label."""
    from llmlab.align.reward_model import bradley_terry_loss  # torch only for the bt method

    z = r[src] * (q[items_a] - q[items_b])
    nll = bradley_terry_loss(z, z.new_zeros(()), p_chosen=p).sum()  # soft Bradley-Terry of each label
    return nll + 0.5 * prior_q * (q * q).sum() + 0.5 * prior_r * ((r - 1) ** 2).sum()


def fit_bradley_terry(table: Table, *, prior_q: float = 1.0, prior_r: float = 1.0, steps: int = 200) -> BTFit:
    """The MAP fit of the module docstring, in float64 by L-BFGS (the objective is smooth; its Hessian
    is positive definite near the optimum thanks to the priors)."""
    import torch  # torch only for the bt method

    responses: dict[tuple[str, str], int] = {}
    rows: list[tuple[int, int, int, float]] = []
    for i, (prompt, a, b) in enumerate(table.pairs):
        ia = responses.setdefault((prompt, a), len(responses))
        ib = responses.setdefault((prompt, b), len(responses))
        for s_index, s in enumerate(table.sources):
            if (p := table.p[s][i]) is not None:
                rows.append((ia, ib, s_index, p))
    items_a, items_b, src = (torch.tensor([x[k] for x in rows], dtype=torch.long) for k in range(3))
    p = torch.tensor([x[3] for x in rows], dtype=torch.float64)
    q = torch.zeros(len(responses), dtype=torch.float64, requires_grad=True)
    r = torch.ones(len(table.sources), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([q, r], lr=1, max_iter=steps, tolerance_grad=1e-10, tolerance_change=1e-14,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = bt_negative_log_posterior(q, r, items_a, items_b, src, p, prior_q=prior_q, prior_r=prior_r)
        loss.backward()
        return loss

    if rows:
        opt.step(closure)
    qs, rs = q.detach().tolist(), r.detach().tolist()
    p_a = [1 / (1 + math.exp(-(qs[responses[(pr, a)]] - qs[responses[(pr, b)]]))) for pr, a, b in table.pairs]
    return BTFit({k: qs[v] for k, v in responses.items()}, dict(zip(table.sources, rs, strict=True)), p_a)


def bradley_terry(table: Table, weights: Mapping[str, float] | None = None) -> list[float]:
    return fit_bradley_terry(table).p_a


METHODS: dict[str, Callable[[Table, Mapping[str, float] | None], list[float]]] = {
    "weighted": weighted, "majority": majority, "bt": bradley_terry}


# ---------------------------------------------------------------------- agreement


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else x


def kappa_with_interval(x: Sequence[str], y: Sequence[str], *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Cohen's kappa of two label lists over the same pairs, its bootstrap interval over pairs, and the raw
    agreement rate (None where kappa is undefined: both always give one and the same label)."""
    if not x:
        return {"n": 0, "kappa": None, "interval": [None, None], "agreement": None}
    both = list(zip(x, y, strict=True))
    lo, hi = bootstrap_interval(both, n_boot=n_boot, seed=seed,
                                stat=lambda v: cohen_kappa([u for u, _ in v], [w for _, w in v]))
    return {"n": len(x), "kappa": _finite(cohen_kappa(x, y)), "interval": [_finite(lo), _finite(hi)],
            "agreement": sum(u == w for u, w in both) / len(both)}


def agreement(table: Table, combined: Sequence[float], gold: Sequence[float] | None = None, *,
              n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Cohen's kappa for each pair of sources and of each source (and the combined label) against gold,
    Fleiss' kappa over the pairs every source labelled; hard labels a / b / tie throughout."""
    labels = {s: [None if v is None else hard(v) for v in table.p[s]] for s in table.sources}

    def kappa(x: Sequence[str | None], y: Sequence[str | None]) -> dict[str, Any]:
        kept = [(u, w) for u, w in zip(x, y, strict=True) if u is not None and w is not None]
        return kappa_with_interval([u for u, _ in kept], [w for _, w in kept], n_boot=n_boot, seed=seed)

    report: dict[str, Any] = {
        "pairs": len(table.pairs),
        "labelled": {s: sum(v is not None for v in labels[s]) for s in table.sources},
        "cohen": {f"{s}~{t}": kappa(labels[s], labels[t]) for s, t in combinations(table.sources, 2)},
    }
    full = [i for i in range(len(table.pairs)) if all(labels[s][i] is not None for s in table.sources)]
    if len(table.sources) >= 2 and full:
        counts = [[sum(labels[s][i] == c for s in table.sources) for c in LABELS] for i in full]
        lo, hi = bootstrap_interval(counts, n_boot=n_boot, seed=seed, stat=fleiss_kappa)
        report["fleiss"] = {"n": len(full), "kappa": _finite(fleiss_kappa(counts)), "interval": [_finite(lo),
                                                                                                  _finite(hi)]}
    if gold is not None:
        g = [hard(v) for v in gold]
        report["gold"] = {s: kappa(labels[s], g) for s in table.sources}
        report["gold"]["combined"] = kappa([hard(v) for v in combined], g)
    return report


def disagreements(table: Table, combined: Sequence[float], gold: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """The pairs whose sources' hard labels differ, most contested first: by the share of sources not
    in the largest camp, then by the spread of their p_a. Rows in the pair format the review page loads."""
    out = []
    for i, (prompt, a, b) in enumerate(table.pairs):
        got = table.labelled(i)
        votes = Counter(hard(p) for p in got.values())
        if len(votes) < 2:
            continue
        contested = 1 - max(votes.values()) / len(got)
        row = {"prompt": prompt, "a": a, "b": b, "contested": round(contested, 6),
               "spread": round(max(got.values()) - min(got.values()), 6),
               "labels": {s: hard(p) for s, p in got.items()}, "p_a": got, "combined_p_a": combined[i]}
        if gold is not None:
            row["gold"] = hard(gold[i])
        out.append(row)
    return sorted(out, key=lambda r: (-r["contested"], -r["spread"]))


def preference_rows(table: Table, combined: Sequence[float]) -> list[dict[str, Any]]:
    """{"prompt", "chosen", "rejected", "p_chosen", "sources"} per pair with a preference; pairs at exactly
    0.5 teach nothing and are left out. p_chosen is the soft label: P(chosen is the better)."""
    rows = []
    for i, ((prompt, a, b), p) in enumerate(zip(table.pairs, combined, strict=True)):
        if p == 0.5:
            continue
        chosen, rejected = (a, b) if p > 0.5 else (b, a)
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "p_chosen": max(p, 1 - p),
                     "sources": len(table.labelled(i))})
    return rows
