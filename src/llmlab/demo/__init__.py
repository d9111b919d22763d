"""`llmlab demo`: the whole lab on built-in data, end to end, into one run folder, as a lesson: each stage
shows its effect on held-out data with its uncertainty, and the report card says which stage did its job.

    config.py      DemoConfig: the task world, the model and every stage's settings; presets quick, small
    basics.py      data, tokenizer, attention (checked and drawn), baselines (the gold scorers)
    training.py    pretrain, SFT
    alignment.py   on-policy pairs, DPO, GRPO on the gold reward, PPO against a length-biased proxy
    evaluation.py  every model on the same held-out prompts, with intervals and a verdict per stage
    runner.py      the stages in order, the progress line, --resume, report.md + report.html

Stages import torch and NumPy (and the llmlab modules built on them) inside their functions:
`llmlab demo --help` and `--print-config` must not import them.
"""
