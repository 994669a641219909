"""ReMax (Li et al. 2023, "ReMax: A Simple, Effective, and Efficient Reinforcement Learning Method
for Aligning Large Language Models"): REINFORCE whose baseline is the reward of the greedy response.

prepare: A_i = r(x, y_i) − r(x, ŷ), with ŷ the greedy response to y_i's prompt x (the rollout
         returns one per prompt beside the sampled ones: `Needs.greedy_sample`), broadcast over
         y_i's tokens. The greedy rows are the baseline only and are left out of the batch.
loss:    GRPO's clipped surrogate on ρ = π/π_rollout (+ optional kl_coef·k3). On-policy with one
         epoch ρ = 1, and its gradient is the paper's REINFORCE gradient −A·∇log π(y).
Deviation: the paper draws one sample per prompt; `samples_per_prompt` > 1 share one baseline.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from core.protocol import Rollouts, RolloutTensors, Scores, TrainBatch
from learners.algos.base import Algorithm, Needs, PolicyGradientConfig, clipped_policy_loss
from learners.losses import Normaliser


def greedy_baseline_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, greedy: torch.Tensor) -> torch.Tensor:
    """rewards [N], group_ids [N] int, greedy [N] bool (one greedy row per group) -> [N].

        A_i = r_i − r_ĝ,   ĝ the greedy row of i's group;   greedy rows get 0.
    """
    rewards = rewards.float()
    _, inverse = torch.unique(group_ids, return_inverse=True)
    baseline = torch.zeros(int(inverse.max()) + 1).index_put_((inverse[greedy],), rewards[greedy])
    return torch.where(greedy, torch.zeros_like(rewards), rewards - baseline[inverse])


class ReMaxConfig(PolicyGradientConfig):
    name: Literal["remax"] = "remax"
    samples_per_prompt: int = Field(1, ge=1)
    kl_coef: float = Field(0.0, ge=0)
    loss_agg: Literal["token_mean", "seq_mean", "constant"] = "token_mean"


class ReMax(Algorithm):
    Config = ReMaxConfig
    cfg: ReMaxConfig

    def needs(self) -> Needs:
        return Needs(samples_per_prompt=self.cfg.samples_per_prompt, reference=self.cfg.kl_coef > 0,
                     old_logprobs=self.cfg.is_correction != "none", greedy_sample=True)

    def prepare(self, rollouts: Rollouts, scores: Scores, tensors: RolloutTensors):
        greedy = torch.as_tensor(rollouts.greedy, dtype=torch.bool)
        rewards = torch.as_tensor(scores.values, dtype=torch.float32)
        advantages = greedy_baseline_advantages(rewards, torch.as_tensor(rollouts.group_ids), greedy)
        sampled = torch.nonzero(~greedy).flatten()
        batch = tensors.select(sampled).batch(advantages[sampled])
        return batch, {"train/greedy_reward": float(rewards[greedy].mean()),
                       "train/beats_greedy_frac": float((advantages[sampled] > 0).float().mean())}

    def loss(self, batch: TrainBatch, logprobs: torch.Tensor, norm: Normaliser):
        cfg = self.cfg
        return clipped_policy_loss(batch, logprobs, norm, cfg.clip_eps, cfg.clip_eps, cfg.kl_coef, cfg.loss_agg,
                                   cfg.is_correction, cfg.is_cap, cfg.is_band)
