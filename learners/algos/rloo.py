"""RLOO: REINFORCE with a leave-one-out baseline (Ahmadian et al. 2024, "Back to Basics").

prepare: A_i = r_i - mean_{j≠i, same prompt} r_j = G/(G-1) · (r_i - mean_g r)
loss:    GRPO's clipped surrogate (+ optional k3 KL term), so only the baseline differs.
"""
from __future__ import annotations

from typing import Literal

import torch

from learners.algos.grpo import GRPO, GRPOConfig


def leave_one_out_advantages(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """rewards [N], group_ids [N] -> [N]: each reward minus the mean of the others in its group.

        A_i = r_i - (Σ_{j∈g} r_j - r_i) / (n_g - 1);   a one-sample group gets 0.
    """
    rewards = rewards.float()
    _, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(counts)).index_add_(0, inverse, rewards)
    others = (counts[inverse] - 1).float()
    baseline = (sums[inverse] - rewards) / others.clamp(min=1)
    return torch.where(others > 0, rewards - baseline, torch.zeros_like(rewards))


class RLOOConfig(GRPOConfig):
    name: Literal["rloo"] = "rloo"


class RLOO(GRPO):
    Config = RLOOConfig

    def advantages(self, rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
        return leave_one_out_advantages(rewards, group_ids)
