"""PPO's policy and value function as one module, so that DDP, the optimiser and the checkpoint see
one set of parameters.

    shared     a linear value head on the policy's own final hidden states: one forward gives the
               logits and the values (cheaper; the two losses pull on one trunk)
    separate   a critic: a reward-model-shaped network (align/reward_model.RewardModel: a trunk and a
               scalar head, here read at every position), started from a reward model folder as
               InstructGPT does (Ouyang et al. 2022) or from the policy's weights

The value of response token t is read at the position before it (the state the token is chosen in),
the same position whose logits give the token's log-prob.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from llmlab.align.logprobs import model_logits
from llmlab.align.models import ChatTokenizer, is_llmlab, load_policy
from llmlab.align.reward_model import (
    RewardModel,
    load_reward_model,
    reward_model_from_policy,
    save_reward_model,
)
from llmlab.model.weights import save_safetensors

VALUE_HEAD_FILE = "value_head.safetensors"
CRITIC_DIR = "critic"


class PolicyWithValue(nn.Module):
    """forward(ids, attention_mask, keep) -> (logits (B, keep, V), values (B, keep))."""

    def __init__(self, policy: nn.Module, critic: RewardModel | None) -> None:
        super().__init__()
        self.policy, self.critic = policy, critic
        if critic is None:
            d = policy.cfg.d_model if is_llmlab(policy) else policy.config.hidden_size
            self.value_head = nn.Linear(d, 1, bias=True)
            nn.init.normal_(self.value_head.weight, std=1.0 / (d + 1) ** 0.5)
            nn.init.zeros_(self.value_head.bias)
            self.value_head.to(next(policy.parameters()).device)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.critic is not None:
            logits = model_logits(self.policy, ids, attention_mask, keep=keep)
            hidden = self.critic.hidden_states(ids, attention_mask)[:, -keep:]
            return logits, self.critic.score(hidden.to(self.critic.score.weight.dtype)).squeeze(-1)
        if is_llmlab(self.policy):
            padded = not bool(attention_mask.all())
            out = self.policy(ids, key_padding_mask=attention_mask.bool() if padded else None, return_hidden=True,
                              logits_to_keep=keep)
        else:
            out = self.policy(input_ids=ids, attention_mask=attention_mask, output_hidden_states=True,
                              logits_to_keep=keep)
        hidden = out.hidden_states[-1][:, -keep:]
        return out.logits, self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)

    def save_value(self, tok: ChatTokenizer, directory: Path) -> None:
        """The value function beside a saved policy: DIR/critic/ (a reward model folder) or
        DIR/value_head.safetensors."""
        if self.critic is not None:
            save_reward_model(self.critic, tok, directory / CRITIC_DIR)
        else:
            save_safetensors({k: v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()},
                             directory / VALUE_HEAD_FILE)


def with_value(policy: nn.Module, *, mode: str, critic_model: str, policy_path: str, resume: str,
               device: torch.device) -> PolicyWithValue:
    """The PPO module: resuming, the value function saved in the checkpoint; else a fresh head (shared)
    or a critic from `critic_model` (a reward model folder) or from the policy folder's weights."""
    from safetensors.torch import load_file

    if mode == "shared":
        module = PolicyWithValue(policy, None)
        if resume:
            module.value_head.load_state_dict(load_file(str(Path(resume) / VALUE_HEAD_FILE)))
        return module
    if resume:
        critic = load_reward_model(Path(resume) / CRITIC_DIR, device=device)[0]
    elif critic_model:
        critic = load_reward_model(critic_model, device=device)[0]
    else:
        critic = reward_model_from_policy(load_policy(policy_path, device=device)[0])
    return PolicyWithValue(policy, critic.train().requires_grad_(True))
