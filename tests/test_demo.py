"""`llmlab demo --quick` end to end (every stage at toy size), its report card, and `--resume`."""

import json
import shutil

import pytest
import yaml

from llmlab.cli import main
from llmlab.data.chat import CHAT_SPECIALS
from llmlab.demo.evaluation import POLICIES
from llmlab.demo.runner import STAGES, progress_line

FAMILIES = {"compare", "count", "unsafe", "benign"}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    code = main(["demo", "--quick", "--out", str(out), "--quiet", "tasks.families=[compare,count,unsafe,benign]",
                 "tasks.max_number=20", "grpo_temperature=0.9", "grpo_samples=3", "onpolicy_temperature=0.6"])
    assert code == 0
    return out


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_quick_demo_writes_every_stage(demo_run):
    out = demo_run
    for name in ("config.yaml", "metrics.jsonl", "log.txt", "report.md", "report.html", "stages.json",
                 "baselines.png", "baselines.json", "tokenizer/tokenizer.json", "tokenizer/vocab.txt",
                 "data/pretrain.jsonl", "data/sft.jsonl", "data/prefs.jsonl", "data/eval.jsonl",
                 "attention/attention.png", "attention/attention.html",
                 "pretrain/model.safetensors", "pretrain/curves.png", "pretrain/attention.png", "sft/model.safetensors",
                 "sft/curves.png", "onpolicy/prefs.jsonl", "dpo/model.safetensors", "dpo/curves.png",
                 "grpo/model.safetensors", "grpo/curves.png", "rm/model.safetensors", "prefs/prefs.jsonl",
                 "ppo-proxy/model.safetensors", "ppo-proxy/curves.png", "evaluation/summary.json",
                 "evaluation/verdicts.json", "evaluation/answers.jsonl", "evaluation/accuracy.png"):
        assert (out / name).is_file(), name
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["preset"] == "quick" and config["model"]["d_model"] == 32 and config["pre_tokenizer"] == "words"
    assert list(json.loads((out / "stages.json").read_text())) == [name for name, _, _ in STAGES]
    for sub in ("pretrain", "sft", "onpolicy", "dpo", "grpo", "rm", "ppo-proxy"):  # each an ordinary run folder
        assert json.loads((out / sub / "status.json").read_text())["status"] == "finished", sub
    from llmlab.tokenizers import load_tokenizer

    tok = load_tokenizer(out / "tokenizer")
    assert set(tok.special_tokens) == set(CHAT_SPECIALS) and tok.pre_tokenizer.name == "words"
    baselines = json.loads((out / "baselines.json").read_text())
    assert baselines["gold"]["score"] == 1.0  # the scorers agree with the gold answers
    assert baselines["always_refuse"]["refusal_rate_unsafe"] == 1.0 == baselines["always_refuse"]["over_refusal_rate"]
    assert baselines["compliant_wrong"]["accuracy"] == 0.0


def test_one_task_configuration_reaches_every_stage(demo_run):
    out = demo_run
    report = (out / "report.md").read_text()
    assert "families=('compare', 'count', 'unsafe', 'benign')" in report and "max_number=20" in report
    assert {r["family"] for r in _jsonl(out / "data" / "eval.jsonl")} <= FAMILIES
    assert {r["meta"]["family"] for r in _jsonl(out / "onpolicy" / "prefs.jsonl")} <= FAMILIES
    answers = _jsonl(out / "evaluation" / "answers.jsonl")
    assert {r["family"] for r in answers} == FAMILIES and {r["policy"] for r in answers} == set(POLICIES)
    for sub in ("grpo", "ppo-proxy"):
        assert yaml.safe_load((out / sub / "config.yaml").read_text())["data"]["tasks"]["max_number"] == 20


def test_the_sampling_settings_reach_their_stages(demo_run):
    grpo = yaml.safe_load((demo_run / "grpo" / "config.yaml").read_text())
    assert grpo["rollout"]["temperature"] == 0.9 and grpo["rollout"]["samples"] == 3
    assert grpo["train"]["batch_size"] == 2  # the quick preset's grpo_batch_size
    ppo = yaml.safe_load((demo_run / "ppo-proxy" / "config.yaml").read_text())
    assert ppo["rollout"]["temperature"] == 1.0 and ppo["rollout"]["samples"] == 2  # rl_samples, not grpo's
    assert yaml.safe_load((demo_run / "onpolicy" / "config.yaml").read_text())["temperature"] == 0.6


