"""Benchmark: sync vs async step throughput on a controlled workload whose phase costs are known.

    .venv/bin/python bench/async_pipeline.py [--generate 2.0] [--update 2.0] [--reload 0.2] [--steps 12]
                                             [--pareto-alpha 1.5]

The real controller, load balancer, pending-rollout/score plumbing and object-store weight sync
run on a real local Ray cluster; only the work inside the actors is replaced by sleeps of known
length (generate: seconds per step's prompts, split over chunks; update; weight reload; reward).
The ideal asynchronous step is max(rollout work, learner work) = max(generate + reload, update);
the synchronous one is their sum. With `--pareto-alpha`, each prompt's generation seconds are
heavy-tailed (Pareto, fixed seed, mean kept). The asynchronous loop runs with `rollout.interrupt`
off and on: on, a reload runs at once between two slices of the generation in progress (the
sleep actor's engine steps) instead of after it. Appends to docs/benchmarks.md: measured step
time against the ideal, per-token staleness and the share of interrupted rows, and each role's
busy / idle share.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.grpo_default import machine, publish  # noqa: E402


def fake_rollouts(prompts, n: int, token_versions: list[int]):
    """Three response tokens per row, of these policy versions (every row of a chunk alike)."""
    from core.protocol import Rollouts

    rows = [g for g in range(len(prompts)) for _ in range(n)]
    return Rollouts(prompt_ids=[prompts.token_ids[g] for g in rows], response_ids=[np.array([1, 2, 3])] * len(rows),
                    rollout_logprobs=[np.zeros(3, dtype=np.float32)] * len(rows), response_texts=["x"] * len(rows),
                    finish_reasons=["stop"] * len(rows), group_ids=np.array(rows),
                    policy_versions=np.full(len(rows), min(token_versions)), prompt_texts=[prompts.ids[g] for g in rows],
                    answers=["0"] * len(rows), token_versions=[np.array(token_versions)] * len(rows))


def prompt_seconds(args) -> dict[str, float]:
    """Generation seconds of each of the 64 prompts: all equal, or Pareto(alpha) with a fixed seed,
    scaled to the same mean (a step's prompts take `--generate` seconds over all actors on average)."""
    weights = np.ones(64)
    if args.pareto_alpha:
        weights = np.random.default_rng(args.seed).pareto(args.pareto_alpha, 64) + 1.0  # Pareto, minimum 1
    per_prompt = args.generate / args.prompts * args.rollout_actors
    return {f"p{i}": float(per_prompt * w / weights.mean()) for i, w in enumerate(weights)}


class NoLogger:
    def samples_table(self, *args): pass


class SleepRollout:
    """Generates and reloads one call at a time, in order (`rollout.interrupt` off)."""

    def __init__(self, seconds: dict[str, float], reload_s: float):
        self.seconds, self.reload_s, self.version, self.busy_s = seconds, reload_s, 0, 0.0

    def generate(self, prompts, spec, min_version: int = 0):
        seconds = sum(self.seconds[p] for p in prompts.ids)
        time.sleep(seconds)
        self.busy_s += seconds
        return fake_rollouts(prompts, spec.n, [self.version] * 3)

    def load_weights(self, bucket_refs: list, version: int) -> float:
        time.sleep(self.reload_s)
        self.version, self.busy_s = version, self.busy_s + self.reload_s
        return self.reload_s


class InterruptibleSleepRollout(SleepRollout):
    """`rollout.interrupt` on: reloads arrive in the "control" concurrency group and run between two
    slices (engine steps) of the generation in progress, which goes on under the new version, as
    `RolloutActor` does; a request waits for the weights sent before it (`min_version`)."""

    SLICE_S = 0.01

    def __init__(self, seconds: dict[str, float], reload_s: float):
        super().__init__(seconds, reload_s)
        self.engine, self.load_waiting, self.newest_load = threading.Condition(), threading.Event(), 0

    def generate(self, prompts, spec, min_version: int = 0):
        with self.engine:
            self.engine.wait_for(lambda: self.newest_load >= min_version)
            seconds = sum(self.seconds[p] for p in prompts.ids)
            slices = max(1, round(seconds / self.SLICE_S))
            versions = []
            for _ in range(slices):
                if self.load_waiting.is_set():
                    self.engine.wait_for(lambda: not self.load_waiting.is_set())
                versions.append(self.version)
                time.sleep(seconds / slices)
            self.busy_s += seconds
        return fake_rollouts(prompts, spec.n, [versions[j * slices // 3] for j in range(3)])

    def load_weights(self, bucket_refs: list, version: int) -> float:
        self.load_waiting.set()
        with self.engine:
            self.load_waiting.clear()
            super().load_weights(bucket_refs, version)
            self.newest_load = max(self.newest_load, version)
            self.engine.notify_all()
        return self.reload_s


class SleepReward:
    def __init__(self, seconds: float):
        self.seconds, self.busy_s = seconds, 0.0

    def score(self, rollouts):
        from core.protocol import TermScores

        time.sleep(self.seconds)
        self.busy_s += self.seconds
        return TermScores(terms={"r": np.arange(len(rollouts)) % 2.0}, errors=[None] * len(rollouts))


class SleepLearner:
    def __init__(self, seconds: float):
        self.seconds, self.busy_s = seconds, 0.0

    def update(self) -> dict:
        time.sleep(self.seconds)
        self.busy_s += self.seconds
        return {"loss/policy": 0.0}

    def export_weights(self) -> dict:
        return {"w": np.zeros(4)}


def build(args, ray, interrupt: bool):
    from cluster.controller import Roles
    from cluster.faults import ActorPool
    from cluster.groups import RewardGroup, RolloutGroup
    from cluster.weight_sync import ObjectStoreSync

    class Rollouts(RolloutGroup):
        def __init__(self, actors):  # actors made here instead of from a recipe
            self.pool, self.reloads, self.last_reload_s = ActorPool("rollout", actors), [], 0.0
            self.interrupt = interrupt

    class Rewards(RewardGroup):
        def __init__(self, actors):
            self.pool, self.combiner = ActorPool("reward", actors), None

    class Learners:
        def __init__(self, actor):
            self.actors = [actor]

        def update(self, batch, algorithm, max_new_tokens):
            return ray.get(self.actors[0].update.remote())

        def export_weights(self):
            return [self.actors[0].export_weights.remote()]

        def check_export(self):
            pass

    rollout_cls = (ray.remote(concurrency_groups={"control": 1})(InterruptibleSleepRollout) if interrupt
                   else ray.remote(SleepRollout))
    rollouts = Rollouts([rollout_cls.options(num_cpus=0).remote(prompt_seconds(args), args.reload)
                         for _ in range(args.rollout_actors)])
    learners = Learners(ray.remote(SleepLearner).options(num_cpus=0).remote(args.update))
    rewards = Rewards([ray.remote(SleepReward).options(num_cpus=0).remote(args.score)])
    return Roles(rollouts=rollouts, rewards=rewards, learners=learners, reference=None,
                 sync=ObjectStoreSync(learners, rollouts))


def measure(k: int, interrupt: bool, args, ray) -> dict:
    from cluster.recipe import load_recipe
    from cluster.controller import Controller
    from cluster.placement import busy_seconds
    from core.protocol import Prompts
    from learners.algos.registry import build_algorithm

    cfg = load_recipe(ROOT / "recipes/grpo_arith.yaml", [
        f"train.max_staleness={k}", f"train.steps={args.steps}", f"train.prompts_per_step={args.prompts}",
        "algo.group_size=2", f"rollout.chunk_prompts={args.chunk}", f"rollout.interrupt={str(interrupt).lower()}"])
    prompts = Prompts(ids=[f"p{i}" for i in range(64)], texts=[f"p{i}" for i in range(64)],
                      token_ids=[np.array([5, i]) for i in range(64)], answers=["0"] * 64)
    roles = build(args, ray, interrupt)
    groups = (roles.rollouts, roles.rewards, roles.learners)
    ray.get([a.__ray_call__.remote(lambda self: None) for g in groups for a in g.actors])  # actors up
    controller = Controller(cfg, roles, build_algorithm(cfg.algo), prompts, prompts, 0, NoLogger())
    steps, started = [], time.perf_counter()
    for step in range(args.steps):
        steps.append(controller.train_step(step))
    roles.sync.finish()
    wall = time.perf_counter() - started
    busy = {name: float(np.mean(busy_seconds(g.actors))) / wall
            for name, g in (("rollout", roles.rollouts), ("reward", roles.rewards), ("learner", roles.learners))}
    for group in groups:
        for a in group.actors:
            ray.kill(a)
    window = steps[10:]
    return {"step_s": float(np.mean([m["timing/step"] for m in window])), "busy": busy,
            **{k: float(np.mean([m[f"async/{k}"] for m in window])) for k in ("token_staleness", "interrupted_frac")}}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--generate", type=float, default=2.0, help="rollout seconds per step (all prompts)")
    p.add_argument("--update", type=float, default=2.0, help="learner seconds per step")
    p.add_argument("--reload", type=float, default=0.2, help="rollout actor reload seconds")
    p.add_argument("--score", type=float, default=0.05, help="reward seconds per chunk")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--chunk", type=int, default=2)
    p.add_argument("--rollout-actors", type=int, default=2)
    p.add_argument("--pareto-alpha", type=float, default=None,
                   help="heavy-tailed per-prompt generation seconds: Pareto with this shape (mean kept)")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-prompt Pareto draws")
    args = p.parse_args()
    import ray

    runs = [(0, False), (1, False), (1, True), (2, False), (2, True)]  # (max_staleness, rollout.interrupt)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        results = {run: measure(*run, args, ray) for run in runs}
    finally:
        ray.shutdown()
    rollout_work = args.generate + args.reload
    ideal_async, ideal_sync = max(rollout_work, args.update), rollout_work + args.update
    sync_s = results[(0, False)]["step_s"]
    rows = "\n".join(
        f"| {k} | {'on' if interrupt else 'off'} | {r['step_s']:.3f} | {(ideal_sync if k == 0 else ideal_async):.2f} | "
        f"{100 * (ideal_sync if k == 0 else ideal_async) / r['step_s']:.1f}% | {100 * ideal_async / r['step_s']:.1f}% | "
        f"{sync_s / r['step_s']:.2f}x | {r['token_staleness']:.2f} | {100 * r['interrupted_frac']:.0f}% | "
        + ", ".join(f"{n} {100 * b:.0f}% / {100 * (1 - b):.0f}%" for n, b in r["busy"].items()) + " |"
        for (k, interrupt), r in results.items())
    seconds = np.array(list(prompt_seconds(args).values()))
    tail = (f"Pareto(alpha={args.pareto_alpha:g}, seed {args.seed}) per prompt, mean kept: "
            f"{seconds.min():.2f}-{seconds.max():.2f} s per prompt, median {np.median(seconds):.2f} s"
            if args.pareto_alpha else "every prompt alike")
    text = f"""
## Async pipeline on a controlled workload (sleep actors, known phase costs) ({datetime.date.today().isoformat()})

- command: `{" ".join(["python bench/async_pipeline.py", *sys.argv[1:]])}`
- machine: {machine()}
- workload: generate {args.generate:g} s per step over {args.prompts} prompts in chunks of {args.chunk} on {args.rollout_actors} rollout actors ({tail}), update {args.update:g} s, reload {args.reload:g} s, reward {args.score:g} s per chunk; real Ray, real controller / load balancer / object-store sync
- ideal: synchronous = generate + reload + update = {ideal_sync:.2f} s; asynchronous = max(generate + reload, update) = {ideal_async:.2f} s (with mean generate seconds); step time, token staleness and interrupted rows = mean of steps 11-{args.steps} (the k steps of rollouts buffered at the start drain within the window, so an async step can average slightly under its ideal); baseline: max_staleness 0 in the same run; interrupt on: a reload runs between two 10 ms slices of the generation in progress instead of after it

| max_staleness | interrupt | step s | its ideal s | of its ideal | of the async ideal | speed vs sync | token staleness | rows interrupted | busy / idle per role |
|---|---|---|---|---|---|---|---|---|---|
{rows}
"""
    publish(text)


if __name__ == "__main__":
    main()
