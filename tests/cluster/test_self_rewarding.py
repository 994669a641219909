"""Self-rewarding on real Ray + vLLM + DeepSpeed, tiny model: the policy judges its own samples
on its rollout engine (constrained to the score format: a random tiny model cannot follow it),
online (2 steps) and iterative (2 iterations, the reference following the policy)."""
import json

import pytest
import torch

from actors.rollout import PROBE_IDS
from cluster.recipe import load_recipe
from core.models import load_policy
from learners.engine import probe_logprob_sum

pytestmark = pytest.mark.cluster


def overrides(model_path: str, out_dir, *extra) -> list[str]:
    return [
        f"model.path={model_path}", f"train.output_dir={out_dir}", "train.prompts_per_step=4",
        "algo.samples_per_prompt=3", "algo.lr=1e-3", "algo.judge={k: 2, max_new_tokens: 16, constrained: true}",
        "rollout.max_new_tokens=8", "train.eval_max_new_tokens=4", "task.arithmetic.eval_size=4",
        "learner.micro_batch_size=4", "logging.wandb_mode=disabled", "logging.progress_bar=false", *extra]


def steps(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def test_online_self_rewarding_judges_with_the_learners_current_weights(tiny_model_path, tmp_path):
    from cluster.launch import train

    # lr 1e-2: Adam's first step moves the weights far more than vLLM and transformers differ.
    summary = train(load_recipe("recipes/self_rewarding_arith.yaml", overrides(
        tiny_model_path, tmp_path, "train.steps=2", "train.checkpoint_every=1", "train.keep_checkpoints=2",
        "algo.lr=1e-2")))
    assert summary["steps"] == 2
    last = summary["final_metrics"]
    assert last["judge/parse_rate"] == 1.0 and last["judge/unjudged"] == 0
    assert last["judge/pairs"] + last["judge/dropped_ties"] == 4
    # Step 1 was judged by the engine holding version 1: the learner's weights after step 0,
    # which checkpoint step_1 saved (the same functional checksum in vLLM and in transformers).
    assert last["judge/policy_version"] == 1.0
    policy = load_policy(tiny_model_path)
    start = probe_logprob_sum(policy, PROBE_IDS)
    saved = torch.load(tmp_path / "checkpoints/step_1/learner/state/mp_rank_00_model_states.pt",
                       map_location="cpu", weights_only=True)["module"]
    policy.load_state_dict(saved, strict=False)
    trained = probe_logprob_sum(policy, PROBE_IDS)
    assert last["judge/checksum"] == pytest.approx(trained, rel=1e-4)
    assert abs(last["judge/checksum"] - trained) < abs(trained - start) / 10  # not the initial weights
    logged = steps(tmp_path)
    assert [m["judge/policy_version"] for m in logged if "judge/policy_version" in m] == [0.0, 1.0]
    assert all(0 <= m["judge/pairs_kept_frac"] <= 1 for m in logged if "judge/pairs_kept_frac" in m)


def test_iterative_self_rewarding_makes_each_iterations_policy_the_reference(tiny_model_path, tmp_path):
    from cluster.launch import train

    summary = train(load_recipe("recipes/self_rewarding_iterative_arith.yaml", overrides(
        tiny_model_path, tmp_path, "algo.iterations=2", "train.steps=4", "train.sync_every=2",
        "train.checkpoint_every=2", "train.eval_every=2")))
    assert summary["steps"] == 4
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_2", "step_4"]
    by_step = {m["step"]: m for m in steps(tmp_path) if "judge/policy_version" in m}
    # Iteration 1 (steps 0, 1) samples and judges with M_0, iteration 2 (steps 2, 3) with M_1.
    assert [by_step[s]["judge/policy_version"] for s in (1, 2, 3, 4)] == [0.0, 0.0, 2.0, 2.0]
    # At the first step of an iteration the reference is the policy itself: its KL is 0 (up to
    # the learner's and the reference's float32 forwards). A step later the policy has moved away
    # from the iteration's weights, which the rollout engine and the reference both hold, so the
    # per-token |log π - log π_rollout| is its distance from the reference too (the batch's
    # signed KL estimate can come out near 0 either way: 1.8e-4 in one run).
    assert abs(by_step[3]["train/kl"]) < 1e-4 and by_step[3]["train/logprob_mismatch"] < 1e-4
    assert by_step[2]["train/logprob_mismatch"] > 1e-3 and by_step[4]["train/logprob_mismatch"] > 1e-3
    assert by_step[3]["judge/checksum"] != by_step[2]["judge/checksum"]  # M_1 is not M_0
