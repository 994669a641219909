"""Critic role: the value model (policy architecture + scalar head), one DeepSpeed rank per actor."""
from __future__ import annotations

import torch

from actors.learner import LearnerActor
from core.protocol import TrainBatch


class CriticActor(LearnerActor):
    """Same process-group and update plumbing as the policy learner; a different model and loss."""

    def load_model(self):
        from core.models import load_value_model

        return load_value_model(self.model_path, self.dtype)

    def learning_rate(self) -> float:
        return self.algo_cfg.critic_lr

    def build_engine(self, model, config: dict):
        from learners.algos.registry import build_algorithm
        from learners.engine import CriticEngine

        return CriticEngine(model, build_algorithm(self.algo_cfg), config, self.world_size,
                            share_prompt=self.learner_cfg.share_prompt)

    def values(self, batch: TrainBatch, n_micro: int) -> torch.Tensor:
        return self.engine.values(batch, n_micro)

    def export_weights(self):
        raise TypeError("the critic's weights are not synced to rollout actors")
