"""Benchmark: learner -> rollout weight sync against a bare vLLM reload of the same weights.

    .venv/bin/python bench/weight_sync.py [--repeats 5] [overrides...]

On a local Ray cluster with the default recipe's learner (DeepSpeed) and rollout actor (vLLM):
  sync:   `ObjectStoreSync.sync` as the controller runs it — rank 0 gathers and copies its
          weights to CPU, puts them in the object store once, the rollout actor pulls them and
          reloads in place (wall time on the driver);
  reload: inside the rollout actor, the vLLM `reload_weights` pass over the same tensors
          (the actor's own timing of that call, same sync).
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
    p.add_argument("--repeats", type=int, default=5)
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
            reload_s.append(sync.last_reload_s)
        n_params = sum(a.size for _, _, a in ray.get(learners.export_weights()))
    finally:
        ray.shutdown()
    s, r = float(np.mean(sync_s)), float(np.mean(reload_s))
    text = f"""
## Weight sync vs bare vLLM reload ({datetime.date.today().isoformat()})

- command: `{" ".join(["python bench/weight_sync.py", *sys.argv[1:]])}`
- machine: {machine()}
- model: `{cfg.model.path}` ({n_params / 1e6:.1f}M parameters, {cfg.model.dtype}), learner ZeRO stage {cfg.learner.zero_stage}, 1 rollout actor; {args.repeats} syncs after one warm-up
- baseline: the rollout actor's own `reload_weights` time for the same tensors in the same syncs

| what | mean s | min s | max s |
|---|---|---|---|
| full sync (export + object store + reload), driver wall | {s:.3f} | {min(sync_s):.3f} | {max(sync_s):.3f} |
| bare vLLM reload inside the rollout actor | {r:.3f} | {min(reload_s):.3f} | {max(reload_s):.3f} |
| ratio sync / bare reload | {s / r:.2f}x | | |
"""
    publish(text)


if __name__ == "__main__":
    main()
