"""PPO with a learned critic (Schulman et al. 2017; RLHF form of Ouyang et al. 2022).

prepare: token rewards r_t = −kl_coef·(log π_rollout − log π_ref) on every token (kl_mode=reward)
         + the sequence score on the last token (step rewards: at each step's end); GAE(γ, λ) against the critic's values V(s_t)
         gives advantages and returns; advantages whitened over the step's batch.
loss:    clipped surrogate on ρ = π/π_rollout with token-level advantages (+ kl_coef·k3 as a loss
         term when kl_mode=loss).
critic:  clipped value loss ½·max((V − R)², (clip(V, V_old ± ε_v) − R)²), token mean.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from core.ops import masked_mean
from core.protocol import BatchExtras, Rollouts, RolloutTensors, Scores, TrainBatch
from learners.advantages import gae, whiten
from learners.algos.base import Algorithm, Needs, PolicyGradientConfig, clipped_policy_loss, token_level_rewards
from learners.losses import Normaliser, aggregate, clipped_value_loss


class PPOConfig(PolicyGradientConfig):
    name: Literal["ppo"] = "ppo"
    samples_per_prompt: int = Field(1, ge=1)
    clip_eps_high: float | None = Field(None, gt=0)
    value_clip: float | None = Field(0.2, gt=0)  # None: unclipped value loss
    critic_lr: float = Field(5e-6, gt=0)
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(0.95, ge=0, le=1)
    kl_coef: float = Field(0.0, ge=0)
    kl_mode: Literal["reward", "loss"] = "reward"
    whiten_advantages: bool = True
    loss_agg: Literal["token_mean", "seq_mean", "constant"] = "token_mean"


@dataclass(frozen=True)
class PPOExtras(BatchExtras):
    returns: torch.Tensor  # [B, R] GAE returns: the critic's regression target
    old_values: torch.Tensor  # [B, R] V(s_t) before the update (value clipping)


class PPO(Algorithm):
    Config = PPOConfig
    cfg: PPOConfig

    def needs(self) -> Needs:
        return Needs(samples_per_prompt=self.cfg.samples_per_prompt, reference=self.cfg.kl_coef > 0, critic=True,
                     old_logprobs=self.cfg.is_correction != "none")

    def prepare(self, rollouts: Rollouts, scores: Scores, tensors: RolloutTensors):
        cfg = self.cfg
        mask = tensors.response_mask
        values = tensors.values * mask
        in_reward = cfg.kl_mode == "reward" and cfg.kl_coef > 0
        token_rewards = token_level_rewards(scores, tensors, cfg.kl_coef if in_reward else 0.0)
        advantages, returns = gae(token_rewards, values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = whiten(advantages, mask)
        batch = tensors.batch(advantages, PPOExtras(returns=returns, old_values=values))
        return batch, {"train/values": float(masked_mean(values, mask)),
                       "train/returns": float(masked_mean(returns, mask))}

    def loss(self, batch: TrainBatch, logprobs: torch.Tensor, norm: Normaliser):
        cfg = self.cfg
        kl_coef = cfg.kl_coef if cfg.kl_mode == "loss" else 0.0
        return clipped_policy_loss(batch, logprobs, norm, cfg.clip_eps, cfg.clip_eps_high or cfg.clip_eps,
                                   kl_coef, cfg.loss_agg, cfg.is_correction, cfg.is_cap, cfg.is_band)

    def critic_loss(self, batch: TrainBatch, values: torch.Tensor, norm: Normaliser):
        mask = batch.response_mask
        per_token, clipped = clipped_value_loss(values, batch.extras.old_values, batch.extras.returns,
                                                self.cfg.value_clip)
        loss = aggregate(per_token, mask, "token_mean", norm)
        return loss, {"loss/value": loss.detach(),
                      "train/value_clip_frac": aggregate(clipped, mask, "token_mean", norm)}
