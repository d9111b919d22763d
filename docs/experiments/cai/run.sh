#!/usr/bin/env bash
# The constitutional-AI experiment on the task world, as run (CPU, 2 busy cores). WORK holds copies of the
# finished 0.16M demo run's sft/ and dpo/ (demo-dpo/) folders; DEMO is that run (read only).
# `cai label` has since drawn each pair's principle by its index in the run (not in its batch), so its labels
# no longer match the ones recorded here; rerun.sh is this script again with the current commands.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${WORK:-/tmp/cai_exp}
DEMO=${DEMO:-/tmp/demo0}
cd "$WORK"
cp "$HERE/tasks.yaml" tasks.yaml   # the demo's task world (its families and difficulty)

# 1. SL-CAI: the demo's SFT model answers 600 train-split prompts, critiques and revises (1 round)
llmlab cai revise --model sft --config tasks.yaml --out revise n=600 device=cpu
llmlab sft --model sft --input revise/sft.jsonl --out cai-sft train.max_steps=60 train.lr=0.001 train.device=cpu

# 2. the feedback model: the SFT model as it is, and one taught the judge's format on train-split pairs
llmlab cai judge-data --pairs "$DEMO/data/prefs.jsonl" "$DEMO/onpolicy/prefs.jsonl" --out judge-data
llmlab sft --model sft --input judge-data/judge_sft.jsonl --out judge train.max_steps=120 train.lr=0.002 \
    train.batch_size=16 train.eval_every=60 train.device=cpu
#    both judged on held-out pairs: two sampled SFT answers per eval-split prompt, against the gold scorers
llmlab cai label --model sft --prompts "$DEMO/data/eval.jsonl" --out judge-eval-sft device=cpu
llmlab cai label --model sft --judge judge --prompts "$DEMO/data/eval.jsonl" --out judge-eval-judge device=cpu
#    the taught judge trained longer (300 more steps, then 600 more), judged on the same held-out pairs
llmlab sft --model judge --input judge-data/judge_sft.jsonl --out judge2 train.max_steps=300 train.lr=0.001 \
    train.batch_size=16 train.eval_every=100 train.device=cpu data.seed=1
llmlab cai label --model sft --judge judge2 --prompts "$DEMO/data/eval.jsonl" --out judge-eval-judge2 device=cpu
llmlab sft --model judge2 --input judge-data/judge_sft.jsonl --out judge3 train.max_steps=600 train.lr=0.001 \
    train.batch_size=16 train.eval_every=200 train.device=cpu data.seed=2
llmlab cai label --model sft --judge judge3 --prompts "$DEMO/data/eval.jsonl" --out judge-eval-judge3 device=cpu

# 3. RL-CAI: pairs of the CAI-SFT model's answers on 600 train-split prompts labelled by the taught judge -> DPO
#    (`cai label` now writes soft labels, p_chosen, which the demo config's rpo_alpha > 0 refuses: DPO trains on
#    the hard labels, data.soft_labels=false, as the recorded runs did before soft labels existed)
llmlab cai label --model cai-sft --judge judge --config tasks.yaml --out label n=600 device=cpu
llmlab dpo --config "$DEMO/dpo/config.yaml" --model cai-sft --input label/prefs.jsonl --out cai-dpo \
    eval.n_pairs=0 eval.n_prompts=0 train.device=cpu data.soft_labels=false

#    RL-CAI alone: the SFT model's own answers, labelled by the same judge -> DPO from the SFT model
llmlab cai label --model sft --judge judge --config tasks.yaml --out label-sft n=600 device=cpu
llmlab dpo --config "$DEMO/dpo/config.yaml" --model sft --input label-sft/prefs.jsonl --out rlcai-dpo \
    eval.n_pairs=0 eval.n_prompts=0 train.device=cpu data.soft_labels=false

#    again with the 420-step judge (judge2), for both starting points
llmlab cai label --model cai-sft --judge judge2 --config tasks.yaml --out label2 n=600 device=cpu
llmlab dpo --config "$DEMO/dpo/config.yaml" --model cai-sft --input label2/prefs.jsonl --out cai-dpo2 \
    eval.n_pairs=0 eval.n_prompts=0 train.device=cpu data.soft_labels=false
llmlab cai label --model sft --judge judge2 --config tasks.yaml --out label-sft2 n=600 device=cpu
llmlab dpo --config "$DEMO/dpo/config.yaml" --model sft --input label-sft2/prefs.jsonl --out rlcai2-dpo \
    eval.n_pairs=0 eval.n_prompts=0 train.device=cpu data.soft_labels=false

# 4. held-out evaluation against the gold labels (240 eval-split prompts, the demo report's)
python "$HERE/evaluate.py" . eval.json sft=sft demo-dpo=demo-dpo:sft cai-sft=cai-sft:sft cai-dpo=cai-dpo:cai-sft \
    rlcai-dpo=rlcai-dpo:sft cai-dpo2=cai-dpo2:cai-sft rlcai2-dpo=rlcai2-dpo:sft > eval.md
