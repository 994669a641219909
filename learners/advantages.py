"""Advantage estimators as pure tensor functions."""
from __future__ import annotations

import torch


def group_normalized_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor, scale: str = "std", eps: float = 1e-6
) -> torch.Tensor:
    """GRPO advantages: each reward minus its group's mean, optionally over the group's std.

    rewards: [N] float, group_ids: [N] int (samples of one prompt share an id) -> [N].

        A_i = (r_i - mean_g(r)) / (std_g(r) + eps)   scale="std"  (Shao et al. 2024, DeepSeekMath)
        A_i =  r_i - mean_g(r)                        scale="none" (Dr.GRPO, Liu et al. 2025)

    std_g is the sample standard deviation (Bessel-corrected, n-1), as in TRL; a group of one
    sample gets advantage 0.
    """
    if scale not in ("std", "none"):
        raise ValueError(f"advantage scale must be 'std' or 'none', got {scale!r}")
    rewards = rewards.float()
    _, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    counts = counts.float()
    sums = torch.zeros_like(counts).index_add_(0, inverse, rewards)
    means = sums / counts
    centered = rewards - means[inverse]
    if scale == "none":
        return centered
    sq = torch.zeros_like(counts).index_add_(0, inverse, centered**2)
    std = torch.sqrt(sq / (counts - 1).clamp(min=1))
    # A zero-spread group has centered == 0; the clamp keeps eps=0 from turning that into 0/0.
    return centered / (std[inverse] + eps).clamp(min=torch.finfo(centered.dtype).tiny)
