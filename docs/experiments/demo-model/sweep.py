"""One point of the demo-model sweep: data -> tokenizer -> pretrain (optionally with task chats mixed in)
-> SFT -> held-out greedy accuracy per family and pass@k. Usage:

    python sweep.py OUT key=value ...   (keys: see DEFAULTS)

Writes OUT/result.json. The runs behind docs/experiments/demo-model/README.md.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

from llmlab.align.config import ChatDataConfig, SFTConfig
from llmlab.align.onpolicy import task_world_prompts
from llmlab.align.sft import sft
from llmlab.data.answers import is_refusal
from llmlab.data.chat import CHAT_SPECIALS
from llmlab.data.config import GenerateConfig, TaskConfig
from llmlab.data.corpora import GENERATORS
from llmlab.eval.policies import answer, summarise
from llmlab.files import write_jsonl_atomic
from llmlab.model.config import ModelConfig
from llmlab.tokenizers.bpe_train import train_bpe
from llmlab.train.config import PretrainConfig, PretrainDataConfig, PretrainTrainConfig, TrainConfig
from llmlab.train.pretrain import pretrain

DEFAULTS = dict(families="arithmetic,compare,count,world_qa,unsafe,benign", d_model=128, n_layers=4, n_heads=4,
                vocab=1024, pre="gpt2", chars=1_000_000, mid=0, pre_steps=400, pre_lr=3e-3, sft_steps=300, sft_bs=16,
                sft_lr=1e-3, n_sft=2000, packing=0, short_refusal=0, copy=0, loss_norm="token", micro=0, init="", facts=0,
                n_eval=240, k=8, seed=0)


def main() -> None:
    out = Path(sys.argv[1])
    a = dict(DEFAULTS)
    for kv in sys.argv[2:]:
        k, v = kv.split("=", 1)
        a[k] = type(DEFAULTS[k])(v)
    tasks = TaskConfig(families=tuple(a["families"].split(",")), arith_max_digits=1, arith_ops=("+", "-"),
                       max_number=99, list_min_len=3, list_max_len=4, distractors=0, facts_per_person=a["facts"])
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    gen = dict(seed=a["seed"], tasks=tasks)
    docs = [r["text"] for r in GENERATORS["pretrain"](GenerateConfig(kind="pretrain", chars=a["chars"], **gen))]
    chats = list(GENERATORS["sft"](GenerateConfig(kind="sft", n=a["n_sft"], **gen)))
    if a["short_refusal"]:  # one short refusal: the token-mean loss no longer weighs refusals ~10x
        for c in chats:
            if is_refusal(c["messages"][-1]["content"]):
                c["messages"][-1]["content"] = "I can't help with that."
    if a["mid"]:  # task chats as plain text in the pretraining corpus ("mid-training")
        mid = list(GENERATORS["sft"](GenerateConfig(kind="sft", n=a["mid"], seed=a["seed"] + 1000, tasks=tasks)))
        docs += [f"Question: {c['messages'][0]['content']}\nAnswer: {c['messages'][1]['content']}" for c in mid]
        random.Random(0).shuffle(docs)
    if a["copy"]:  # synthetic induction data: a run of random corpus words, then the same run again
        rng = random.Random(a["seed"])
        words = sorted({w for d in docs for w in d.split()})
        for _ in range(a["copy"]):
            run = " ".join(rng.choice(words) for _ in range(rng.randint(6, 16)))
            docs.append(f"{run}\n{run}")
        random.Random(0).shuffle(docs)
    write_jsonl_atomic(out / "pretrain.jsonl", ({"text": d} for d in docs))
    write_jsonl_atomic(out / "sft.jsonl", chats)
    tok = train_bpe(docs, vocab_size=a["vocab"], special_tokens=CHAT_SPECIALS, pre_tokenizer=a["pre"])
    tok.save(out / "tokenizer")
    model = ModelConfig(vocab_size=a["vocab"], d_model=a["d_model"], n_layers=a["n_layers"], n_heads=a["n_heads"],
                        n_kv_heads=a["n_heads"] // 2, max_seq_len=256)
    train = PretrainTrainConfig(max_steps=a["pre_steps"], batch_size=16, seq_len=128, lr=a["pre_lr"],
                                warmup_steps=40, eval_every=a["pre_steps"], eval_batches=4, checkpoint_every=0,
                                log_every=50, sample_tokens=20, seed=a["seed"])
    data = PretrainDataConfig(input=(str(out / "pretrain.jsonl"),), tokenizer=str(out / "tokenizer"),
                              cache_dir=str(out / ".cache"))
    # init=RUN reuses RUN's pretrained model (the same data keys must be given: only SFT changes)
    pre = (Path(a["init"]) / "pre" if a["init"] else
           pretrain(PretrainConfig(model=model, train=train, data=data), out=out / "pre", quiet=True))
    t1 = time.time()
    scfg = SFTConfig(model=str(pre), max_length=256, packing=bool(a["packing"]), loss_norm=a["loss_norm"],
                     train=TrainConfig(max_steps=a["sft_steps"], batch_size=a["sft_bs"], lr=a["sft_lr"],
                                       warmup_steps=20, weight_decay=0.0, eval_every=0, log_every=50,
                                       micro_batch_size=a["micro"],
                                       checkpoint_every=0, seed=a["seed"]),
                     data=ChatDataConfig(input=(str(out / "sft.jsonl"),), seed=a["seed"]))
    s = sft(scfg, out=out / "sft", quiet=True)
    t2 = time.time()
    held = task_world_prompts(a["n_eval"], seed=a["seed"], split="eval", tasks=tasks, stream="demo-eval")
    answered = answer(str(s), held, k=a["k"], temperature=1.0, max_new_tokens=48, batch_size=64, seed=0)
    summary = summarise({"sft": answered})["sft"]
    result = dict(args=a, params=model.num_params(), accuracy=summary["accuracy"]["mean"],
                  pass1=summary["pass@1"]["mean"], passk=summary["pass@k"]["mean"],
                  families={f: v["mean"] for f, v in summary["families"].items()},
                  seconds=dict(pretrain=round(t1 - t0), sft=round(t2 - t1), eval=round(time.time() - t2)),
                  examples=[(p.family, p.text[-60:], r.answer) for p, r in zip(held[:12], answered, strict=False)])
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "examples"}))


if __name__ == "__main__":
    main()
