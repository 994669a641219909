"""Nash-MD (Munos et al. 2023, "Nash Learning from Human Feedback"), online as in Calandriello et
al. 2024 and TRL's Nash-MD trainer.

Each step samples y ~ π and y′ ~ the geometric mixture π_mix ∝ π^{1−β_m}·π_ref^{β_m} (token-level,
inside the rollout actor) for every prompt, asks the preference source P(y ≻ y′), and takes a
policy-gradient step on P(π ≻ π_mix) − β·KL(π‖π_ref) with y as the sample (`nash_md_loss`).
Only the policy samples are trained on; the mixture samples serve as the opponent.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from core.protocol import BatchExtras, Rollouts, RolloutTensors, Scores, TrainBatch, pair_rows
from learners.algos.base import AlgoConfig, Algorithm, Needs
from learners.algos.online_dpo import pair_preferences
from learners.losses import Normaliser, nash_md_loss, sequence_logprobs


@dataclass(frozen=True)
class NashMDExtras(BatchExtras):
    preference: torch.Tensor  # [B] P(policy sample ≻ mixture sample)


class NashMDConfig(AlgoConfig):
    name: Literal["nash_md"] = "nash_md"
    beta: float = Field(0.1, gt=0)  # KL(π‖π_ref) coefficient
    mixture_coef: float = Field(0.5, ge=0, le=1)  # β_m: weight of the reference in the mixture
    # β_m(t) = mixture_coef / (1 + mixture_decay·t). Nash-MD's last iterate converges to the Nash
    # equilibrium when the mixture weight shrinks with the step size; a fixed one converges to a
    # regularised point (tests/unit/test_preference_game.py shows both).
    mixture_decay: float = Field(0.0, ge=0)


class NashMD(Algorithm):
    Config = NashMDConfig
    cfg: NashMDConfig

    def needs(self) -> Needs:
        return Needs(samples_per_prompt=2, reference=True, pairs=True, mixture_sampling=True,
                     mixture_coef=self.cfg.mixture_coef)

    def mixture_coef(self, step: int) -> float:
        return self.cfg.mixture_coef / (1.0 + self.cfg.mixture_decay * step)

    def train_rows(self, num_prompts: int) -> int:
        return num_prompts

    def prepare(self, rollouts: Rollouts, scores: Scores, tensors: RolloutTensors):
        """Keep the policy sample of each pair (the first: see `RolloutActor.generate`)."""
        rows = pair_rows(np.asarray(rollouts.group_ids))
        prefs = torch.as_tensor(pair_preferences(scores, rows), dtype=torch.float32)
        keep = torch.as_tensor(rows[:, 0])
        batch = tensors.select(keep).batch(torch.zeros(len(keep)), NashMDExtras(preference=prefs))
        return batch, {"train/win_rate_vs_mixture": float(prefs.mean())}

    def loss(self, batch: TrainBatch, logprobs: torch.Tensor, norm: Normaliser):
        mask = batch.response_mask
        seq = sequence_logprobs(logprobs, mask)
        ref = sequence_logprobs(batch.ref_logprobs, mask)
        loss = nash_md_loss(seq, ref, batch.extras.preference, self.cfg.beta).sum() / max(norm.num_seqs, 1)
        with torch.no_grad():
            kl = (seq - ref).sum() / max(norm.num_tokens, 1)
        return loss, {"loss/policy": loss.detach(), "train/kl": kl}
