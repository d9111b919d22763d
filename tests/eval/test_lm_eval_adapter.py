"""The lm-evaluation-harness model `llmlab` (eval/lm_eval_adapter.py), checked through lm-eval itself.

The reference is lm-eval's own `hf` model (HFLM, transformers' LlamaForCausalLM) on the HF export of the
same weights: every log-likelihood within 1e-4, or 1e-7 of its size for long documents (`close`), every
generation identical. The relative bar is for the `hf` model's float32 sum of a document's token
log-probs: on a 206-token document it was 1.2e-4 off the float64 value, llmlab (float64 sum) 1.1e-5
(docs/alignment.md). One score is also computed by hand in float64.

The shipped tasks (tests/eval/lm_eval_tasks: multiple choice, perplexity, generation) use a model with
init_std 0.2: at the shared fixture's 0.02 the logits are so flat that every greedy generation is the
same string, whatever the prompt, and identical generations would prove nothing.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lm_eval.api.instance import Instance

from conftest import subprocess_environment
from llmlab.errors import UserError
from llmlab.eval.lm_eval_adapter import LlmlabLM, continuation_logprobs, longest_first

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TASKS_DIR = Path(__file__).parent / "lm_eval_tasks"
TASKS = ["llmlab_mc", "llmlab_ppl", "llmlab_gen"]
TOL = 1e-4


def close(a: float, b: float) -> bool:
    """Within 1e-4, or 1e-7 relative (a document's total: see the module doc)."""
    return math.isclose(a, b, rel_tol=1e-7, abs_tol=TOL)


# contexts that end in spaces (moved to the continuation by lm-eval), an empty context (the prefix token),
# a special token's text, digits, and a context longer than the model (cut from the left)
PAIRS = [
    ("Question: What is 2 + 3?\nAnswer:", " 5"),
    ("Question: What is 2 + 3?\nAnswer: ", "5"),
    ("The capital of France is  ", "Paris."),
    ("", "Once upon a time"),
    ("a<|endoftext|>b", " c"),
    ("Add 12 and 30:", " 42"),
    ("word " * 200, "end"),
]
DOCUMENT = ("Once upon a time there was a small robot that liked to count the birds on the roof, the cups "
            "on the shelf and the steps to the door. ") * 6  # several windows of the 128-token model


@pytest.fixture(scope="module")
def sharp_dirs(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> tuple[Path, Path]:
    """(llmlab folder, its HF export) of the tiny model with init_std 0.2 (see the module doc)."""
    from conftest import TINY_MODEL, one_thread
    from llmlab.model.config import ModelConfig
    from llmlab.model.hf_io import export_hf
    from llmlab.model.io import save_model
    from llmlab.model.llama import Transformer
    from llmlab.tokenizers.hf_io import load_tokenizer

    tok = load_tokenizer(tiny_tokenizer_dir / "tokenizer.json")
    torch.manual_seed(0)
    with one_thread():
        model = Transformer(ModelConfig(vocab_size=tok.vocab_size, init_std=0.2, **TINY_MODEL))
    llmlab_dir = tmp_path_factory.mktemp("lmeval-sharp")
    save_model(model, llmlab_dir, tok)
    return llmlab_dir, export_hf(model, tmp_path_factory.mktemp("lmeval-sharp-hf"), tok)


def hf_lm(hf_dir: Path, batch_size: int = 4):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(hf_dir), device="cpu", batch_size=batch_size)


def requests(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(kind, {}, a, i) for i, a in enumerate(args)]


# ---------------------------------------------------------------------- the pure parts


def test_continuation_logprobs_match_float64_numpy() -> None:
    """Row b scores its continuation with the logits at positions ends[b] - C .. ends[b] - 1."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 7, 11)) * 3  # (B, T, V)
    ends, conts = [7, 4, 5], [[1, 2, 3], [4], [5, 6]]
    logits[1, 3, 4] = 50.0  # row 1's only token is the argmax
    got = continuation_logprobs(torch.tensor(logits, dtype=torch.float32), ends, conts)
    for (value, greedy), row, end, cont in zip(got, logits, ends, conts, strict=True):
        scored = row[end - len(cont):end]
        log_softmax = scored - np.log(np.exp(scored - scored.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
            - scored.max(-1, keepdims=True)
        assert value == pytest.approx(log_softmax[np.arange(len(cont)), cont].sum(), abs=1e-5)
        assert greedy == bool((scored.argmax(-1) == cont).all())
    assert [g for _, g in got] == [False, True, False]


def test_longest_first_batches() -> None:
    assert list(longest_first([3, 9, 1, 7, 5], 2)) == [[1, 3], [4, 0], [2]]


# ---------------------------------------------------------------------- scores against references


def test_one_loglikelihood_by_hand_in_float64(tiny_model_dir: Path) -> None:
    """log p(" 5" | "Question: What is 2 + 3?\\nAnswer:") from the model's logits in float64, with the
    split lm-eval makes: context + continuation encoded whole, the continuation = the ids after the context's."""
    from llmlab.model.io import load_model

    context, continuation = PAIRS[0]
    model, tok = load_model(tiny_model_dir)
    whole, head = tok.encode(context + continuation), tok.encode(context)
    assert whole[:len(head)] == head
    with torch.no_grad():
        logits = model.double()(torch.tensor([whole])).logits[0]  # (T, V) float64
    logp = torch.log_softmax(logits, dim=-1)
    expected = sum(float(logp[t - 1, whole[t]]) for t in range(len(head), len(whole)))
    greedy = all(int(logp[t - 1].argmax()) == whole[t] for t in range(len(head), len(whole)))

    [(value, is_greedy)] = LlmlabLM(path=str(tiny_model_dir)).loglikelihood(requests("loglikelihood", [PAIRS[0]]),
                                                                             disable_tqdm=True)
    assert value == pytest.approx(expected, abs=1e-5)
    assert is_greedy == greedy


@pytest.mark.parametrize("which", ["tiny", "sharp"])
def test_requests_score_as_lm_eval_hf_model(which: str, tiny_model_dir: Path, tiny_hf_dir: Path,
                                            sharp_dirs: tuple[Path, Path]) -> None:
    """The three request types, straight through both lm-eval models: the same token split of each pair,
    the same scores, the same rolling windows, the same generated text (stop strings and max_gen_toks)."""
    llmlab_dir, hf_dir = (tiny_model_dir, tiny_hf_dir) if which == "tiny" else sharp_dirs
    ours, theirs = LlmlabLM(path=str(llmlab_dir), batch_size=3), hf_lm(hf_dir, batch_size=3)

    for context, continuation in PAIRS[:3] + PAIRS[4:]:  # TemplateLM's split: the same ids from both tokenizers
        assert ours._encode_pair(context, continuation) == theirs._encode_pair(context, continuation)
    assert ours.prefix_token_id == theirs.prefix_token_id and ours.max_length == theirs.max_length == 128

    got = ours.loglikelihood(requests("loglikelihood", PAIRS), disable_tqdm=True)
    want = theirs.loglikelihood(requests("loglikelihood", PAIRS), disable_tqdm=True)
    for (a, greedy_a), (b, greedy_b) in zip(got, want, strict=True):
        assert close(a, b) and greedy_a == greedy_b

    docs = [(DOCUMENT,), ("The cat sat on the mat.",)]
    rolling = ours.loglikelihood_rolling(requests("loglikelihood_rolling", docs), disable_tqdm=True)
    rolling_hf = theirs.loglikelihood_rolling(requests("loglikelihood_rolling", docs), disable_tqdm=True)
    assert len(ours.tok_encode(DOCUMENT)) > 2 * ours.max_length  # three windows or more
    assert all(map(close, rolling, rolling_hf))

    gens = [("Q: What is 3 + 4?\nA:", {"until": ["\n"], "do_sample": False, "max_gen_toks": 20}),
            ("Say hello.", {"until": ["l", "."], "max_gen_toks": 12}),
            ("Once upon", {"until": [], "max_gen_toks": 30}),
            ("word " * 200, {"until": ["\n"], "max_gen_toks": 8})]
    texts = ours.generate_until(requests("generate_until", gens), disable_tqdm=True)
    assert texts == theirs.generate_until(requests("generate_until", gens), disable_tqdm=True)
    if which == "sharp":  # varied text, so that equality means something
        assert len(set(texts)) == len(texts) and all(texts)
        assert len(ours.tok_encode(texts[2])) >= 20 and "l" not in texts[1]


def test_hf_folder_runs_on_llmlab_model(tiny_model_dir: Path, tiny_hf_dir: Path) -> None:
    """path= an HF folder: llmlab's Transformer on the converted weights, the folder's transformers tokenizer."""
    reqs = requests("loglikelihood", PAIRS[:4])
    from_hf = LlmlabLM(path=str(tiny_hf_dir)).loglikelihood(reqs, disable_tqdm=True)
    native = LlmlabLM(path=str(tiny_model_dir)).loglikelihood(reqs, disable_tqdm=True)
    assert [v for v, _ in from_hf] == pytest.approx([v for v, _ in native], abs=1e-6)


# ---------------------------------------------------------------------- the shipped tasks, through lm-eval


def evaluate(model: str, model_args: str) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    tasks = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    return lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=TASKS, task_manager=tasks,
                                   device="cpu", batch_size=4, log_samples=True)


