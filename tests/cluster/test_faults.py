"""Fault injection on the real stack (tiny model): actors killed with SIGKILL mid-run, and
rollout actors added and removed during a run. The run finishes every step, each prompt batch
trained once, in the stream's order."""
import json
import os
import signal
import time

import numpy as np
import pytest

from cluster.recipe import load_recipe
from core.data import PromptStream
from tests.cluster.test_e2e import tiny_overrides
from tests.fault_injection import Saboteur, steps_logged

pytestmark = pytest.mark.cluster


def expected_batches(cfg, prompts_file_rows) -> list[list[str]]:
    stream = PromptStream(prompts_file_rows, cfg.train.seed)
    return [stream.next_batch(cfg.train.prompts_per_step).ids for _ in range(cfg.train.steps)]


def train_prompts(cfg):
    from core.data import load_rows, render_prompts
    from core.models import load_tokenizer

    rows = load_rows(cfg.task)[0]
    return render_prompts(rows, load_tokenizer(cfg.model.path), cfg.task)


def test_killed_rollout_reward_reference_and_learner_actors_come_back_in_the_synchronous_loop(
        tiny_model_path, tmp_path):
    from cluster.launch import train

    cfg = load_recipe("recipes/grpo_arith.yaml", tiny_overrides(tiny_model_path, tmp_path) + [
        "train.steps=5", "train.checkpoint_every=1", "train.save_final=false"])
    saboteur = Saboteur(tmp_path, {1: ["RolloutActor"], 2: ["RewardActor", "ReferenceActor"], 3: ["LearnerActor"]})
    saboteur.start()
    try:
        summary = train(cfg)
    finally:
        saboteur.stop.set()
    assert [what for _, what in saboteur.done] == ["RolloutActor", "RewardActor", "ReferenceActor", "LearnerActor"]
    assert summary["steps"] == 5
    faults = summary["faults"]
    for role in ("rollout", "reward", "reference"):
        assert faults[f"faults/restarts/{role}"] == 1, (role, faults)
    # The reward and reference actors only serve requests, so their death always cost one; the
    # rollout actor's may be found by the weight load queued on it instead (nothing to send again).
    assert faults["faults/reissued/reward"] >= 1 and faults["faults/reissued/reference"] >= 1, faults
    assert faults["learner_restarts"] == 1 and faults["faults/restarts/learner"] == 1
    # Each prompt batch trained once, in the stream's order (steps after the learner's checkpoint
    # were trained again on the same prompts; the summary keeps the run that counts).
    assert summary["prompt_batches"] == expected_batches(cfg, train_prompts(cfg))
    # The restarted rollout actor took part in every later sync: it ends on trained weights.
    assert summary["rollout_checksums"]["end"] != summary["rollout_checksums"]["start"]
    assert np.isfinite(summary["final_metrics"]["loss/policy"])


def test_killed_actors_and_a_resized_rollout_role_in_the_asynchronous_loop(tiny_model_path, tmp_path):
    """Two rollout actors over the collective; a rollout, the reward and the reference actor are
    killed mid-run, and a third rollout actor is added at step 1 and the role cut to one at step
    3: each change re-forms the broadcast group."""
    from cluster.launch import train

    cfg = load_recipe("recipes/grpo_arith.yaml", tiny_overrides(tiny_model_path, tmp_path) + [
        "train.steps=5", "train.max_staleness=1", "rollout.num_workers=2", "rollout.num_cpus=0.5",
        "rollout.chunk_prompts=1", "train.save_final=false", "train.sync_bucket_mb=0.5",
        "train.sync_timeout_s=60"])
    saboteur = Saboteur(tmp_path, {1: [("scale", "rollout", 3)], 2: ["RolloutActor", "RewardActor", "ReferenceActor"],
                                   3: [("scale", "rollout", 1)]})
    saboteur.start()
    try:
        summary = train(cfg)
    finally:
        saboteur.stop.set()
    assert summary["weight_sync"] == "collective"
    assert len(saboteur.done) == 5, saboteur.done
    faults = summary["faults"]
    for role in ("rollout", "reward", "reference"):
        assert faults[f"faults/restarts/{role}"] == 1, (role, faults)
    assert faults["faults/rollout_workers"] == 1.0
    assert summary["prompt_batches"] == expected_batches(cfg, train_prompts(cfg))
    start, end = summary["rollout_checksums"]["start"], summary["rollout_checksums"]["end"]
    assert len(end) == 1 and end[0] != start[0]
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    workers = [m["faults/rollout_workers"] for m in metrics if "faults/rollout_workers" in m]
    assert 3.0 in workers and workers[-1] == 1.0
    assert all(m["async/staleness"] <= 1 for m in metrics if "async/staleness" in m)


def test_a_hung_reward_actor_stops_the_run_at_its_phase_deadline_naming_role_and_phase(tiny_model_path, tmp_path):
    from cluster.console import RunFailed
    from cluster.launch import train

    cfg = load_recipe("recipes/grpo_arith.yaml", tiny_overrides(tiny_model_path, tmp_path) + [
        "train.steps=4", "train.save_final=false", "train.timeouts.score=15"])
    saboteur = Saboteur(tmp_path, {1: ["STOP:RewardActor"]})
    saboteur.start()
    started = time.monotonic()
    try:
        with pytest.raises(RunFailed, match=r"reward: reward-0 gave no answer within 15 s in phase score "
                                            r"\(train.timeouts.score\)"):
            train(cfg)
    finally:
        saboteur.stop.set()
        for pid in saboteur.stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    assert saboteur.done and time.monotonic() - started < 240
    # Frozen after step 1 (step 2's scores may already have been made): the first scoring after
    # the freeze waited 15 s and stopped the run.
    assert 1 <= steps_logged(tmp_path) <= 2
