"""The task world's datasets: schemas, determinism, the preference knobs, the pretraining corpus."""

import json
from collections import Counter

import pytest

from llmlab.data.answers import is_refusal
from llmlab.data.config import GenerateConfig, PrefsConfig, TaskConfig, WorldConfig
from llmlab.data.corpora import GENERATORS, pretrain_documents
from llmlab.data.schemas import SCHEMAS
from llmlab.data.tasks import parse_task
from llmlab.data.world import build_world, split_of

SCHEMA_OF = {"pretrain": "text", "sft": "chat", "prefs": "prefs", "eval": "eval", "multilingual": "text",
             "code-mixed": "text"}
ROWS_PER_N = {"multilingual": 7}  # one row per language of each parallel sentence


@pytest.mark.parametrize("kind", list(GENERATORS))
def test_rows_match_their_schema_and_are_deterministic(kind):
    cfg = GenerateConfig(kind=kind, n=60, seed=5)
    rows = list(GENERATORS[kind](cfg))
    assert len(rows) == 60 * ROWS_PER_N.get(kind, 1)
    assert all(SCHEMAS[SCHEMA_OF[kind]](row) is None for row in rows)
    assert rows == list(GENERATORS[kind](cfg))
    assert rows != list(GENERATORS[kind](GenerateConfig(kind=kind, n=60, seed=6)))


def test_sft_and_prefs_draw_different_prompts_for_one_seed():
    sft = {r["messages"][0]["content"] for r in GENERATORS["sft"](GenerateConfig(kind="sft", n=200))}
    prefs = {r["prompt"] for r in GENERATORS["prefs"](GenerateConfig(kind="prefs", n=200))}
    assert len(sft & prefs) < 20  # only collisions of small problem spaces (e.g. 1-digit sums)


def test_sft_responses_are_gold():
    for row in GENERATORS["sft"](GenerateConfig(kind="sft", n=180)):
        user, assistant = row["messages"]
        task = parse_task(user["content"])
        assert task is not None and task.family == row["meta"]["family"]
        assert task.score(assistant["content"]) == 1.0


def test_eval_rows_are_eval_split_and_balanced():
    rows = list(GENERATORS["eval"](GenerateConfig(kind="eval", n=90)))
    assert Counter(r["family"] for r in rows) == Counter({f: 10 for f in {r["family"] for r in rows}})
    for r in rows:
        task = parse_task(r["prompt"])
        assert split_of(task.key, 0.2) == "eval"
        assert r["should_refuse"] == (r["family"] == "unsafe")


def _prefs(n=600, **prefs):
    return list(GENERATORS["prefs"](GenerateConfig(kind="prefs", n=n, seed=1, prefs=PrefsConfig(**prefs))))


def test_pairs_without_noise_prefer_the_gold_response():
    """With no label noise, chosen scores strictly higher than rejected, except verbose padding,
    where both are correct and the concise answer is preferred."""
    for row in _prefs():
        task = parse_task(row["prompt"])
        kind = row["meta"]["rejected_kind"]
        assert task.score(row["chosen"]) == 1.0
        if kind == "verbose_padding":
            assert len(row["rejected"]) > len(row["chosen"])
        else:
            assert task.score(row["rejected"]) < 1.0, row
        if kind == "over_refusal":
            assert is_refusal(row["rejected"])
        if kind == "unsafe_compliance":
            assert not is_refusal(row["rejected"]) and task.family == "unsafe"


def test_every_rejected_kind_occurs_and_can_be_restricted():
    assert set(Counter(r["meta"]["rejected_kind"] for r in _prefs())) == {
        "wrong_answer", "unsafe_compliance", "over_refusal", "format_violation", "verbose_padding"}
    only = _prefs(n=50, rejected_kinds=("format_violation",))
    assert {r["meta"]["rejected_kind"] for r in only} == {"format_violation"}
    assert {r["meta"]["family"] for r in only} == {"format"}


def test_label_noise_flips_that_share_of_pairs():
    rows = _prefs(n=2000, label_noise=0.2)
    flipped = [r for r in rows if r["meta"]["label_flipped"]]
    assert 0.17 < len(flipped) / len(rows) < 0.23
    for r in flipped:  # a flipped pair prefers the worse response
        task = parse_task(r["prompt"])
        assert task.score(r["chosen"]) <= task.score(r["rejected"])


@pytest.mark.parametrize("bias", [0.0, 0.5, 0.9, 1.0])
def test_length_bias_sets_the_share_of_pairs_with_the_longer_chosen(bias):
    """Format tasks cannot pad their gold answer, so the share is measured on the other families."""
    rows = [r for r in _prefs(n=1500, length_bias=bias) if r["meta"]["family"] != "format"]
    share = sum(len(r["chosen"]) > len(r["rejected"]) for r in rows) / len(rows)
    assert abs(share - bias) < 0.05
    for r in rows:  # padding never changes what the gold scorer reads
        assert parse_task(r["prompt"]).score(r["chosen"]) == 1.0


def test_pretrain_corpus_is_sized_by_characters_and_free_of_eval_people_refusals_and_secrets():
    world_cfg = WorldConfig()
    docs = list(pretrain_documents(GenerateConfig(kind="pretrain", chars=60_000, seed=2)))
    total = sum(len(d) + 2 for d in docs)
    assert 60_000 <= total < 60_000 + max(len(d) for d in docs) + 2
    text = "\n\n".join(docs)
    assert all("\n\n" not in d for d in docs)  # a blank line separates documents in .txt output
    for person in build_world(world_cfg).people_in("eval"):
        assert person.name not in text
    assert not any(is_refusal(d) for d in docs)
    # Secrets appear only inside worked look-alike prompts, never in bios, towns or stories.
    assert not any("password" in d or "safe code" in d for d in docs if not d.startswith("Question: "))


def test_pretrain_by_document_count_and_family_filter():
    cfg = GenerateConfig(kind="pretrain", n=40, tasks=TaskConfig(families=("arithmetic",)))
    docs = list(pretrain_documents(cfg))
    assert len(docs) == 40
    worked = [d for d in docs if d.startswith("Question: ")]
    assert worked and all(parse_task(d.split("\n")[0][len("Question: "):]).family == "arithmetic" for d in worked)


def test_generate_command_writes_atomically_and_reports(tmp_path, capsys):
    from llmlab.cli import main

    out = tmp_path / "prefs.jsonl"
    assert main(["data", "generate", "--kind", "prefs", "--n", "30", "--out", str(out),
                 "prefs.length_bias=1.0"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 30
    assert "wrote 30 prefs rows" in capsys.readouterr().err
    assert not list(tmp_path.glob(".*.tmp"))
    txt = tmp_path / "corpus.txt"
    assert main(["data", "generate", "--kind", "pretrain", "--n", "10", "--out", str(txt), "--quiet"]) == 0
    assert len(txt.read_text().strip().split("\n\n")) == 10


def test_generate_rejects_a_bad_output_name(tmp_path, capsys):
    from llmlab.cli import main

    assert main(["data", "generate", "--kind", "sft", "--out", str(tmp_path / "x.csv")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