def metrics(results: dict) -> dict[tuple[str, str], float]:
    return {(task, key.split(",")[0]): float(value) for task in TASKS
            for key, value in results["results"][task].items() if "," in key and "stderr" not in key}


def test_shipped_tasks_score_as_lm_eval_hf_model(sharp_dirs: tuple[Path, Path]) -> None:
    """The issue's bar: lm_eval.simple_evaluate with model="llmlab" on the llmlab folder and model="hf" on its
    HF export give the same scores on the three shipped tasks: log-likelihood metrics within 1e-4 (the
    perplexities as logs), accuracies and exact match equal, each sample's response equal."""
    llmlab_dir, hf_dir = sharp_dirs
    ours, theirs = evaluate("llmlab", f"path={llmlab_dir}"), evaluate("hf", f"pretrained={hf_dir}")
    a, b = metrics(ours), metrics(theirs)
    assert set(a) == {("llmlab_mc", "acc"), ("llmlab_mc", "acc_norm"), ("llmlab_ppl", "word_perplexity"),
                      ("llmlab_ppl", "byte_perplexity"), ("llmlab_ppl", "bits_per_byte"),
                      ("llmlab_gen", "exact_match")} == set(b)
    for key in a:
        if "perplexity" in key[1]:
            assert abs(math.log(a[key]) - math.log(b[key])) < TOL, key
        elif key[1] == "bits_per_byte":
            assert abs(a[key] - b[key]) < TOL, key
        else:
            assert a[key] == b[key], key
    samples, samples_hf = ours["samples"], theirs["samples"]
    largest = {}  # the largest difference of one request's log-likelihood, per task
    for task in ("llmlab_mc", "llmlab_ppl"):
        pairs = [(ra[0][0], rb[0][0]) if task == "llmlab_mc" else (ra[0], rb[0])
                 for x, y in zip(samples[task], samples_hf[task], strict=True)
                 for ra, rb in zip(x["resps"], y["resps"], strict=True)]
        largest[f"{task}/request loglikelihood (largest |diff|)"] = max(abs(p - q) for p, q in pairs)
        assert all(close(p, q) for p, q in pairs), task
    print("\n" + json.dumps({**{f"{t}/{m}": [a[(t, m)], b[(t, m)], abs(a[(t, m)] - b[(t, m)])] for t, m in a},
                             **largest}))
    gens = [x["resps"] for x in samples["llmlab_gen"]]
    assert gens == [y["resps"] for y in samples_hf["llmlab_gen"]]
    assert len({g[0][0] for g in gens}) > 1  # different prompts, different text


