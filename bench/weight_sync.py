"""Benchmark: learner -> rollout weight sync against a bare vLLM reload of the same weights.

    .venv/bin/python bench/weight_sync.py [--repeats 10] [overrides...]

On a local Ray cluster with the default recipe's learner (DeepSpeed) and rollout actor (vLLM):
  sync:   `ObjectStoreSync.sync` as the controller runs it — rank 0 puts its weights in the
          object store in buckets, the rollout actor reloads them in place as they arrive
          (wall time on the driver);
  reload: the same weights exported again and, once every bucket is in the object store, one
          rollout-actor reload of them: the actor's own timing of that `reload_weights` pass over
          tensors already in hand.
Appends to docs/benchmarks.md the mean of each and their ratio (sync / bare reload).
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

    from cluster.config import load_recipe
    from cluster.groups import LearnerGroup, RolloutGroup
    from cluster.placement import start_ray
    from cluster.weight_sync import ObjectStoreSync
    from learners.models import resolve_model_path

    cfg = load_recipe(ROOT / "recipes/grpo_arith.yaml", overrides)
    model_path = resolve_model_path(cfg.model.path)
    start_ray(cfg, ["rollout", "learner"])
    try:
        learners, rollouts = LearnerGroup(cfg, model_path), RolloutGroup(cfg, model_path)
        sync = ObjectStoreSync(learners, rollouts)
        sync.sync(0)  # warm-up
        sync_s, reload_s = [], []
        for version in range(1, args.repeats + 1):
            started = time.perf_counter()
            sync.sync(version)
            sync_s.append(time.perf_counter() - started)
            buckets = learners.export_weights()
            ray.wait(buckets, num_returns=len(buckets))
            reload_s.append(ray.get(rollouts.actors[0].load_weights.remote(buckets, version)))
        buckets = ray.get(learners.export_weights())
        n_params = sum(a.size for bucket in buckets for _, _, a in bucket)
    finally:
        ray.shutdown()
    s, r = float(np.mean(sync_s)), float(np.mean(reload_s))
    text = f"""
## Weight sync vs bare vLLM reload ({datetime.date.today().isoformat()})

- command: `{" ".join(["python bench/weight_sync.py", *sys.argv[1:]])}`
- machine: {machine()}
- model: `{cfg.model.path}` ({n_params / 1e6:.1f}M parameters, {cfg.model.dtype}), learner ZeRO stage {cfg.learner.zero_stage}, 1 rollout actor; {args.repeats} syncs after one warm-up; {len(buckets)} buckets of at most {cfg.train.sync_bucket_mb:g} MiB
- baseline: in the same run, after each sync, the rollout actor's own time for one `reload_weights` pass over the same weights already in the object store

| what | mean s | median s | min s | max s |
|---|---|---|---|---|
| full sync (export + object store + reload), driver wall | {s:.3f} | {np.median(sync_s):.3f} | {min(sync_s):.3f} | {max(sync_s):.3f} |
| bare vLLM reload inside the rollout actor | {r:.3f} | {np.median(reload_s):.3f} | {min(reload_s):.3f} | {max(reload_s):.3f} |
| ratio sync / bare reload | {s / r:.2f}x | {np.median(sync_s) / np.median(reload_s):.2f}x | | |
"""
    publish(text)


if __name__ == "__main__":
    main()
