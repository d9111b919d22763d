"""Training: the numerics every loop shares (schedules, optimiser groups, steps), checkpoints,
token data, distributed set-up, metric trackers, and the pretraining loop."""