@pytest.mark.slow
def test_cli_runs_the_shipped_tasks(sharp_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    """`python -m llmlab.eval.lm_eval_cli` is lm-eval's command line with the model registered: the documented
    command, its results file equal to the Python API's figures."""
    llmlab_dir, _ = sharp_dirs
    env = {**subprocess_environment(), "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "llmlab.eval.lm_eval_cli", "--model", "llmlab", "--model_args", f"path={llmlab_dir}",
           "--tasks", ",".join(TASKS), "--include_path", str(TASKS_DIR), "--device", "cpu", "--batch_size", "4",
           "--output_path", str(tmp_path / "out")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=os.getcwd())
    assert done.returncode == 0, done.stderr[-3000:]
    assert "llmlab_mc" in done.stdout and "bits_per_byte" in done.stdout
    [results_file] = (tmp_path / "out").rglob("results_*.json")
    from_cli = metrics(json.loads(results_file.read_text()))
    assert from_cli == pytest.approx(metrics(evaluate("llmlab", f"path={llmlab_dir}")), rel=1e-9)


# ---------------------------------------------------------------------- bad input


def test_bad_arguments_are_one_line_errors(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="path=DIR"):
        LlmlabLM()
    with pytest.raises(UserError, match="no such model folder"):
        LlmlabLM(path=str(tmp_path / "missing"))
    with pytest.raises(UserError, match="auto is not supported"):
        LlmlabLM(path=str(tiny_model_dir), batch_size="auto")
    with pytest.raises(UserError, match="does not take: temprature"):
        LlmlabLM(path=str(tiny_model_dir), temprature=0.5)
    with pytest.raises(UserError, match="not a model folder"):
        LlmlabLM(path=str(tmp_path))
    with pytest.raises(UserError, match="max_length 129"):
        LlmlabLM(path=str(tiny_model_dir), max_length=129)
    lm = LlmlabLM(path=str(tiny_model_dir))
    with pytest.raises(UserError, match="does not support: num_beams"):
        lm.generate_until(requests("generate_until", [("hi", {"until": ["\n"], "num_beams": 4})]), disable_tqdm=True)
    with pytest.raises(UserError, match="leaves no room"):
        lm.generate_until(requests("generate_until", [("hi", {"max_gen_toks": 128})]), disable_tqdm=True)


def test_model_name_is_registered_beside_lm_evals_own() -> None:
    """Importing the adapter must not hide lm-eval's models: its registry imports them only when empty."""
    from lm_eval.api.registry import get_model

    assert get_model("llmlab") is LlmlabLM
    assert get_model("hf").__name__ == "HFLM"


@pytest.fixture(scope="module")
def sentencepiece_hf_dir(tmp_path_factory: pytest.TempPathFactory, tiny_hf_dir: Path) -> Path:
    """The tiny HF model with a Llama-2-style tokenizer instead: Metaspace BPE (which llmlab's tokenizer reader
    refuses) whose post-processor adds BOS <s>, with </s> as EOS."""
    import shutil

    from llmlab.data.config import GenerateConfig
    from llmlab.data.corpora import pretrain_documents
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    directory = tmp_path_factory.mktemp("lmeval-spm-hf")
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        shutil.copy(tiny_hf_dir / name, directory / name)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    docs = [*pretrain_documents(GenerateConfig(kind="pretrain", chars=20_000)), *(c + x for c, x in PAIRS), DOCUMENT]
    tok.train_from_iterator(docs, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"]))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "model_max_length": 128}))
    config = json.loads((directory / "config.json").read_text())
    config.update(bos_token_id=1, eos_token_id=2)
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    return directory


def test_hf_folder_with_a_bos_tokenizer_scores_as_lm_eval_hf_model(sentencepiece_hf_dir: Path) -> None:
    """An HF folder whose tokenizer adds BOS: the llmlab model tokenizes with transformers as the `hf` model
    does (BOS before every encoded text, BOS as the prefix of an empty context and of the first rolling
    window), so the scores and generations are the same."""
    from llmlab.tokenizers.hf_io import load_tokenizer

    with pytest.raises(UserError):
        load_tokenizer(sentencepiece_hf_dir)  # why the adapter tokenizes HF folders with transformers
    ours, theirs = LlmlabLM(path=str(sentencepiece_hf_dir), batch_size=3), hf_lm(sentencepiece_hf_dir, batch_size=3)
    assert ours.prefix_token_id == theirs.prefix_token_id == 1 and ours.eot_token_id == theirs.eot_token_id == 2
    assert ours.tok_encode("Once upon")[0] == 1
    for context, continuation in PAIRS[:3] + PAIRS[4:]:
        assert ours._encode_pair(context, continuation) == theirs._encode_pair(context, continuation)
    got = ours.loglikelihood(requests("loglikelihood", PAIRS), disable_tqdm=True)
    want = theirs.loglikelihood(requests("loglikelihood", PAIRS), disable_tqdm=True)
    assert all(close(a, b) and ga == gb for (a, ga), (b, gb) in zip(got, want, strict=True))
    docs = [(DOCUMENT,), ("The cat sat on the mat.",)]
    assert all(map(close, ours.loglikelihood_rolling(requests("loglikelihood_rolling", docs), disable_tqdm=True),
                   theirs.loglikelihood_rolling(requests("loglikelihood_rolling", docs), disable_tqdm=True)))
    gens = [("Once upon", {"until": ["\n"], "max_gen_toks": 16}), ("Add 12 and 30:", {"until": [], "max_gen_toks": 8})]
    assert ours.generate_until(requests("generate_until", gens), disable_tqdm=True) == \
        theirs.generate_until(requests("generate_until", gens), disable_tqdm=True)


@pytest.mark.slow  # lm-eval's command line indexes its thousands of built-in task files first (~20 s)
def test_cli_bad_model_args_are_one_line_errors(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from llmlab.eval.lm_eval_cli import main

    for model_args, message in [(f"path={tmp_path / 'missing'}", "no such model folder"),
                                (f"path={tiny_model_dir},temprature=0.5", "does not take: temprature")]:
        monkeypatch.setattr(sys, "argv", ["lm_eval_cli", "--model", "llmlab", "--model_args", model_args, "--tasks",
                                          "llmlab_mc", "--include_path", str(TASKS_DIR), "--device", "cpu"])
        with pytest.raises(SystemExit) as exit_:
            main()
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and message in err[-1], err[-3:]
