"""Evaluation: perplexity, task metrics with intervals, win rate, lm-eval adapter."""
