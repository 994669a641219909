"""Typed fan-out wrappers, one per role: `rollouts.generate(...)`, `learners.update(...)`.

Each wrapper owns its Ray actors and hides how work is split across them. `spawn` places one
actor per worker in the role's placement group; `RankGroup` is the plumbing every group of
DeepSpeed ranks shares (the policy and critic of `train`, the reward model of `train-rm`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import time

import numpy as np
import ray
import torch

from actors.critic import CriticActor
from actors.learner import LearnerActor
from actors.reference import ReferenceActor
from actors.reward import RewardActor
from actors.reward_model import RewardModelTrainerActor
from actors.rollout import RolloutActor, WeightsBehind
from cluster.console import LOG_NAME_ENV, name_actor
from cluster.faults import ActorPool, FaultLog, PhaseTimeout, RankDied, first_line
from cluster.placement import place_role, stop_role, threads_for, worker_env
from cluster.recipe import RecipeConfig, RoleConfig
from core.ops import split_bounds
from core.protocol import Prompts, Rollouts, SamplingSpec, Scores, TermScores, TrainBatch
from learners.engine import num_micro_batches
from rewards.base import PairwiseReward
from rewards.combine import Combiner, token_rewards
from rewards.registry import REWARDS


class Spawner:
    """Makes the actors of role `name`: worker i in bundle i of the role's placement group, named
    `<name>-<i>` (its log file's name, cluster/console.py, and how errors name it). Called again
    for a slot whose actor died (the bundle is free again), or for a slot past the recipe's
    workers (an added worker: the same resources, outside the placement group). Ray takes
    `concurrency_groups` (name: threads) only where the class is made remote, not in `.options`."""

    def __init__(self, cls, name: str, role: RoleConfig, strategy: str, args_for,
                 concurrency_groups: dict[str, int] | None = None):
        self.name, self.role, self.args_for = name, role, args_for
        self.options = place_role(name, role, strategy)
        self.remote_cls = (ray.remote(concurrency_groups=concurrency_groups)(cls) if concurrency_groups
                           else ray.remote(cls))

    def __call__(self, i: int):
        extra = {"num_cpus": self.role.num_cpus, "num_gpus": self.role.num_gpus,
                 **({"resources": dict(self.role.resources)} if self.role.resources else {})}
        opts = self.options[i] if i < len(self.options) else extra
        env = worker_env(self.role, {LOG_NAME_ENV: f"{self.name}-{i}"})
        actor = self.remote_cls.options(**opts, runtime_env=env, name=None).remote(*self.args_for(i))
        name_actor(actor, f"{self.name}-{i}")
        return actor

    def all(self) -> list:
        return [self(i) for i in range(self.role.num_workers)]

    def room(self, count: int) -> int:
        """How many of `count` more workers the cluster's free resources hold now."""
        free = ray.available_resources()
        need = {"CPU": self.role.num_cpus, "GPU": self.role.num_gpus, **self.role.resources}
        return min([count] + [int(free.get(k, 0) // v) for k, v in need.items() if v > 0])


def spawn(cls, name: str, role: RoleConfig, strategy: str, args_for,
          concurrency_groups: dict[str, int] | None = None) -> list:
    """One Ray actor of `cls` per worker of role `name`, in the role's placement group (`Spawner`)."""
    return Spawner(cls, name, role, strategy, args_for, concurrency_groups).all()


def get_all(refs: list, actors: list, timeout: float | None = None, what: str = "ranks") -> list:
    """ray.get that fails fast: when one rank raises, the others may be blocked in a collective
    waiting for it, so kill them all instead of waiting for the process-group timeout. A rank
    that died is `RankDied`; no answer from every rank within `timeout` seconds, `PhaseTimeout`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pending = list(refs)
    while pending:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        done, pending = ray.wait(pending, num_returns=1, timeout=left)
        if not done:
            slow = [i for i, r in enumerate(refs) if r in pending]
            for a in actors:
                ray.kill(a)
            raise PhaseTimeout(f"{what}: rank(s) {slow} gave no answer within {timeout:g} s")
        try:
            ray.get(done[0])
        except Exception as e:
            for a in actors:
                ray.kill(a)
            if isinstance(e, ray.exceptions.RayActorError):
                raise RankDied(f"{what}: rank {refs.index(done[0])} died ({first_line(e)})") from e
            raise
    return ray.get(refs)


def role_pool(name: str, spawner: Spawner, actors: list, role: RoleConfig, log: FaultLog | None) -> ActorPool:
    return ActorPool(name, actors, spawner, getattr(role, "max_restarts", 0), log)


@dataclass
class PendingRollouts:
    """Rollouts in generation: one ticket per chunk of prompts, in prompt order."""

    pool: ActorPool
    tickets: list
    offsets: list[int]  # index of each chunk's first prompt (its group-id offset)
    phase: str = "generate"
    _result: Rollouts | None = None

    @property
    def refs(self) -> list:
        """Each chunk's current ref (a chunk sent again after its actor died has a new one)."""
        return [t.ref for t in self.tickets]

    def result(self) -> Rollouts:
        if self._result is None:
            self._result = Rollouts.concat(self.pool.results(self.tickets, self.phase), self.offsets)
        return self._result


class RolloutGroup:
    """vLLM engines, one per actor; worker i's engine is seeded with `seed + i`.

    `interrupt` (`rollout.interrupt`): weight loads go to each actor's "control" concurrency group
    and start at once, pausing a generation in progress, which then goes on under the new weights;
    without it they queue behind the requests already sent. Requests run one at a time, in order."""

    def __init__(self, role: RoleConfig, strategy: str, model_path: str, max_model_len: int, dtype: str = "float32",
                 seed: int = 0, kv_cache_gib: float = 1.0, gpu_memory_utilization: float = 0.4,
                 reference_path: str | None = None, interrupt: bool = False, log: FaultLog | None = None):
        self.interrupt = interrupt
        spawner = Spawner(RolloutActor, "rollout", role, strategy, lambda i: (
            model_path, max_model_len, kv_cache_gib, gpu_memory_utilization, dtype, seed + i, reference_path),
            concurrency_groups={"control": 1} if interrupt else None)
        actors = spawner.all()
        self.start_s = max(ray.get([a.ready.remote() for a in actors]))
        self.pool = role_pool("rollout", spawner, actors, role, log)
        # A sync being repaired (a receiver died) leaves the others' requests behind their weights.
        self.pool.retryable = lambda error: isinstance(getattr(error, "cause", None), WeightsBehind)
        self.reloads: list[tuple[object, object]] = []  # (ref, actor) of each queued weight load
        self.last_reload_s = 0.0

    @property
    def actors(self) -> list:
        """The actors that take part in weight syncs: every one not removed (`rewardflow scale`)."""
        return [a for i, a in enumerate(self.pool.actors) if i not in self.pool.removed]

    @classmethod
    def for_recipe(cls, cfg: RecipeConfig, model_path: str, reference_path: str | None = None,
                   min_model_len: int | None = None, log: FaultLog | None = None) -> "RolloutGroup":
        """`min_model_len`: a longer context than generation needs (self-judge prompts)."""
        r = cfg.rollout
        max_len = max(r.max_prompt_len + max(r.max_new_tokens, cfg.train.eval_max_new_tokens), min_model_len or 0)
        return cls(r, cfg.cluster.placement_strategy, model_path, max_len, cfg.model.dtype, cfg.train.seed,
                   r.kv_cache_gib, r.gpu_memory_utilization, reference_path, r.interrupt, log)

    def submit(self, prompts: Prompts, spec: SamplingSpec, chunk_prompts: int | None = None,
               min_version: int = 0, phase: str = "generate") -> PendingRollouts:
        """Send the prompts out in chunks (default: one per actor) to the least-loaded actors.
        `min_version`: the newest weights sent before; no token is generated with older ones."""
        size = chunk_prompts or -(-len(prompts) // len(self.pool.live()))
        offsets = list(range(0, len(prompts), size))
        # A chunk's spec knows where the chunk starts: each response's seed is its place in the batch.
        tickets = [self.pool.submit(lambda a, lo=lo: a.generate.remote(
            prompts.select(list(range(lo, min(lo + size, len(prompts))))), replace(spec, first_prompt=lo),
            min_version), min(size, len(prompts) - lo)) for lo in offsets]
        return PendingRollouts(self.pool, tickets, offsets, phase)

    def generate(self, prompts: Prompts, spec: SamplingSpec, min_version: int = 0, phase: str = "generate") -> Rollouts:
        return self.submit(prompts, spec, min_version=min_version, phase=phase).result()

    def _load_method(self, actor, name: str):
        """`actor.<name>` for a weight load: with `interrupt`, in the actor's control group, so it
        starts at once; else in the default group, after the requests already sent."""
        method = getattr(actor, name)
        return method.options(concurrency_group="control") if self.interrupt else method

    def _targets(self, slots: list[int] | None) -> list:
        return self.actors if slots is None else [self.pool.actors[s] for s in slots]

    def start_load_weights(self, bucket_refs: list, version: int, slots: list[int] | None = None) -> None:
        """Queue the reload of the weights in `bucket_refs` (refs of wire-form buckets) on every
        actor (or those of `slots`). Without `interrupt` it runs after the requests already sent
        to that actor, so no generation mixes versions; with it, it starts at once and generation
        in progress goes on under the new weights. Either way no request sent later starts on
        older weights."""
        self._collect_reloads(wait=False)
        self.reloads += [(self._load_method(a, "load_weights").remote(bucket_refs, version), a)
                         for a in self._targets(slots)]

    def attach_shared_weights(self, descriptor: dict) -> None:
        ray.get([a.attach_shared_weights.remote(descriptor) for a in self.actors])

    def join_weight_group(self, backend: str, layouts: list, host: str, port: int, timeout_s: float,
                          group_ranks: list[int], shared: str | None) -> list:
        """Refs of every actor joining the broadcast group as rank i + 1 (rank 0: the learner);
        those outside `group_ranks` map rank 0's buffers at `shared` instead."""
        world = len(self.actors) + 1
        return [a.join_weight_group.remote(backend, layouts, host, port, i + 1, world, timeout_s, group_ranks,
                                           None if i + 1 in group_ranks else shared)
                for i, a in enumerate(self.actors)]

    def start_receive_weights(self, version: int) -> list:
        """Queue a receive of the learner's broadcast on every actor (same ordering as
        `start_load_weights`); the refs, in actor order."""
        return [self._load_method(a, "receive_weights").remote(version) for a in self.actors]

    def weight_devices(self) -> list[str]:
        return ray.get([a.weight_device.remote() for a in self.actors])

    def start_load_shared_weights(self, version: int, slots: list[int] | None = None) -> None:
        """Queue a reload from the learner's shared-memory parameters on every actor (or those of
        `slots`; same ordering as `start_load_weights`)."""
        self._collect_reloads(wait=False)
        self.reloads += [(self._load_method(a, "load_shared_weights").remote(version), a)
                         for a in self._targets(slots)]

    def finish_load_weights(self) -> float:
        """Wait for every queued reload; the slowest finished reload's own seconds. An actor that
        died meanwhile is replaced, and the replacement loads the current weights first."""
        self._collect_reloads(wait=True)
        return self.last_reload_s

    def _collect_reloads(self, wait: bool) -> None:
        if not self.reloads:
            return
        refs = [r for r, _ in self.reloads]
        done = set(ray.wait(refs, num_returns=len(refs), timeout=0)[0]) if not wait else set(refs)
        finished = [(r, a) for r, a in self.reloads if r in done]
        self.reloads = [(r, a) for r, a in self.reloads if r not in done]
        if finished:
            seconds = [s for s in self.pool.check([r for r, _ in finished], [a for _, a in finished], "weight_sync")
                       if s is not None]
            if seconds:
                self.last_reload_s = max(seconds)

    def stop(self) -> None:
        stop_role("rollout", self.actors)

    def checksums(self) -> list[float]:
        return ray.get([a.checksum.remote() for a in self.actors])

    def judge(self, questions: list[str], responses: list[str], judge, chunk: int | None = None) -> JudgeResult:
        """Self-judging on the rollout engines: the (question, response) rows go out in chunks
        (default: one per actor) to the least-loaded actors, as generation requests do."""
        size = chunk or -(-len(responses) // len(self.pool.live()))
        tickets = [self.pool.submit(lambda a, lo=lo: a.judge.remote(
            questions[lo:lo + size], responses[lo:lo + size], judge), min(size, len(responses) - lo))
            for lo in range(0, len(responses), size)]
        parts = self.pool.results(tickets, "judge")
        return JudgeResult([texts for part in parts for texts in part[0]], [p[1] for p in parts], [p[2] for p in parts])


@dataclass(frozen=True)
class JudgeResult:
    texts: list[list[str]]  # per response, its judgments
    versions: list[int]  # per request, the policy version that judged
    checksums: list[float]  # per request, that engine's weight checksum when it judged


@dataclass
class PendingScores:
    """Scores of pending rollouts: each chunk is scored as soon as it is generated (the reward
    call takes the chunk's ref, so Ray starts it when the chunk exists); combined on `result`.
    A chunk whose rollouts were generated again (their actor died) is scored again."""

    pool: ActorPool
    tickets: list
    scored_refs: list  # the rollout ref each ticket scores
    rollouts: PendingRollouts
    combine: object

    def result(self) -> Scores:
        rollouts = self.rollouts.result()
        for k, ref in enumerate(self.rollouts.refs):
            if ref is not self.scored_refs[k]:
                self.tickets[k] = self.pool.submit(lambda a, r=ref: a.score.remote(r))
                self.scored_refs[k] = ref
        raw = TermScores.concat(self.pool.results(self.tickets, "score"))
        return self.combine(raw, rollouts)


class RewardGroup:
    """Reward actors score their shares of the batch term by term; the driver combines the whole
    step's terms here, in one place, since normalisation must see every sample."""

    def __init__(self, cfg: RecipeConfig, tokenizer_path: str | None = None, log: FaultLog | None = None):
        self.weights = {t.name: t.weight for t in cfg.rewards}
        spawner = Spawner(RewardActor, "reward", cfg.reward, cfg.cluster.placement_strategy,
                          lambda i: (cfg.rewards, cfg.reward.timeout_s, tokenizer_path))
        self.pool = role_pool("reward", spawner, spawner.all(), cfg.reward, log)
        pointwise = [t for t in cfg.rewards if not issubclass(REWARDS[t.name], PairwiseReward)]
        self.combiner = Combiner(pointwise, cfg.reward.combine) if pointwise else None

    @property
    def actors(self) -> list:
        return [a for i, a in enumerate(self.pool.actors) if i not in self.pool.removed]

    def _combine(self, raw: TermScores, rollouts: Rollouts) -> Scores:
        values = (self.combiner(raw.terms, rollouts.group_ids) if self.combiner is not None
                  else np.zeros(len(raw.errors), dtype=np.float64))
        tokens = None
        if raw.token_terms:
            tokens = token_rewards(values, raw.token_terms, self.weights,
                                   [len(r) for r in rollouts.response_ids])
        return Scores(values=values, terms=raw.terms, errors=raw.errors, preferences=raw.preferences,
                      token_rewards=tokens)

    def state(self) -> dict:
        return {"combiner": self.combiner.state() if self.combiner is not None else None}

    def load_state(self, state: dict) -> None:
        if self.combiner is not None:
            self.combiner.load_state(state["combiner"])

    def submit(self, pending: PendingRollouts) -> PendingScores:
        refs = pending.refs
        tickets = [self.pool.submit(lambda a, r=ref: a.score.remote(r)) for ref in refs]
        return PendingScores(self.pool, tickets, list(refs), pending, self._combine)

    def accuracy(self, rollouts: Rollouts) -> Scores:
        bounds = split_bounds(len(rollouts), len(self.pool.live()))
        tickets = [self.pool.submit(lambda a, part=rollouts.select(slice(lo, hi)): a.accuracy.remote(part))
                   for lo, hi in zip(bounds, bounds[1:]) if hi > lo]
        raw = TermScores.concat(self.pool.results(tickets, "eval"))
        return Scores(values=raw.terms["accuracy"], terms=raw.terms, errors=raw.errors)


class ReferenceGroup:
    def __init__(self, cfg: RecipeConfig, model_path: str, log: FaultLog | None = None):
        ref = cfg.reference
        spawner = Spawner(ReferenceActor, "reference", ref, cfg.cluster.placement_strategy, lambda i: (
            model_path, cfg.model.dtype, ref.micro_batch_size, cfg.rollout.temperature, threads_for(), ref.share_prompt))
        self.pool = role_pool("reference", spawner, spawner.all(), ref, log)
        self.pool.after_restart = self._catch_up
        self.bucket_refs: list | None = None  # the policy weights it follows, if any
        self.tokens = 0  # positions the last `logprobs` computed (`perf/reference_tokens`)

    @property
    def actors(self) -> list:
        return self.pool.actors

    def logprobs(self, batch: TrainBatch) -> torch.Tensor:
        n = len(self.actors)
        tickets = [self.pool.submit_to(i, lambda a, shard=batch.shard(i, n): a.logprobs.remote(shard))
                   for i in range(n)]
        results = self.pool.results(tickets, "reference")
        self.tokens = sum(tokens for _, tokens in results)
        return torch.cat([logprobs for logprobs, _ in results])

    def load_weights(self, bucket_refs: list) -> None:
        """Every reference actor loads the weights in `bucket_refs` (the policy's export), and a
        restarted one loads them again: the reference follows the policy, as iterative
        self-rewarding's M_t does."""
        self.bucket_refs = bucket_refs
        self._catch_up(list(range(len(self.actors))))

    def _catch_up(self, slots: list[int]) -> None:
        if self.bucket_refs is not None:
            actors = [self.actors[s] for s in slots]
            self.pool.check([a.load_weights.remote(*self.bucket_refs) for a in actors], actors, "weight_sync")


class RankGroup:
    """Data-parallel DeepSpeed ranks of one model (a `RankActor` subclass per rank): spawned in
    the role's placement group, joined into one process group at rank 0's address. Every call
    goes to all ranks and fails fast (`get_all`)."""

    def __init__(self, actor_cls, name: str, role: RoleConfig, strategy: str, args_for):
        self.name = name
        self.timeouts: dict[str, float] = {}  # phase -> seconds (`train.timeouts`)
        self.actors = spawn(actor_cls, name, role, strategy, args_for)
        addr, port = ray.get(self.actors[0].address.remote())
        self.setup_s = max(self.call("setup", addr, port))

    @property
    def world_size(self) -> int:
        return len(self.actors)

    def call(self, method: str, *args, phase: str | None = None) -> list:
        """`method(*args)` on every rank; the results in rank order."""
        return self.get_all([getattr(a, method).remote(*args) for a in self.actors], phase)

    def get_all(self, refs: list, phase: str | None = None) -> list:
        return get_all(refs, self.actors, self.timeouts.get(phase), f"{self.name} ({phase or 'setup'})")

    def finish_summed(self, refs: list, phase: str = "update") -> dict[str, float]:
        """Wait for per-rank results whose values are shares of global quantities: their sum."""
        results = self.get_all(refs, phase)
        return {k: sum(r[k] for r in results) for k in results[0]}

    def stop(self) -> None:
        stop_role(self.name, self.actors)


class LearnerGroup(RankGroup):
    """Data-parallel DeepSpeed ranks of one trained model: the policy (`learner` role) or, for
    algorithms that declare a critic, the value model (`critic` role)."""

    actor_cls = LearnerActor
    role = "learner"

    def __init__(self, cfg: RecipeConfig, model_path: str):
        lc = getattr(cfg, self.role)
        super().__init__(self.actor_cls, self.role, lc, cfg.cluster.placement_strategy, lambda i: (
            i, lc.num_workers, model_path, lc, cfg.algo, cfg.model.dtype, cfg.rollout.temperature,
            cfg.train.seed, threads_for()))
        self.micro_batch_size = lc.micro_batch_size
        self.bucket_bytes = int(cfg.train.sync_bucket_mb * 2**20)
        self.n_buckets: int | None = None  # planned at the first export
        self.exporting: list = []

    def start_update(self, batch: TrainBatch, algorithm, max_new_tokens: int) -> list:
        """Split the step's batch into mini-batches, shard each across ranks, start all steps;
        returns the pending refs (`finish_update` waits), so policy and critic train together."""
        world, unit = self.world_size, algorithm.rows_per_unit  # enough units: checked by RecipeConfig
        k = algorithm.cfg.mini_batches
        minis = batch.split(k, unit)
        norms = [algorithm.normaliser(m, max_new_tokens) for m in minis]
        shards = [[m.shard(r, world, unit) for m in minis] for r in range(world)]
        mb_units = max(1, self.micro_batch_size // unit)
        n_micro = [num_micro_batches([len(s[j]) // unit for s in shards], mb_units) for j in range(k)]
        return [a.update.remote(shards[r], norms, n_micro) for r, a in enumerate(self.actors)]

    def finish_update(self, refs: list) -> dict[str, float]:
        return self.finish_summed(refs)

    def update(self, batch: TrainBatch, algorithm, max_new_tokens: int) -> dict[str, float]:
        return self.finish_update(self.start_update(batch, algorithm, max_new_tokens))

    def export_weights(self) -> list:
        """ObjectRefs of rank 0's weights in buckets of at most `train.sync_bucket_mb`, in model
        order. All buckets are queued at once and each ref is ready as soon as rank 0 has exported
        its bucket, so a reader loads the first while later ones are still being exported. The
        other ranks' part (ZeRO-3 gathers) is awaited by `check_export`."""
        if self.n_buckets is None:
            self.n_buckets = self.call("plan_weight_buckets", self.bucket_bytes, phase="weight_sync")[0]
        calls = [[a.export_weights.remote(b) for a in self.actors] for b in range(self.n_buckets)]
        self.exporting = [ref for refs in calls for ref in refs[1:]]
        return [refs[0] for refs in calls]

    # -- the collective broadcast (cluster/weight_sync.CollectiveSync) ------------------------
    def plan_weight_layouts(self) -> list:
        """Every rank cuts the weights into the same buckets; rank 0's byte layouts of them."""
        return self.call("plan_weight_layouts", self.bucket_bytes)[0]

    def open_weight_group(self, world: int, timeout_s: float, share: bool) -> tuple[str, int, str | None]:
        return ray.get(self.actors[0].open_weight_group.remote(world, timeout_s, share))

    def join_weight_group(self, backend: str, layouts: list, world: int, timeout_s: float,
                          group_ranks: list[int], local: list[int]):
        return self.actors[0].join_weight_group.remote(backend, layouts, world, timeout_s, group_ranks, local)

    def weight_device(self) -> str:
        return ray.get(self.actors[0].weight_device.remote())

    def start_broadcast(self, version: int) -> None:
        """Every rank packs (ZeRO-3 gathers are collective); returns once rank 0 has the weights
        in its send buffers, while its sender thread broadcasts them."""
        self.call("start_broadcast", version, phase="weight_sync")

    def finish_broadcast(self):
        """Ref of rank 0's wait for the last broadcast (seconds, or `WeightSyncError`)."""
        return self.actors[0].finish_broadcast.remote()

    def share_weights(self) -> dict:
        """Rank 0's parameters moved into shared memory: the descriptor rollout actors map."""
        return self.call("share_weights")[0]

    def unlink_shared_weights(self, descriptor: dict) -> None:
        ray.get(self.actors[0].unlink_shared_weights.remote(descriptor))

    def check_export(self) -> None:
        """Wait for the other ranks' part of the last export (the ranks are killed if one failed)."""
        self.get_all(self.exporting, "weight_sync")
        self.exporting = []

    def save(self, out_dir: str) -> str:
        return self.call("save", out_dir)[0]

    def save_state(self, ckpt_dir: str) -> None:
        self.call("save_state", ckpt_dir, phase="checkpoint")

    def load_state(self, ckpt_dir: str) -> None:
        self.call("load_state", ckpt_dir, phase="checkpoint")


class CriticGroup(LearnerGroup):
    """The value model's ranks; `values` runs the forward pass the advantage estimate needs."""

    actor_cls = CriticActor
    role = "critic"

    def values(self, batch: TrainBatch) -> torch.Tensor:
        """V(s_t) for every response position [B, R], sharded over the ranks."""
        n = self.world_size
        shards = [batch.shard(i, n) for i in range(n)]
        # Same micro-batch count on every rank: ZeRO-3 forwards gather parameters collectively.
        n_micro = num_micro_batches([len(s) for s in shards], self.micro_batch_size)
        return torch.cat(self.get_all([a.values.remote(s, n_micro) for s, a in zip(shards, self.actors)], "critic"))


class RewardModelTrainerGroup(RankGroup):
    """The reward-model trainer's ranks (`rewardflow train-rm`): sums per-rank counts into
    held-out and training statistics."""

    def __init__(self, cfg, model_path: str):
        world = cfg.learner.num_workers
        super().__init__(RewardModelTrainerActor, "learner", cfg.learner, cfg.cluster.placement_strategy,
                         lambda i: (i, world, model_path, cfg, threads_for()))

    def _summed(self, method: str, *args) -> dict[str, float]:
        return self.finish_summed([getattr(a, method).remote(*args) for a in self.actors])

    def evaluate(self, pairs_ref) -> dict[str, float]:
        s = self._summed("evaluate", pairs_ref)
        n = max(s["count"], 1.0)
        return {"accuracy": s["correct"] / n, "loss": s["loss_sum"] / n, "margin": s["margin_sum"] / n}

    def train_epoch(self, pairs_ref, epoch: int) -> dict[str, float]:
        s = self._summed("train_epoch", pairs_ref, epoch)
        n = max(s["count"], 1.0)
        return {"loss": s["loss_sum"] / n, "accuracy": s["correct"] / n, "steps": s["steps"] / self.world_size}

    def save(self, out_dir: str) -> str:
        return self.call("save", out_dir)[0]
