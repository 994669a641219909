"""Two GRPO steps on real Ray + real vLLM + real DeepSpeed (2 data-parallel ranks), tiny model."""
import json
import math

import pytest

from actors.rollout import PROBE_IDS
from cluster.recipe import load_recipe
from learners.engine import probe_logprob_sum
from core.models import load_policy

pytestmark = pytest.mark.cluster


def tiny_overrides(model_path: str, out_dir) -> list[str]:
    return [
        f"model.path={model_path}", f"train.output_dir={out_dir}",
        "train.steps=2", "train.prompts_per_step=4", "algo.group_size=4", "algo.kl_coef=0.05",
        "algo.lr=1e-3", "rollout.max_new_tokens=8", "train.eval_max_new_tokens=4",
        "task.arithmetic.eval_size=4", "learner.micro_batch_size=4",
        # A rule the random tiny model meets about half the time, so groups have reward spread.
        "rewards=[{name: answer_format, args: {pattern: '^\\s'}}, {name: math_correct, weight: 1.0}]",
        "logging.wandb_mode=disabled", "logging.progress_bar=false",
    ]


def test_two_grpo_steps_sync_weights_and_log_finite_metrics(tiny_model_path, tmp_path):
    from cluster.launch import train

    cfg = load_recipe("recipes/grpo_arith.yaml", tiny_overrides(tiny_model_path, tmp_path) + ["learner.num_workers=2"])
    summary = train(cfg)

    assert summary["steps"] == 2
    # Synchronous, one node, ZeRO 0, float32: rollout actors reload from rank 0's shared memory.
    assert summary["weight_sync"] == "shared_memory"
    start, end = summary["rollout_checksums"]["start"], summary["rollout_checksums"]["end"]
    assert start != end, "rollout weights did not change after sync"
    # The rollout engine computes with exactly the weights the learner saved: the same
    # probe logprobs from vLLM and from the saved checkpoint in transformers.
    saved = load_policy(summary["final_checkpoint"])
    assert end[0] == pytest.approx(probe_logprob_sum(saved, PROBE_IDS), rel=1e-4)
    assert start[0] == pytest.approx(probe_logprob_sum(load_policy(tiny_model_path), PROBE_IDS), rel=1e-4)

    metrics = summary["final_metrics"]
    for key in ("reward/total", "reward/answer_format", "loss/policy", "train/kl", "train/entropy",
                "train/clip_frac", "rollout/response_len", "timing/generate", "timing/score",
                "timing/reference", "timing/update", "timing/weight_sync", "timing/step",
                "perf/samples_per_s"):
        assert math.isfinite(metrics[key]), key
    assert metrics["timing/reference"] > 0 and metrics["timing/weight_sync"] > 0
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["recipe"]["learner"]["num_workers"] == 2
    assert 0.0 <= written["eval_accuracy_after"] <= 1.0


def test_async_grpo_with_two_rollout_actors_streams_chunks_within_the_staleness_bound(tiny_model_path, tmp_path):
    """max_staleness=1: step t+1's rollouts are generated while step t trains, in chunks of one
    prompt balanced over two rollout actors; every step trains on rollouts at most 1 version old,
    with IcePop importance correction between the rollout engine and the learner."""
    from cluster.launch import train

    cfg = load_recipe("recipes/grpo_arith.yaml", tiny_overrides(tiny_model_path, tmp_path) + [
        "train.steps=3", "train.max_staleness=1", "rollout.num_workers=2", "rollout.num_cpus=0.5",
        "rollout.chunk_prompts=1", "train.save_final=false", "train.eval_every=2", "algo.is_correction=icepop",
        "train.sync_bucket_mb=0.5"])  # weights in many small buckets (the tiny model is ~26 MB)
    summary = train(cfg)

    assert summary["steps"] == 3
    assert summary["weight_sync"] == "collective"  # the learner trains while rollout actors reload
    assert summary["final_metrics"]["async/staleness"] == 1.0  # step 2 trained on version-1 rollouts
    # IcePop against the learner's own π_old: each weight 0 or within the band [0.5, 2]
    assert 0 < summary["final_metrics"]["train/is_weight"] <= 2.0
    assert 0 <= summary["final_metrics"]["train/is_masked_frac"] < 1
    assert len(summary["placement"]["rollout"]) == 2
    assert all(b > 0 for b in summary["busy_s"]["rollout"]), "both rollout actors generated"
    assert [p["step"] for p in summary["accuracy_curve"]] == [0, 2, 3]
    start, end = summary["rollout_checksums"]["start"], summary["rollout_checksums"]["end"]
    assert start[0] != end[0] and end[0] == pytest.approx(end[1], rel=1e-6)  # both actors got the final weights


