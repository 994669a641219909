"""GRPO (Shao et al. 2024), with the Dr.GRPO and DAPO variants as config fields.

prepare: A_i = group-normalised sequence reward (std or none), broadcast over the response.
loss:    clipped surrogate on ρ = π/π_rollout  +  kl_coef · k3(π, π_ref), aggregated by
         `loss_agg` (token_mean | seq_mean | constant).
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from core.protocol import Rollouts, RolloutTensors, Scores, TrainBatch
from learners.advantages import group_normalized_advantages
from learners.algos.base import Algorithm, Needs, PolicyGradientConfig, clipped_policy_loss
from learners.losses import Normaliser


class GRPOConfig(PolicyGradientConfig):
    name: Literal["grpo"] = "grpo"
    group_size: int = Field(8, ge=2)
    clip_eps_high: float | None = Field(None, gt=0)  # DAPO clip-higher; None: same as clip_eps
    kl_coef: float = Field(0.0, ge=0)
    adv_scale: Literal["std", "none"] = "std"
    loss_agg: Literal["token_mean", "seq_mean", "constant"] = "token_mean"


class GRPO(Algorithm):
    Config = GRPOConfig
    cfg: GRPOConfig

    def needs(self) -> Needs:
        return Needs(samples_per_prompt=self.cfg.group_size, reference=self.cfg.kl_coef > 0,
                     old_logprobs=self.cfg.is_correction != "none")

    def advantages(self, rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
        """Sequence-level advantages [N]; the one thing group-baseline variants override."""
        return group_normalized_advantages(rewards, group_ids, scale=self.cfg.adv_scale)

    def prepare(self, rollouts: Rollouts, scores: Scores, tensors: RolloutTensors):
        rewards = torch.as_tensor(scores.values, dtype=torch.float32)
        group_ids = torch.as_tensor(rollouts.group_ids)
        advantages = self.advantages(rewards, group_ids)
        batch = tensors.batch(advantages)
        # Groups whose samples all got the same reward carry no signal.
        _, inverse = torch.unique(group_ids, return_inverse=True)
        empty = torch.zeros(int(inverse.max()) + 1)
        spread = (empty.scatter_reduce(0, inverse, rewards, "amax", include_self=False)
                  - empty.scatter_reduce(0, inverse, rewards, "amin", include_self=False))
        return batch, {"train/solved_none_or_all_frac": float((spread == 0).float().mean())}

    def loss(self, batch: TrainBatch, logprobs: torch.Tensor, norm: Normaliser):
        cfg = self.cfg
        return clipped_policy_loss(batch, logprobs, norm, cfg.clip_eps, cfg.clip_eps_high or cfg.clip_eps,
                                   cfg.kl_coef, cfg.loss_agg, cfg.is_correction, cfg.is_cap, cfg.is_band)
