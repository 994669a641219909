"""REINFORCE++ (Hu 2025, "REINFORCE++: a simple and efficient approach for aligning LLMs").

prepare: token rewards r_t = −kl_coef·(log π_rollout − log π_ref) + score on the last token;
         A_t = returns-to-go Σ_{s≥t} γ^{s−t} r_s, whitened over the whole step's batch (the global
         normalisation replaces a critic). `baseline: group` subtracts each prompt's mean score
         first (the paper's REINFORCE++-baseline variant for several samples per prompt).
loss:    PPO clipped surrogate on ρ = π/π_rollout with those token-level advantages.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from core.protocol import Rollouts, RolloutTensors, Scores, TrainBatch
from learners.advantages import discounted_returns, group_normalized_advantages, whiten
from learners.algos.base import Algorithm, Needs, PolicyGradientConfig, clipped_policy_loss, token_level_rewards
from learners.losses import Normaliser


class ReinforcePPConfig(PolicyGradientConfig):
    name: Literal["reinforce_pp"] = "reinforce_pp"
    samples_per_prompt: int = Field(4, ge=1)
    baseline: Literal["none", "group"] = "none"
    gamma: float = Field(1.0, ge=0, le=1)
    kl_coef: float = Field(0.0, ge=0)
    loss_agg: Literal["token_mean", "seq_mean", "constant"] = "token_mean"


class ReinforcePP(Algorithm):
    Config = ReinforcePPConfig
    cfg: ReinforcePPConfig

    def needs(self) -> Needs:
        return Needs(samples_per_prompt=self.cfg.samples_per_prompt, reference=self.cfg.kl_coef > 0,
                     old_logprobs=self.cfg.is_correction != "none")

    def prepare(self, rollouts: Rollouts, scores: Scores, tensors: RolloutTensors):
        cfg = self.cfg
        mask = tensors.response_mask
        seq = torch.as_tensor(scores.values, dtype=torch.float32)
        if cfg.baseline == "group":
            seq = group_normalized_advantages(seq, torch.as_tensor(rollouts.group_ids), scale="none")
        token_rewards = token_level_rewards(scores, tensors, cfg.kl_coef, values=seq)
        advantages = whiten(discounted_returns(token_rewards, mask, cfg.gamma), mask)
        return tensors.batch(advantages), {}

    def loss(self, batch: TrainBatch, logprobs: torch.Tensor, norm: Normaliser):
        cfg = self.cfg
        return clipped_policy_loss(batch, logprobs, norm, cfg.clip_eps, cfg.clip_eps, 0.0, cfg.loss_agg,
                                   cfg.is_correction, cfg.is_cap, cfg.is_band)
