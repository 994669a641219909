"""Learner -> rollout weight transfer behind one interface; `make_weight_sync` picks one.

`SharedMemorySync`: the synchronous loop with rank 0 and every rollout actor on one node (ZeRO
stage 0, float32, CPU): rank 0's parameters live in a shared-memory file and rollout actors reload
from them in place, so nothing is copied before the reload (learners/shared_weights.py).
`ObjectStoreSync` is the general path (asynchronous loop, several nodes): rank 0 puts its weights
in the Ray object store once, in buckets, and every rollout actor reloads them in place,
starting on the first bucket while rank 0 exports the next, so export and reload overlap (wire
format: `core/wire.py`). `CollectiveSync`, what `auto` takes wherever shared memory cannot be
used: a per-run process group between learner rank 0 and every rollout actor (gloo on CPU, NCCL
when both ends are on GPUs), over which rank 0 broadcasts flat buckets that each actor reloads
from as they arrive (core/collective.py); actors on rank 0's node read the packed buckets in
shared memory instead of over the wire. Nothing goes through the object store.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod

from cluster.faults import first_line
from core.collective import WeightSyncError
from core.config import ConfigError


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

    @abstractmethod
    def catch_up(self, slots: list[int], version: int) -> bool:
        """Bring new rollout actors (restarted or added, `slots`) to the learner's current weights,
        as `version`, before any request reaches them; after actors were removed, `slots` is
        empty. True if every rollout actor now holds `version` (the collective re-forms its group
        and sends to all), False if only the new ones do."""


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

    def catch_up(self, slots: list[int], version: int) -> bool:
        if slots:
            self.rollouts.start_load_weights(self.learners.export_weights(), version, slots)
            self.learners.check_export()
            self.rollouts.finish_load_weights()
        return False

    @property
    def last_reload_s(self) -> float:
        return self.rollouts.last_reload_s


class SharedMemorySync(WeightSync):
    """Rollout actors map rank 0's parameters once; a sync is their reload from that memory. The
    learner must not step while they read: only for the synchronous loop
    (`cluster.recipe.shared_memory_blocker`)."""

    name = "shared_memory"

    def __init__(self, learners, rollouts):
        self.learners, self.rollouts = learners, rollouts
        self.share()

    def share(self) -> None:
        descriptor = self.learners.share_weights()
        self.rollouts.attach_shared_weights(descriptor)
        self.learners.unlink_shared_weights(descriptor)  # mapped by every reader: no name left behind

    def start(self, version: int) -> None:
        self.rollouts.start_load_shared_weights(version)

    def finish(self) -> None:
        self.rollouts.finish_load_weights()

    def catch_up(self, slots: list[int], version: int) -> bool:
        """The file's name is gone once mapped, so a new reader needs a new file: rank 0 moves its
        parameters again and every actor maps the new one."""
        if slots:
            self.share()
            self.rollouts.start_load_shared_weights(version, slots)
            self.rollouts.finish_load_weights()
        return False

    @property
    def last_reload_s(self) -> float:
        return self.rollouts.last_reload_s


class CollectiveSync(WeightSync):
    """Rank 0 broadcasts to every rollout actor over the run's own process group.

    `start` queues a receive on every actor (after the requests already sent to it, as the other
    paths do) and has rank 0 pack its weights, which a sender thread broadcasts once every actor
    is in its receive; the learner trains on meanwhile. A receiver that dies or fails, or a
    transfer that outlasts `timeout_s`, becomes a `WeightSyncError` naming the actor. On CPU,
    actors on rank 0's node read its packed buffers in shared memory instead of joining the
    group (`share_on_node=False`: every actor joins it, as across nodes).
    """

    name = "collective"

    def __init__(self, learners, rollouts, timeout_s: float, devices: list[str] | None = None,
                 ready_timeout_s: float | None = None, share_on_node: bool = True):
        self.learners, self.rollouts, self.timeout_s = learners, rollouts, timeout_s
        self.share_on_node = share_on_node
        # Before the group (re-)forms, each actor's earlier requests, or a new actor's start.
        self.ready_timeout_s = 600 + timeout_s if ready_timeout_s is None else ready_timeout_s
        devices = devices or weight_devices(learners, rollouts)
        if why := collective_blocker(devices):
            raise ConfigError(f"train.weight_sync: collective impossible: {why}")
        self.backend = "gloo" if devices[0] == "cpu" else "nccl"
        self.layouts = learners.plan_weight_layouts()
        self.version: int | None = None
        self.receiving: list = []  # this sync's receive refs, in actor order
        self.last_reload_s = 0.0
        self.form()

    def form(self) -> None:
        """A new group of rank 0 and every current rollout actor (each replaces its old one), once
        every actor is idle: a join queues behind the actor's requests (or a new actor's start),
        and rank 0 waits only `timeout_s` for the others to join."""
        import ray

        from cluster.placement import actor_record

        rollouts, world = self.rollouts, len(self.rollouts.actors) + 1
        self.members = list(rollouts.actors)
        nodes = [actor_record(a).get("Address", {}).get("NodeID") or "unknown" for a in self.members]
        self.names = [f"rollout actor {i} (node {node[:8]})" for i, node in enumerate(nodes)]
        self._wait([*[a.ready.remote() for a in self.members], ray.put(None)],
                   "waiting for the rollout actors to finish their requests", self.ready_timeout_s)
        learner_node = actor_record(self.learners.actors[0]).get("Address", {}).get("NodeID")
        local = [i + 1 for i, node in enumerate(nodes)
                 if self.share_on_node and self.backend == "gloo" and learner_node and node == learner_node]
        host, port, shared = self.learners.open_weight_group(world, self.timeout_s, bool(local))
        local = local if shared else []
        self.address = (host, port)
        self.local_ranks = local  # read rank 0's buffers in shared memory; the rest join the group
        group_ranks = [r for r in range(world) if r not in local]
        try:
            self._wait([*rollouts.join_weight_group(self.backend, self.layouts, host, port, self.timeout_s,
                                                    group_ranks, shared),
                        self.learners.join_weight_group(self.backend, self.layouts, world, self.timeout_s,
                                                        group_ranks, local)],
                       "joining the weight-broadcast group")
        except WeightSyncError:
            from core.collective import request_abort

            request_abort(*self.address, None)  # the others stop waiting for the dead member
            raise

    def start(self, version: int) -> None:
        self.finish()
        self.version = version
        self.receiving = self.rollouts.start_receive_weights(version)
        self.learners.start_broadcast(version)

    def finish(self) -> None:
        """Wait for the last sync. A receiver that died is replaced when the rollout role restarts
        actors (its `after_restart` re-forms the group and sends the weights again); else, or for
        a receiver that hangs or fails, `WeightSyncError` naming it."""
        if self.version is None:
            return
        version, receiving, self.version = self.version, self.receiving, None
        try:
            seconds = self._wait([*receiving, self.learners.finish_broadcast()], f"the weight sync of version {version}")
        except WeightSyncError as error:
            from core.collective import request_abort

            request_abort(*self.address, version)  # rank 0 may still wait for a dead receiver
            pool = getattr(self.rollouts, "pool", None)
            if not error.dead or pool is None or pool.after_restart is None:
                raise
            for actor, cause in error.dead:  # their replacements re-form the group
                if actor in pool.actors:
                    pool.replace(pool.actors.index(actor), actor, cause)
            return
        self.last_reload_s = max(seconds[:-1])

    def catch_up(self, slots: list[int], version: int) -> bool:
        """New members need a new group: the sync in flight (if any) is abandoned, the group
        re-formed with every current actor, and `version` broadcast to all."""
        if self.version is not None:
            from core.collective import request_abort

            request_abort(*self.address, self.version)
            self.version = None
        pool = getattr(self.rollouts, "pool", None)
        if pool is not None:
            pool.replace_dead()  # known dead members are replaced before the forming starts
        try:
            self.form()
        except WeightSyncError as error:
            if not error.dead or pool is None:
                raise
            for actor, cause in error.dead:  # their replacements are brought up next, re-forming again
                if actor in pool.actors:
                    pool.replace(pool.actors.index(actor), actor, cause)
            return False
        self.start(version)
        self.finish()
        return True

    def _wait(self, refs: list, what: str, timeout_s: float | None = None) -> list:
        """ray.get of `refs` (one per rollout actor, then rank 0's) that names the rollout actor
        that died or failed, as soon as one does (`WeightSyncError.dead`: those that died), or
        that has not answered within `timeout_s` (none: no deadline). Rank 0 dying is the
        learner's failure (`RankDied`)."""
        import ray

        from cluster.faults import RankDied

        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        pending = list(refs)
        while pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, pending = ray.wait(pending, num_returns=1, timeout=left)
            if not done:
                late = [name for name, ref in zip(self.names, refs[:-1]) if ref in pending]
                raise WeightSyncError(f"{what} failed: {', '.join(late) or 'learner rank 0'} did not answer "
                                      f"within {timeout_s:g} s")
            try:
                ray.get(done[0])
            except ray.exceptions.RayActorError as e:
                if done[0] is refs[-1]:
                    raise RankDied(f"learner: rank 0 died during {what} ({first_line(e)})") from e
                raise self._error(what, refs, e) from None
            except Exception as e:
                raise self._error(what, refs, e) from None
        return ray.get(refs)

    def _error(self, what: str, refs: list, error: Exception) -> WeightSyncError:
        import ray

        out = WeightSyncError(f"{what} failed: {self._culprit(refs, error)}")
        out.dead = []
        for actor, ref in zip(self.members, refs[:-1]):
            try:
                ray.get(ref, timeout=0)
            except ray.exceptions.RayActorError as e:
                out.dead.append((actor, e))
            except Exception:
                pass
        return out

    def _culprit(self, refs: list, error: Exception) -> str:
        """The rollout actors that died or failed, else those that did not finish while others
        did (waiting a moment for their refs to settle), else the error itself."""
        import ray

        ray.wait(refs[:-1], num_returns=len(refs) - 1, timeout=min(5.0, self.timeout_s))
        failed, unfinished = [], []
        for name, ref in zip(self.names, refs[:-1]):
            try:
                ray.get(ref, timeout=0)
            except ray.exceptions.GetTimeoutError:
                unfinished.append(f"{name} did not finish")
            except ray.exceptions.ActorDiedError:
                failed.append(f"{name} died")
            except Exception as e:
                failed.append(f"{name}: {first_line(e)}")
        if failed:
            return "; ".join(failed)
        if unfinished and len(unfinished) < len(self.names):
            return "; ".join(unfinished)
        return first_line(error)


def weight_devices(learners, rollouts) -> list[str]:
    """Where learner rank 0's weights live, then each rollout actor's ("cpu" or "cuda:<uuid>")."""
    return [learners.weight_device(), *rollouts.weight_devices()]


def collective_blocker(devices: list[str]) -> str | None:
    """Why these ends cannot form a broadcast group (None: they can): gloo joins CPU processes,
    NCCL GPU processes on distinct GPUs."""
    kinds = {d.split(":")[0] for d in devices}
    if len(kinds) > 1:
        return "learner rank 0 and the rollout actors hold their weights on different kinds of device"
    if kinds == {"cuda"} and len(set(devices)) < len(devices):
        return "two of its processes share a GPU, and NCCL joins one process per GPU"
    return None


def make_weight_sync(cfg, learners, rollouts) -> WeightSync:
    """`train.weight_sync`: auto takes shared memory where it works, else the collective where
    it works, else the object store."""
    from cluster.placement import node_ids
    from cluster.recipe import shared_memory_blocker

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
    if mode == "object_store":
        return ObjectStoreSync(learners, rollouts)
    devices = weight_devices(learners, rollouts)
    if mode == "auto" and collective_blocker(devices):  # e.g. rollout and learner on one GPU
        return ObjectStoreSync(learners, rollouts)
    from cluster.faults import phase_timeouts

    return CollectiveSync(learners, rollouts, cfg.train.sync_timeout_s, devices,
                          ready_timeout_s=phase_timeouts(cfg)["generate"])