def test_a_stopped_run_resumes_from_its_latest_checkpoint(tiny_model_path, tmp_path):
    """Two asynchronous steps with a checkpoint after each (only the newest kept), then the run
    continues to step 3 from `train.resume=latest`: the rollout actors restart from the
    checkpoint's weights and the run trains only the missing step, logging to the same wandb run."""
    import torch

    from cluster.launch import train

    common = tiny_overrides(tiny_model_path, tmp_path) + ["train.max_staleness=1", "train.save_final=false",
                                                           "train.checkpoint_every=1", "logging.wandb_mode=offline"]
    first = train(load_recipe("recipes/grpo_arith.yaml", common + ["train.steps=2"]))
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert first["steps"] == 2 and ckpts == ["step_2"]
    state = json.loads((tmp_path / "checkpoints/step_2/state.json").read_text())
    assert state["step"] == 2 and state["prompts_consumed"] == 8 and state["samples_seen"] == 32
    saved = torch.load(tmp_path / "checkpoints/step_2/learner/state/mp_rank_00_model_states.pt",
                       map_location="cpu", weights_only=False)
    assert saved["optimizer"] is not None

    # The stopped run was asynchronous (object-store sync); it continues synchronously, so the
    # restored weights reach the rollout actors through shared memory.
    resumed = train(load_recipe("recipes/grpo_arith.yaml", common + [
        "train.steps=3", "train.resume=latest", "train.max_staleness=0"]))
    assert (first["weight_sync"], resumed["weight_sync"]) == ("collective", "shared_memory")
    assert resumed["start_step"] == 2 and resumed["steps"] == 3
    assert resumed["resumed_from"] == str((tmp_path / "checkpoints/step_2").resolve())
    assert [p["step"] for p in resumed["accuracy_curve"]] == [0, 3]
    assert resumed["eval_accuracy_before"] == first["eval_accuracy_before"]
    # The rollout actors generated step 3's samples with the checkpoint's weights.
    policy = load_policy(tiny_model_path)
    policy.load_state_dict(saved["module"])
    assert resumed["rollout_checksums"]["resumed"][0] == pytest.approx(probe_logprob_sum(policy, PROBE_IDS), rel=1e-4)
    assert resumed["rollout_checksums"]["resumed"][0] != resumed["rollout_checksums"]["start"][0]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_3"]

    # One wandb run across the restart (offline: a local directory per process, both with its id); the
    # resumed process added its roles' nodes to the run's config and logged per-role resources.
    run_id = first["wandb_run_id"]
    assert resumed["wandb_run_id"] == run_id and state["wandb_run_id"] == run_id
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all((r / f"run-{run_id}.wandb").is_file() for r in runs)
    resumed_log = (runs[-1] / f"run-{run_id}.wandb").read_bytes()
    assert all(node.encode() in resumed_log for node in resumed["placement"]["learner"])
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for role in ("rollout", "reward", "learner", "reference"):
        assert any(r.get(f"resources/{role}_rss_gib", 0) > 0 for r in logged), role

    # `rewardflow report` on the real run directory: every section has data
    from apps.report import write_report

    page = write_report(str(tmp_path)).read_text()
    for key in ("reward", "accuracy", "phases", "staleness", "weight-sync", "busy", "resources", "samples"):
        assert f'<section id="{key}">' in page, key


def _per_step(out_dir) -> tuple[dict, dict]:
    """Per training step (0-based): its sampled rows (prompt, response, reward), from samples.jsonl;
    and its logged metrics (logged at step + 1), from metrics.jsonl."""
    rows: dict[int, list] = {}
    for line in (out_dir / "samples.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows.setdefault(r["step"], []).append((r["prompt"], r["response"], r["reward"]))
    logged = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return rows, {m["step"] - 1: m for m in logged if "reward/total" in m}  # not the eval-only lines


def test_a_resumed_run_reproduces_the_uninterrupted_one(tiny_model_path, tmp_path):
    """Synchronous GRPO with fixed seeds: 4 steps in one run, and 2 steps then `train.resume=latest`
    to 4, sample the same responses to the same prompts, score them alike and train to the same
    losses. Each response's sampling seed is a function of (train.seed, step, its place in the
    batch), not of the rollout engine's history (`SamplingSpec.response_seed`); the learner restarts
    from the checkpoint's weights and AdamW state, and computes bit for bit as in any other process
    (MKL_CBWR, cluster/placement.py). Tolerance: none for prompts, responses and rewards; 1e-6
    relative for the losses and other float metrics (they match exactly here; without MKL_CBWR they
    differed by ~1e-4 relative, from rounding in the update amplified by AdamW's first steps)."""
    from cluster.launch import train

    def recipe(out_dir, *extra):
        return load_recipe("recipes/grpo_arith.yaml", tiny_overrides(tiny_model_path, out_dir) + [
            "train.save_final=false", "train.checkpoint_every=2", "logging.table_rows=64", *extra])

    train(recipe(tmp_path / "whole", "train.steps=4"))
    train(recipe(tmp_path / "parts", "train.steps=2"))
    resumed = train(recipe(tmp_path / "parts", "train.steps=4", "train.resume=latest"))
    assert resumed["start_step"] == 2

    whole_rows, whole_metrics = _per_step(tmp_path / "whole")
    parts_rows, parts_metrics = _per_step(tmp_path / "parts")
    assert sorted(whole_rows) == sorted(parts_rows) == sorted(whole_metrics) == sorted(parts_metrics) == [0, 1, 2, 3]
    for step in range(4):
        assert len(whole_rows[step]) == 16  # 4 prompts x 4 samples, every row logged
        assert parts_rows[step] == whole_rows[step], f"step {step}: prompts, responses or rewards differ"
        a, b = whole_metrics[step], parts_metrics[step]
        for key in ("reward/total", "reward/answer_format", "reward/math_correct", "rollout/response_len"):
            assert b[key] == a[key], (step, key)
        for key in ("loss/total", "loss/policy", "train/kl", "train/entropy", "train/grad_norm",
                    "train/logprob_mismatch", "train/clip_frac"):
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-9), (step, key)
