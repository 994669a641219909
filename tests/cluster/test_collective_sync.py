"""`train.weight_sync: collective` on the loopback multi-node cluster: learner rank 0 on the head,
rollout actors on a worker node, weights broadcast over the run's own gloo group."""
import json
import time

import pytest
import ray

from cluster.recipe import load_recipe
from core.collective import WeightSyncError
from tests.cluster.test_e2e import tiny_overrides

pytestmark = pytest.mark.cluster


@pytest.fixture
def driver(ray_head, monkeypatch):
    """This process attached to the cluster as a Ray driver."""
    _, _, gcs = ray_head
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray.init(address=gcs, log_to_driver=False)
    yield gcs
    ray.shutdown()


def spread(model_path, out_dir, *extra):
    """Learner ranks on the head node, both rollout actors on node_a."""
    return load_recipe("recipes/grpo_arith.yaml", [
        *tiny_overrides(model_path, out_dir), "learner.resources={head_node: 0.5}", "learner.num_cpus=1",
        "rollout.resources={node_a: 1}", "rollout.num_workers=2", "rollout.num_cpus=0.5",
        "train.sync_bucket_mb=0.5", "train.sync_timeout_s=20", *extra])


def perturb(learners, delta: float) -> None:
    """Shift every parameter of every rank in place (a ZeRO-3 rank shifts its partition)."""
    def shift(actor):
        import torch

        with torch.no_grad():
            for p in actor.engine.engine.module.parameters():
                getattr(p, "ds_tensor", p).add_(delta)  # ZeRO-3: this rank's partition

    ray.get([a.__ray_call__.remote(shift) for a in learners.actors])


@pytest.mark.parametrize("dtype,zero_stage,ranks,rollout_node", [
    ("float32", 0, 1, "node_a"), ("bfloat16", 3, 2, "node_a"),
    ("bfloat16", 3, 1, "head_node"),  # rank 0's node: the actors read its buckets in shared memory
])
def test_collective_sync_gives_every_rollout_actor_the_learners_weights(driver, tiny_model_path, tmp_path,
                                                                        dtype, zero_stage, ranks, rollout_node):
    from cluster.groups import LearnerGroup, RolloutGroup
    from cluster.placement import node_ids
    from cluster.weight_sync import CollectiveSync, ObjectStoreSync, make_weight_sync

    cfg = spread(tiny_model_path, tmp_path, f"model.dtype={dtype}", f"learner.zero_stage={zero_stage}",
                 f"learner.num_workers={ranks}", f"rollout.resources={{{rollout_node}: 0.25}}")
    learners, rollouts = LearnerGroup(cfg, tiny_model_path), RolloutGroup.for_recipe(cfg, tiny_model_path)
    try:
        on_node = set(node_ids(rollouts.actors)) & set(node_ids(learners.actors[:1]))
        assert bool(on_node) == (rollout_node == "head_node")
        collective = make_weight_sync(cfg, learners, rollouts)
        assert isinstance(collective, CollectiveSync) and collective.backend == "gloo"
        assert collective.local_ranks == ([1, 2] if on_node else [])
        before = rollouts.checksums()
        perturb(learners, 0.01)
        collective.sync(1)
        received = rollouts.checksums()
        # The same weights again through the object store: the engines compute exactly the same.
        ObjectStoreSync(learners, rollouts).sync(2)
        assert received == rollouts.checksums()
        assert received[0] == received[1] and received[0] != before[0]
        perturb(learners, -0.02)  # a second broadcast reuses every buffer
        collective.sync(3)
        again = rollouts.checksums()
        ObjectStoreSync(learners, rollouts).sync(4)
        assert again == rollouts.checksums() and again[0] != received[0]
        assert collective.last_reload_s > 0
    finally:
        rollouts.stop()


def test_a_receiver_killed_during_a_sync_is_named_within_the_timeout(driver, tiny_model_path, tmp_path):
    from cluster.groups import LearnerGroup, RolloutGroup
    from cluster.weight_sync import CollectiveSync
    from core.protocol import SamplingSpec

    cfg = spread(tiny_model_path, tmp_path)
    learners, rollouts = LearnerGroup(cfg, tiny_model_path), RolloutGroup.for_recipe(cfg, tiny_model_path)
    try:
        sync = CollectiveSync(learners, rollouts, timeout_s=10)
        sync.sync(1)
        # Actor 1 is busy generating, so the broadcast waits for it; it dies meanwhile.
        prompts = _prompts(16)
        busy = rollouts.actors[1].generate.remote(prompts, SamplingSpec(n=4, max_new_tokens=64, temperature=1.0))
        sync.start(2)
        ray.kill(rollouts.actors[1])
        started = time.monotonic()
        with pytest.raises(WeightSyncError, match=r"weight sync of version 2 failed: rollout actor 1 \(node \w+\) died"):
            sync.finish()
        assert time.monotonic() - started < 10
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(busy)
        # The broadcast never started: the survivor's receive ends at its own timeout, and it
        # serves on with the weights it had (version 1) instead of hanging.
        after = ray.get(rollouts.actors[0].generate.remote(prompts, SamplingSpec(n=1, max_new_tokens=2)))
        assert after.policy_versions.tolist() == [1] * 16 and time.monotonic() - started < 30
    finally:
        ray.kill(rollouts.actors[0])


def _prompts(n: int):
    import numpy as np

    from core.protocol import Prompts

    return Prompts(ids=[f"p{i}" for i in range(n)], texts=[f"p{i}" for i in range(n)],
                   token_ids=[np.array([5 + i, 7, 9]) for i in range(n)], answers=["0"] * n)


def test_the_asynchronous_loop_runs_on_the_collective_across_nodes(ray_head, tiny_model_path, tmp_path, monkeypatch):
    from actors.rollout import PROBE_IDS
    from cluster.launch import train
    from core.models import load_policy
    from learners.engine import probe_logprob_sum

    _, _, gcs = ray_head
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    cfg = spread(tiny_model_path, tmp_path, f"cluster.address={gcs}", "train.max_staleness=1", "train.steps=3",
                 "reference.resources={node_b: 1}", "reward.resources={head_node: 0.5}")
    summary = train(cfg)
    assert summary["weight_sync"] == "collective" and summary["final_metrics"]["async/staleness"] == 1.0
    start, end = summary["rollout_checksums"]["start"], summary["rollout_checksums"]["end"]
    assert start[0] != end[0] and end[0] == end[1]
    assert end[0] == pytest.approx(probe_logprob_sum(load_policy(summary["final_checkpoint"]), PROBE_IDS), rel=1e-4)
    assert json.loads((tmp_path / "summary.json").read_text())["weight_sync"] == "collective"