def test_evaluation_has_intervals_and_a_verdict_per_stage(demo_run):
    out = demo_run
    summary = json.loads((out / "evaluation" / "summary.json").read_text())
    assert list(summary) == list(POLICIES)
    n = 12  # the quick preset's n_eval_prompts
    for name, s in summary.items():
        acc = s["accuracy"]
        assert acc["n"] == n and 0.0 <= acc["lo"] <= acc["mean"] <= acc["hi"] <= 1.0
        assert s["proxy"]["n"] == n  # every model's answers scored by the proxy reward model
        assert ("vs_baseline" in s) == (name != "pretrained")
    assert summary["sft"]["vs_baseline"]["against"] == "pretrained" and summary["grpo"]["vs_baseline"]["against"] == "sft"
    verdicts = json.loads((out / "evaluation" / "verdicts.json").read_text())
    assert [v["stage"] for v in verdicts] == ["SFT", "DPO", "GRPO", "PPO vs proxy"]
    report = (out / "report.md").read_text()
    for v in verdicts:  # a stage that misses its bar says so in words
        assert v["text"] in report and (v["ok"] or "NOT" in v["text"])
    assert "## Does each stage do its job?" in report and "| pretrained | 12 |" in report


def test_progress_line():
    assert progress_line(1, "data", 0.0, 0.0) == f"[demo 1/{len(STAGES)}] data · 0:00 elapsed"
    assert progress_line(5, "pretrain", 90.0, 0.25) == f"[demo 5/{len(STAGES)}] pretrain · 1:30 elapsed · about 4 min left"


def test_resume_keeps_finished_stages_and_reruns_the_rest(demo_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(demo_run, out)
    stages = json.loads((out / "stages.json").read_text())
    del stages["evaluation"], stages["ppo-proxy"]  # as if interrupted during ppo-proxy
    (out / "stages.json").write_text(json.dumps(stages))
    shutil.rmtree(out / "evaluation")
    shutil.rmtree(out / "ppo-proxy")
    sft_weights = (out / "sft" / "model.safetensors").stat().st_mtime_ns
    rm_weights = (out / "rm" / "model.safetensors").stat().st_mtime_ns
    assert main(["demo", "--resume", str(out), "--quiet"]) == 0
    assert "report at" in capsys.readouterr().out
    assert (out / "sft" / "model.safetensors").stat().st_mtime_ns == sft_weights  # not retrained
    assert (out / "rm" / "model.safetensors").stat().st_mtime_ns == rm_weights  # the finished proxy kept
    assert (out / "ppo-proxy" / "model.safetensors").is_file() and (out / "evaluation" / "summary.json").is_file()
    log = (out / "log.txt").read_text()
    assert "stage pretrain: finished before, kept" in log and "rm: finished before, kept" in log
    assert list(json.loads((out / "stages.json").read_text())) == [name for name, _, _ in STAGES]


def test_resume_needs_a_demo_folder(tmp_path, capsys):
    assert main(["demo", "--resume", str(tmp_path)]) == 2
    assert "no config.yaml there" in capsys.readouterr().err
    assert main(["demo", "--resume", str(tmp_path), "--out", str(tmp_path / "other")]) == 2
    assert "drop --out" in capsys.readouterr().err


def test_the_report_card_in_a_real_browser(demo_run):
    """report.html as a person opens it: headless Chromium, file://, nothing fetched from anywhere."""
    from browser import inspect_page, launch_browser, require_browser

    require_browser()
    with launch_browser() as browser:
        page = inspect_page(demo_run / "report.html", browser)
    assert page["title"] == "llmlab demo" and page["h1"] == ["llmlab demo: report card"]
    for heading in ("Does each stage do its job? (held-out, this seed)", "Pretraining", "GRPO on the gold reward",
                    "PPO against a length-biased proxy (reward hacking)",
                    "Evaluation: what each stage did on held-out prompts"):
        assert heading in page["h2"], heading
    figures = {img["alt"]: img for img in page["images"]}
    for alt in ("loss curves", "DPO curves", "GRPO curves", "PPO against the proxy", "accuracy per family"):
        assert figures[alt]["natural_width"] > 0 and figures[alt]["src"].startswith("data:image/png"), alt
    maps = [f for f in page["iframes"] if f["title"] == "the interactive attention maps"]
    assert len(maps) == 1 and maps[0]["text"].strip()  # the interactive page, embedded and rendered
    evaluation = next(t for t in page["tables"] if t["head"][:3] == ["policy", "n", "gold accuracy [95% CI]"])
    assert [row[0] for row in evaluation["rows"]] == list(POLICIES)
    assert not page["console_errors"] and not page["page_errors"] and not page["foreign_requests"]
    verdicts = json.loads((demo_run / "evaluation" / "verdicts.json").read_text())
    assert all(v["text"] in page["text"] for v in verdicts)
