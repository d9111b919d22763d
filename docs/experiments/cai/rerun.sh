#!/usr/bin/env bash
# The constitutional-AI experiment's main line again, on a fresh machine, from a fresh `llmlab demo --seed 0`
# run (DEMO) with the demo's current settings, evaluated by `llmlab eval` (bootstrap intervals on every
# figure, pass@k from sampled answers, win rate against the SFT model by the gold judge). The models of
# run.sh are not kept, so this rebuilds the ones the summary rests on: CAI-SFT, the 420-step judge, and
# DPO on its labels from CAI-SFT (cai-dpo2) and from SFT (rlcai2-dpo).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${WORK:-/tmp/cai_rerun}
DEMO=${DEMO:-/tmp/demos/seed-0}
mkdir -p "$WORK" && cd "$WORK"
cp "$HERE/tasks.yaml" tasks.yaml
[ -d sft ] || cp -r "$DEMO/sft" sft
[ -d demo-dpo ] || cp -r "$DEMO/dpo" demo-dpo

# 1. SL-CAI
llmlab cai revise --model sft --config tasks.yaml --out revise n=600 device=cpu
llmlab sft --model sft --input revise/sft.jsonl --out cai-sft train.max_steps=60 train.lr=0.001 train.device=cpu
# 2. the judge: the SFT model taught the judge's format, 120 + 300 steps; its agreement with gold on held-out pairs
llmlab cai judge-data --pairs "$DEMO/data/prefs.jsonl" "$DEMO/onpolicy/prefs.jsonl" --out judge-data
llmlab sft --model sft --input judge-data/judge_sft.jsonl --out judge train.max_steps=120 train.lr=0.002 \
    train.batch_size=16 train.eval_every=60 train.device=cpu
llmlab sft --model judge --input judge-data/judge_sft.jsonl --out judge2 train.max_steps=300 train.lr=0.001 \
    train.batch_size=16 train.eval_every=100 train.device=cpu data.seed=1
llmlab cai label --model sft --judge judge2 --prompts "$DEMO/data/eval.jsonl" --out judge-eval-judge2 device=cpu
# 3. RL-CAI: the judge's labels on train-split answer pairs -> DPO (the demo's DPO settings; hard labels as in
#    run.sh, since the demo's RPO term takes no soft labels)
llmlab cai label --model cai-sft --judge judge2 --config tasks.yaml --out label2 n=600 device=cpu
llmlab dpo --config "$DEMO/dpo/config.yaml" --model cai-sft --input label2/prefs.jsonl --out cai-dpo2 \
    eval.n_pairs=0 eval.n_prompts=0 train.device=cpu data.soft_labels=false
llmlab cai label --model sft --judge judge2 --config tasks.yaml --out label-sft2 n=600 device=cpu
llmlab dpo --config "$DEMO/dpo/config.yaml" --model sft --input label-sft2/prefs.jsonl --out rlcai2-dpo \
    eval.n_pairs=0 eval.n_prompts=0 train.device=cpu data.soft_labels=false
# 4. held-out evaluation against the gold labels, every model on the same 240 eval-split prompts
llmlab eval --models sft=sft,demo-dpo=demo-dpo,cai-sft=cai-sft,cai-dpo2=cai-dpo2,rlcai2-dpo=rlcai2-dpo \
    --config tasks.yaml --samples 4 --k 2 --judge gold --out llmlab-eval n_prompts=240 device=cpu
