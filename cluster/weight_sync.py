"""Learner -> rollout weight transfer behind one interface.

`ObjectStoreSync` is the CPU / single-node path: rank 0's full state dict is put in the Ray
object store once and every rollout actor reloads it in place. An NCCL broadcast path
(GPU, multi-node) implements the same `sync`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod


class WeightSync(ABC):
    @abstractmethod
    def sync(self, version: int) -> None:
        """Make every rollout actor generate with the learner's current weights as `version`."""


class ObjectStoreSync(WeightSync):
    def __init__(self, learners, rollouts):
        self.learners = learners
        self.rollouts = rollouts
        self.last_reload_s = 0.0

    def sync(self, version: int) -> None:
        weights_ref = self.learners.export_weights()
        self.last_reload_s = self.rollouts.load_weights(weights_ref, version)


class NcclBroadcastSync(WeightSync):
    def __init__(self, *_, **__):
        raise NotImplementedError(
            "NCCL weight broadcast (GPU / multi-node) is not built yet; use the object-store path")

    def sync(self, version: int) -> None:  # pragma: no cover - never constructed
        raise NotImplementedError
