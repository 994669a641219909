"""Learner -> rollout weight transfer behind one interface; `make_weight_sync` picks one.

`SharedMemorySync`: the synchronous loop with rank 0 and every rollout actor on one node (ZeRO
stage 0, float32, CPU): rank 0's parameters live in a shared-memory file and rollout actors reload
from them in place, so nothing is copied before the reload (learners/shared_weights.py).
`ObjectStoreSync` is the general path (asynchronous loop, several nodes): rank 0 puts its weights
in the Ray object store once, in buckets, and every rollout actor reloads them in place,
starting on the first bucket while rank 0 exports the next, so export and reload overlap. A
collective (gloo / NCCL) broadcast path for several nodes and GPUs is not built yet; it would be
one more `WeightSync` chosen by `make_weight_sync`. The wire format is `core/wire.py`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod


class WeightSync(ABC):
    name: str = ""  # `train.weight_sync` value (summary.json records which one ran)
    last_reload_s: float = 0.0  # the slowest rollout actor's own reload seconds, last finished sync

    @abstractmethod
    def start(self, version: int) -> None:
        """Send the learner's current weights as `version`; every rollout actor loads them after
        the requests it already has and before any later one."""

    @abstractmethod
    def finish(self) -> None:
        """Wait until the last `start` has reached every rollout actor."""

    def sync(self, version: int) -> None:
        self.start(version)
        self.finish()


class ObjectStoreSync(WeightSync):
    name = "object_store"

    def __init__(self, learners, rollouts):
        self.learners = learners
        self.rollouts = rollouts

    def start(self, version: int) -> None:
        self.rollouts.start_load_weights(self.learners.export_weights(), version)
        self.learners.check_export()

    def finish(self) -> None:
        self.rollouts.finish_load_weights()

    @property
    def last_reload_s(self) -> float:
        return self.rollouts.last_reload_s


class SharedMemorySync(WeightSync):
    """Rollout actors map rank 0's parameters once; a sync is their reload from that memory. The
    learner must not step while they read: only for the synchronous loop
    (`cluster.recipe.shared_memory_blocker`)."""

    name = "shared_memory"

    def __init__(self, learners, rollouts):
        self.rollouts = rollouts
        descriptor = learners.share_weights()
        rollouts.attach_shared_weights(descriptor)
        learners.unlink_shared_weights(descriptor)  # mapped by every reader: no name left behind

    def start(self, version: int) -> None:
        self.rollouts.start_load_shared_weights(version)

    def finish(self) -> None:
        self.rollouts.finish_load_weights()

    @property
    def last_reload_s(self) -> float:
        return self.rollouts.last_reload_s


def make_weight_sync(cfg, learners, rollouts) -> WeightSync:
    """`train.weight_sync`: auto takes shared memory where it works, else the object store."""
    from cluster.placement import node_ids
    from cluster.recipe import ConfigError, shared_memory_blocker

    mode = cfg.train.weight_sync
    if mode != "object_store":
        blocker = shared_memory_blocker(cfg)
        if blocker is None:
            learner_node = node_ids(learners.actors[:1])[0]
            if set(node_ids(rollouts.actors)) != {learner_node}:
                blocker = "rollout actors run on another node than learner rank 0"
        if blocker is None:
            return SharedMemorySync(learners, rollouts)
        if mode == "shared_memory":
            raise ConfigError(f"train.weight_sync: shared_memory impossible: {blocker}")
    return ObjectStoreSync(learners, rollouts)
