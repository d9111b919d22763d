"""Alignment: sequence log-probs, SFT, reward models, and the DPO family of losses and trainer."""
