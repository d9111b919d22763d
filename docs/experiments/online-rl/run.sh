#!/usr/bin/env bash
# The online-RL experiments of docs/alignment.md, as run (CPU, one thread per run: the SFT model in ~4 minutes,
# GRPO and RLOO ~3 minutes each for 150 steps, PPO ~6, the reward-hacking lab ~11).
set -euo pipefail
export OMP_NUM_THREADS=1
T="tasks.families=[compare,arithmetic,sort] tasks.arith_max_digits=1 tasks.arith_ops=[+,-] tasks.max_number=99 tasks.list_min_len=3 tasks.list_max_len=4"
llmlab data generate --kind pretrain chars=1000000 --out pretrain.jsonl
llmlab data generate --kind sft n=6000 $T --out sft.jsonl
llmlab pretrain --input pretrain.jsonl model.vocab_size=1024 model.d_model=128 model.n_layers=4 model.n_heads=4 \
    model.n_kv_heads=2 train.max_steps=400 train.lr=0.003 train.seq_len=128 train.warmup_steps=40 --out pre
llmlab sft --model pre --input sft.jsonl train.max_steps=600 train.lr=0.001 train.batch_size=32 --out sft

# GRPO (150 and 500 steps), RLOO and PPO with the gold reward on the compare family (held-out: 300 eval-split prompts, 8 samples each)
C="data.tasks.families=[compare] data.tasks.max_number=99 eval.n_prompts=300 eval.k=8 train.eval_every=50"
llmlab grpo --model sft --out grpo --max-steps 150 train.batch_size=32 --samples 8 train.lr=1e-4 --kl-coef 0.02 $C
llmlab grpo --model sft --out grpo-seed1 --max-steps 150 train.batch_size=32 --samples 8 train.lr=1e-4 --kl-coef 0.02 \
    train.seed=1 $C
llmlab grpo --model sft --out grpo-long --max-steps 500 train.batch_size=32 --samples 8 train.lr=1e-4 --kl-coef 0.02 \
    $C train.eval_every=100
llmlab rloo --model sft --out rloo --max-steps 150 train.batch_size=32 --samples 8 train.lr=1e-4 --kl-coef 0.02 $C
llmlab ppo --model sft --out ppo --max-steps 150 train.batch_size=32 --samples 4 train.lr=5e-5 --kl-coef 0.02 $C

# the reward-hacking lab (compare + 1-digit arithmetic: its defaults)
llmlab hacking --model sft --out hacking
