"""Benchmark: learner -> rollout weight sync against a bare vLLM reload of the same weights.

    .venv/bin/python bench/weight_sync.py [--repeats 10] [overrides...]

On a local Ray cluster with the default recipe's learner (DeepSpeed) and rollout actor (vLLM),
interleaved in every repeat (the collective over gloo in a second pass, with its own baseline):
  shared memory: `SharedMemorySync.sync`, what the default (synchronous, one-node) recipe runs:
          the rollout actor reloads from rank 0's parameters in shared memory (driver wall time);
  collective: `CollectiveSync.sync`, what `auto` takes wherever shared memory cannot be used
          (asynchronous loop, several nodes, GPUs): rank 0 packs its weights in buckets, the
          rollout actor reloads each as it arrives (driver wall time); here, on rank 0's node,
          it reads them from rank 0's shared-memory buffers;
  collective over gloo: the same with `share_on_node=False`, so the buckets go over the run's
          gloo group (loopback TCP here), as to a rollout actor on another node;
  object store: `ObjectStoreSync.sync` (`train.weight_sync: object_store`): rank 0 puts its
          weights in the object store in buckets, the rollout actor reloads them as they
          arrive (driver wall time);
  reload: the same weights exported again and, once every bucket is in the object store, one
          rollout-actor reload of them: the actor's own timing of that `reload_weights` pass over
          tensors already in hand (the baseline).
Appends to docs/benchmarks.md the mean and median of each and their ratios to the bare reload,
and for each sync the rollout actor's own reload time inside it (the rest is the sync's overhead).
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
        # Rank 0 and the actor hold one broadcast group at a time, and a new group has new
        # buffers (whose first touch costs page faults a run pays once): the collective over gloo
        # runs as a second pass, after the first, with its own baseline.
        passes = [{"shared memory": SharedMemorySync(learners, rollouts),
                   "collective": CollectiveSync(learners, rollouts, cfg.train.sync_timeout_s),
                   "object store": ObjectStoreSync(learners, rollouts)},
                  {"collective over gloo": lambda: CollectiveSync(learners, rollouts, cfg.train.sync_timeout_s,
                                                                  share_on_node=False)}]
        times: dict[str, list[float]] = {}
        version = 0
        for index, syncs in enumerate(passes):
            syncs = {name: sync() if callable(sync) else sync for name, sync in syncs.items()}
            bare = times.setdefault(f"bare reload {index}", [])
            for _ in range(args.repeats + 1):  # the first: warm-up, not counted
                version += 1
                for name, sync in syncs.items():
                    started = time.perf_counter()
                    sync.sync(version)
                    times.setdefault(name, []).append(time.perf_counter() - started)
                    times.setdefault(f"{name} reload", []).append(sync.last_reload_s)
                buckets = learners.export_weights()
                ray.wait(buckets, num_returns=len(buckets))
                bare.append(ray.get(rollouts.actors[0].load_weights.remote(buckets, version)))
            for name in [*syncs, *[f"{n} reload" for n in syncs], f"bare reload {index}"]:
                times[name] = times[name][1:]
        buckets = ray.get(learners.export_weights())
        n_params = sum(a.size for bucket in buckets for _, _, a in bucket)
    finally:
        ray.shutdown()

    def row(label: str, t: list[float], bare: list[float], reload: list[float] | None = None) -> str:
        own = "–" if reload is None else f"{np.median(reload):.3f}"
        return (f"| {label} | {np.mean(t):.3f} | {np.median(t):.3f} | {min(t):.3f} | {max(t):.3f} | "
                f"{np.mean(t) / np.mean(bare):.2f}x | {np.median(t) / np.median(bare):.2f}x | {own} |")

    first, second = times["bare reload 0"], times["bare reload 1"]
    rows = "\n".join([
        row("sync, shared memory (default recipe), driver wall", times["shared memory"], first, times["shared memory reload"]),
        row("sync, collective: rank 0's node reads the packed buckets in shared memory (async loop), driver wall",
            times["collective"], first, times["collective reload"]),
        row("sync, object store in buckets, driver wall", times["object store"], first, times["object store reload"]),
        row("bare vLLM reload inside the rollout actor (baseline)", first, first),
        row("second pass: sync, collective over gloo (loopback TCP), as to another node, driver wall",
            times["collective over gloo"], second, times["collective over gloo reload"]),
        row("second pass: bare vLLM reload (its baseline)", second, second)])
    text = f"""
## Weight sync vs bare vLLM reload ({datetime.date.today().isoformat()})

- command: `{" ".join(["python bench/weight_sync.py", *sys.argv[1:]])}`
- machine: {machine()}
- model: `{cfg.model.path}` ({n_params / 1e6:.1f}M parameters, {cfg.model.dtype}), learner ZeRO stage {cfg.learner.zero_stage}, 1 rollout actor; {args.repeats} repeats after one warm-up, the syncs and the reload interleaved in each; the collective over gloo in a second pass with its own baseline; object store: {len(buckets)} buckets of at most {cfg.train.sync_bucket_mb:g} MiB
- baseline: in the same run (and pass), after the syncs of each repeat, the rollout actor's own time for one `reload_weights` pass over the same weights already in the object store

| what | mean s | median s | min s | max s | mean / bare | median / bare | the actor's own reload, median s |
|---|---|---|---|---|---|---|---|
{rows}
"""
    publish(text)


if __name__ == "__main__":
    main()
