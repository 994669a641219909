"""Typed fan-out wrappers, one per role: `rollouts.generate(...)`, `learners.update(...)`.

Each wrapper owns its Ray actors and hides how work is split across them. `spawn` places one
actor per worker in the role's placement group; `RankGroup` is the plumbing every group of
DeepSpeed ranks shares (the policy and critic of `train`, the reward model of `train-rm`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import ray
import torch

from actors.critic import CriticActor
from actors.learner import LearnerActor
from actors.reference import ReferenceActor
from actors.reward import RewardActor
from actors.reward_model import RewardModelTrainerActor
from actors.rollout import RolloutActor
from cluster.console import LOG_NAME_ENV, name_actor
from cluster.placement import place_role, stop_role, threads_for, worker_env
from cluster.recipe import RecipeConfig, RoleConfig
from core.ops import split_bounds
from core.protocol import Prompts, Rollouts, SamplingSpec, Scores, TermScores, TrainBatch
from learners.engine import num_micro_batches
from rewards.base import PairwiseReward
from rewards.combine import Combiner, token_rewards
from rewards.registry import REWARDS


def spawn(cls, name: str, role: RoleConfig, strategy: str, args_for,
          concurrency_groups: dict[str, int] | None = None) -> list:
    """One Ray actor of `cls` per worker of role `name`, in the role's placement group;
    `args_for(i)` gives worker i's constructor arguments. Ray takes `concurrency_groups` (name:
    threads) only where the class is made remote, not in `.options`. Worker i is named
    `<name>-<i>`: its log file's name (cluster/console.py) and how errors name it."""
    options = place_role(name, role, strategy)
    remote_cls = ray.remote(concurrency_groups=concurrency_groups)(cls) if concurrency_groups else ray.remote(cls)
    actors = []
    for i, opts in enumerate(options):
        env = worker_env(role, {LOG_NAME_ENV: f"{name}-{i}"})
        actors.append(remote_cls.options(**opts, runtime_env=env, name=None).remote(*args_for(i)))
        name_actor(actors[-1], f"{name}-{i}")
    return actors


def get_all(refs: list, actors: list) -> list:
    """ray.get that fails fast: when one rank raises, the others may be blocked in a collective
    waiting for it, so kill them all instead of waiting for the process-group timeout."""
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        try:
            ray.get(done[0])
        except Exception:
            for a in actors:
                ray.kill(a)
            raise
    return ray.get(refs)


class LoadBalancer:
    """Sends each request to the actor with the least work in flight (by request size), so a
    slow or busy actor gets less; with equal actors it degenerates to round-robin."""

    def __init__(self, actors: list):
        self.actors = actors
        self.in_flight: list[list[tuple[object, int]]] = [[] for _ in actors]

    def pick(self, size: int, ref_of) -> object:
        """Call `ref_of(actor)` on the least-loaded actor; returns the ref."""
        for items in self.in_flight:
            if items:
                done, _ = ray.wait([r for r, _ in items], num_returns=len(items), timeout=0)
                items[:] = [(r, n) for r, n in items if r not in done]
        i = min(range(len(self.actors)), key=lambda k: (sum(n for _, n in self.in_flight[k]), k))
        ref = ref_of(self.actors[i])
        self.in_flight[i].append((ref, size))
        return ref


@dataclass
class PendingRollouts:
    """Rollouts in generation: one ref per chunk of prompts, in prompt order."""

    refs: list
    offsets: list[int]  # index of each chunk's first prompt (its group-id offset)
    _result: Rollouts | None = None

    def result(self) -> Rollouts:
        if self._result is None:
            self._result = Rollouts.concat(ray.get(self.refs), self.offsets)
        return self._result


