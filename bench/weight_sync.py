"""Benchmark: learner -> rollout weight sync against a bare vLLM reload of the same weights.

    .venv/bin/python bench/weight_sync.py [--repeats 10] [overrides...]

On a local Ray cluster with the default recipe's learner (DeepSpeed) and rollout actor (vLLM),
interleaved in every repeat:
  shared memory: `SharedMemorySync.sync`, what the default (synchronous, one-node) recipe runs:
          the rollout actor reloads from rank 0's parameters in shared memory (driver wall time);
  collective: `CollectiveSync.sync`, what `auto` takes wherever shared memory cannot be used
          (asynchronous loop, several nodes, GPUs): rank 0 broadcasts its weights in buckets over
          the run's gloo group, the rollout actor reloads each as it arrives (driver wall time);
  object store: `ObjectStoreSync.sync` (`train.weight_sync: object_store`): rank 0 puts its
          weights in the object store in buckets, the rollout actor reloads them as they
          arrive (driver wall time);
  reload: the same weights exported again and, once every bucket is in the object store, one
          rollout-actor reload of them: the actor's own timing of that `reload_weights` pass over
          tensors already in hand (the baseline).
Appends to docs/benchmarks.md the mean and median of each and their ratios to the bare reload.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.grpo_default import machine, publish  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=10)
    args, overrides = p.parse_known_args()
    import ray

    from cluster.recipe import load_recipe
    from cluster.groups import LearnerGroup, RolloutGroup
    from cluster.placement import start_ray
    from cluster.weight_sync import CollectiveSync, ObjectStoreSync, SharedMemorySync
    from core.models import resolve_model_path

    cfg = load_recipe(ROOT / "recipes/grpo_arith.yaml", overrides)
    model_path = resolve_model_path(cfg.model.path)
    start_ray(cfg, ["rollout", "learner"])
    try:
        learners, rollouts = LearnerGroup(cfg, model_path), RolloutGroup.for_recipe(cfg, model_path)
        syncs = {"shared memory": SharedMemorySync(learners, rollouts),
                 "collective": CollectiveSync(learners, rollouts, cfg.train.sync_timeout_s),
                 "object store": ObjectStoreSync(learners, rollouts)}
        for sync in syncs.values():
            sync.sync(0)  # warm-up
        times: dict[str, list[float]] = {name: [] for name in [*syncs, "bare reload"]}
        for version in range(1, args.repeats + 1):
            for name, sync in syncs.items():
                started = time.perf_counter()
                sync.sync(version)
                times[name].append(time.perf_counter() - started)
            buckets = learners.export_weights()
            ray.wait(buckets, num_returns=len(buckets))
            times["bare reload"].append(ray.get(rollouts.actors[0].load_weights.remote(buckets, version)))
        buckets = ray.get(learners.export_weights())
        n_params = sum(a.size for bucket in buckets for _, _, a in bucket)
    finally:
        ray.shutdown()
    bare = times["bare reload"]
    rows = "\n".join(
        f"| {label} | {np.mean(t):.3f} | {np.median(t):.3f} | {min(t):.3f} | {max(t):.3f} | "
        f"{np.mean(t) / np.mean(bare):.2f}x | {np.median(t) / np.median(bare):.2f}x |"
        for label, t in [("sync, shared memory (default recipe), driver wall", times["shared memory"]),
                         ("sync, collective (gloo) broadcast in buckets (async / multi-node / GPU), driver wall", times["collective"]),
                         ("sync, object store in buckets, driver wall", times["object store"]),
                         ("bare vLLM reload inside the rollout actor (baseline)", bare)])
    text = f"""
## Weight sync vs bare vLLM reload ({datetime.date.today().isoformat()})

- command: `{" ".join(["python bench/weight_sync.py", *sys.argv[1:]])}`
- machine: {machine()}
- model: `{cfg.model.path}` ({n_params / 1e6:.1f}M parameters, {cfg.model.dtype}), learner ZeRO stage {cfg.learner.zero_stage}, 1 rollout actor; {args.repeats} repeats after one warm-up, the three measurements interleaved in each; object store: {len(buckets)} buckets of at most {cfg.train.sync_bucket_mb:g} MiB
- baseline: in the same run, after each pair of syncs, the rollout actor's own time for one `reload_weights` pass over the same weights already in the object store

| what | mean s | median s | min s | max s | mean / bare | median / bare |
|---|---|---|---|---|---|---|
{rows}
"""
    publish(text)


if __name__ == "__main__":
    main()