class RolloutGroup:
    """vLLM engines, one per actor; worker i's engine is seeded with `seed + i`.

    `interrupt` (`rollout.interrupt`): weight loads go to each actor's "control" concurrency group
    and start at once, pausing a generation in progress, which then goes on under the new weights;
    without it they queue behind the requests already sent. Requests run one at a time, in order."""

    def __init__(self, role: RoleConfig, strategy: str, model_path: str, max_model_len: int, dtype: str = "float32",
                 seed: int = 0, kv_cache_gib: float = 1.0, gpu_memory_utilization: float = 0.4,
                 reference_path: str | None = None, interrupt: bool = False):
        self.interrupt = interrupt
        self.actors = spawn(RolloutActor, "rollout", role, strategy, lambda i: (
            model_path, max_model_len, kv_cache_gib, gpu_memory_utilization, dtype, seed + i, reference_path),
            concurrency_groups={"control": 1} if interrupt else None)
        self.start_s = max(ray.get([a.ready.remote() for a in self.actors]))
        self.balancer = LoadBalancer(self.actors)
        self.reloads: list = []
        self.last_reload_s = 0.0

    @classmethod
    def for_recipe(cls, cfg: RecipeConfig, model_path: str, reference_path: str | None = None,
                   min_model_len: int | None = None) -> "RolloutGroup":
        """`min_model_len`: a longer context than generation needs (self-judge prompts)."""
        r = cfg.rollout
        max_len = max(r.max_prompt_len + max(r.max_new_tokens, cfg.train.eval_max_new_tokens), min_model_len or 0)
        return cls(r, cfg.cluster.placement_strategy, model_path, max_len, cfg.model.dtype, cfg.train.seed,
                   r.kv_cache_gib, r.gpu_memory_utilization, reference_path, r.interrupt)

    def submit(self, prompts: Prompts, spec: SamplingSpec, chunk_prompts: int | None = None,
               min_version: int = 0) -> PendingRollouts:
        """Send the prompts out in chunks (default: one per actor) to the least-loaded actors.
        `min_version`: the newest weights sent before; no token is generated with older ones."""
        size = chunk_prompts or -(-len(prompts) // len(self.actors))
        offsets = list(range(0, len(prompts), size))
        refs = [self.balancer.pick(min(size, len(prompts) - lo), lambda a, lo=lo: a.generate.remote(
            prompts.select(list(range(lo, min(lo + size, len(prompts))))), spec, min_version)) for lo in offsets]
        return PendingRollouts(refs, offsets)

    def generate(self, prompts: Prompts, spec: SamplingSpec, min_version: int = 0) -> Rollouts:
        return self.submit(prompts, spec, min_version=min_version).result()

    def _load_method(self, actor, name: str):
        """`actor.<name>` for a weight load: with `interrupt`, in the actor's control group, so it
        starts at once; else in the default group, after the requests already sent."""
        method = getattr(actor, name)
        return method.options(concurrency_group="control") if self.interrupt else method

    def start_load_weights(self, bucket_refs: list, version: int) -> None:
        """Queue the reload of the weights in `bucket_refs` (refs of wire-form buckets) on every
        actor. Without `interrupt` it runs after the requests already sent to that actor, so no
        generation mixes versions; with it, it starts at once and generation in progress goes on
        under the new weights. Either way no request sent later starts on older weights."""
        self._collect_reloads(wait=False)
        self.reloads += [self._load_method(a, "load_weights").remote(bucket_refs, version) for a in self.actors]

    def attach_shared_weights(self, descriptor: dict) -> None:
        ray.get([a.attach_shared_weights.remote(descriptor) for a in self.actors])

    def join_weight_group(self, backend: str, layouts: list, host: str, port: int, timeout_s: float) -> list:
        """Refs of every actor joining the broadcast group as rank i + 1 (rank 0: the learner)."""
        world = len(self.actors) + 1
        return [a.join_weight_group.remote(backend, layouts, host, port, i + 1, world, timeout_s)
                for i, a in enumerate(self.actors)]

    def start_receive_weights(self, version: int) -> list:
        """Queue a receive of the learner's broadcast on every actor (same ordering as
        `start_load_weights`); the refs, in actor order."""
        return [self._load_method(a, "receive_weights").remote(version) for a in self.actors]

    def weight_devices(self) -> list[str]:
        return ray.get([a.weight_device.remote() for a in self.actors])

    def start_load_shared_weights(self, version: int) -> None:
        """Queue a reload from the learner's shared-memory parameters on every actor (same
        ordering as `start_load_weights`)."""
        self._collect_reloads(wait=False)
        self.reloads += [self._load_method(a, "load_shared_weights").remote(version) for a in self.actors]

    def finish_load_weights(self) -> float:
        """Wait for every queued reload; the slowest finished reload's own seconds."""
        self._collect_reloads(wait=True)
        return self.last_reload_s

    def _collect_reloads(self, wait: bool) -> None:
        if not self.reloads:
            return
        done, self.reloads = ray.wait(self.reloads, num_returns=len(self.reloads), timeout=None if wait else 0)
        if done:
            self.last_reload_s = max(ray.get(done))

    def stop(self) -> None:
        stop_role("rollout", self.actors)

    def checksums(self) -> list[float]:
        return ray.get([a.checksum.remote() for a in self.actors])

    def judge(self, questions: list[str], responses: list[str], judge, chunk: int | None = None) -> JudgeResult:
        """Self-judging on the rollout engines: the (question, response) rows go out in chunks
        (default: one per actor) to the least-loaded actors, as generation requests do."""
        size = chunk or -(-len(responses) // len(self.actors))
        refs = [self.balancer.pick(min(size, len(responses) - lo), lambda a, lo=lo: a.judge.remote(
            questions[lo:lo + size], responses[lo:lo + size], judge)) for lo in range(0, len(responses), size)]
        parts = ray.get(refs)
        return JudgeResult([texts for part in parts for texts in part[0]], [p[1] for p in parts], [p[2] for p in parts])


@dataclass(frozen=True)
class JudgeResult:
    texts: list[list[str]]  # per response, its judgments
    versions: list[int]  # per request, the policy version that judged
    checksums: list[float]  # per request, that engine's weight checksum when it judged


@dataclass
class PendingScores:
    """Scores of pending rollouts: each chunk is scored as soon as it is generated (the reward
    call takes the chunk's ref, so Ray starts it when the chunk exists); combined on `result`."""

    refs: list
    rollouts: PendingRollouts
    combine: object

    def result(self) -> Scores:
        raw = TermScores.concat(ray.get(self.refs))
        return self.combine(raw, self.rollouts.result())


class RewardGroup:
    """Reward actors score their shares of the batch term by term; the driver combines the whole
    step's terms here, in one place, since normalisation must see every sample."""

    def __init__(self, cfg: RecipeConfig, tokenizer_path: str | None = None):
        self.weights = {t.name: t.weight for t in cfg.rewards}
        self.actors = spawn(RewardActor, "reward", cfg.reward, cfg.cluster.placement_strategy,
                            lambda i: (cfg.rewards, cfg.reward.timeout_s, tokenizer_path))
        pointwise = [t for t in cfg.rewards if not issubclass(REWARDS[t.name], PairwiseReward)]
        self.combiner = Combiner(pointwise, cfg.reward.combine) if pointwise else None
        self.balancer = LoadBalancer(self.actors)

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
        refs = [self.balancer.pick(1, lambda a, r=ref: a.score.remote(r)) for ref in pending.refs]
        return PendingScores(refs, pending, self._combine)

    def score(self, rollouts: Rollouts) -> Scores:
        return self.submit(PendingRollouts([ray.put(rollouts)], [0])).result()

    def accuracy(self, rollouts: Rollouts) -> Scores:
        bounds = split_bounds(len(rollouts), len(self.actors))
        raw = TermScores.concat(ray.get([a.accuracy.remote(rollouts.select(slice(lo, hi)))
                                         for a, lo, hi in zip(self.actors, bounds, bounds[1:]) if hi > lo]))
        return Scores(values=raw.terms["accuracy"], terms=raw.terms, errors=raw.errors)


class ReferenceGroup:
    def __init__(self, cfg: RecipeConfig, model_path: str):
        ref = cfg.reference
        self.actors = spawn(ReferenceActor, "reference", ref, cfg.cluster.placement_strategy, lambda i: (
            model_path, cfg.model.dtype, ref.micro_batch_size, cfg.rollout.temperature, threads_for()))

    def logprobs(self, batch: TrainBatch) -> torch.Tensor:
        n = len(self.actors)
        return torch.cat(ray.get([a.logprobs.remote(batch.shard(i, n)) for i, a in enumerate(self.actors)]))

    def load_weights(self, bucket_refs: list) -> None:
        """Every reference actor loads the weights in `bucket_refs` (the policy's export)."""
        ray.get([a.load_weights.remote(*bucket_refs) for a in self.actors])


class RankGroup:
    """Data-parallel DeepSpeed ranks of one model (a `RankActor` subclass per rank): spawned in
    the role's placement group, joined into one process group at rank 0's address. Every call
    goes to all ranks and fails fast (`get_all`)."""

    def __init__(self, actor_cls, name: str, role: RoleConfig, strategy: str, args_for):
        self.actors = spawn(actor_cls, name, role, strategy, args_for)
        addr, port = ray.get(self.actors[0].address.remote())
        self.setup_s = max(self.call("setup", addr, port))

    @property
    def world_size(self) -> int:
        return len(self.actors)

    def call(self, method: str, *args) -> list:
        """`method(*args)` on every rank; the results in rank order."""
        return get_all([getattr(a, method).remote(*args) for a in self.actors], self.actors)

    def finish_summed(self, refs: list) -> dict[str, float]:
        """Wait for per-rank results whose values are shares of global quantities: their sum."""
        results = get_all(refs, self.actors)
        return {k: sum(r[k] for r in results) for k in results[0]}


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
            self.n_buckets = self.call("plan_weight_buckets", self.bucket_bytes)[0]
        calls = [[a.export_weights.remote(b) for a in self.actors] for b in range(self.n_buckets)]
        self.exporting = [ref for refs in calls for ref in refs[1:]]
        return [refs[0] for refs in calls]

    # -- the collective broadcast (cluster/weight_sync.CollectiveSync) ------------------------
    def plan_weight_layouts(self) -> list:
        """Every rank cuts the weights into the same buckets; rank 0's byte layouts of them."""
        return self.call("plan_weight_layouts", self.bucket_bytes)[0]

    def open_weight_group(self, world: int, timeout_s: float) -> tuple[str, int]:
        return ray.get(self.actors[0].open_weight_group.remote(world, timeout_s))

    def join_weight_group(self, backend: str, layouts: list, world: int, timeout_s: float):
        return self.actors[0].join_weight_group.remote(backend, layouts, world, timeout_s)

    def weight_device(self) -> str:
        return ray.get(self.actors[0].weight_device.remote())

    def start_broadcast(self, version: int) -> None:
        """Every rank packs (ZeRO-3 gathers are collective); returns once rank 0 has the weights
        in its send buffers, while its sender thread broadcasts them."""
        self.call("start_broadcast", version)

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
        get_all(self.exporting, self.actors)
        self.exporting = []

    def save(self, out_dir: str) -> str:
        return self.call("save", out_dir)[0]

    def save_state(self, ckpt_dir: str) -> None:
        self.call("save_state", ckpt_dir)

    def load_state(self, ckpt_dir: str) -> None:
        self.call("load_state", ckpt_dir)


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
        return torch.cat(get_all([a.values.remote(s, n_micro) for s, a in zip(shards, self.actors)],
                                 self.actors))


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
