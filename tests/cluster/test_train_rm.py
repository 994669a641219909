"""`rewardflow train-rm` through the real CLI in a subprocess: Ray + DeepSpeed (2 ranks, ZeRO-2) on
the tiny model, with pairs from the policy's own samples (vLLM), a few steps, then the saved reward
model scores through the `reward_model` reward."""
import json
import os
import subprocess
import sys

import pytest

from rewards.base import Sample
from rewards.math_correct import MathCorrect, MathCorrectConfig
from rewards.reward_model import RewardModelConfig, RewardModelScore

pytestmark = pytest.mark.cluster


def test_train_rm_writes_summary_and_a_scorable_checkpoint(tiny_model_path, tmp_path):
    out = tmp_path / "rm"
    cmd = [sys.executable, "-m", "apps.cli", "train-rm", "recipes/rm_arith.yaml",
           f"model.path={tiny_model_path}", f"output_dir={out}", "data.arithmetic.task.train_size=8",
           "data.arithmetic.task.eval_size=3", "data.arithmetic.pairs_per_problem=1", "batch_size=4",
           "epochs=1", "lr=1e-3", "max_length=64", "zero_stage=2", "learner.num_workers=2",
           "learner.num_cpus=0.5", f"data.arithmetic.sampled.policy={tiny_model_path}", "data.arithmetic.sampled.n=2",
           "data.arithmetic.sampled.max_new_tokens=8"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "RAY_ADDRESS": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "held-out pairwise accuracy" in proc.stdout

    summary = json.loads((out / "summary.json").read_text())
    sampled = summary["sampled"]
    # The random tiny model never answers right: each distinct sample of each distinct problem (8 train,
    # 3 held-out) is a rejected response, against a written-out right answer.
    assert (sampled["train_sample_accuracy"], sampled["held_out_sample_accuracy"]) == (0.0, 0.0)
    assert (sampled["train_pairs"], sampled["eval_pairs"]) == (16, 6)
    assert (summary["train_pairs"], summary["eval_pairs"]) == (8 + 16, 3)
    assert summary["epochs"][0]["train"]["steps"] == 6  # 24 pairs / 4 per step
    for key in ("eval_accuracy_before", "eval_accuracy_after"):
        assert 0.0 <= summary[key] <= 1.0 and 0.0 <= sampled[key] <= 1.0
    train = [json.loads(line) for line in (out / "prefs_train.jsonl").read_text().splitlines()]
    held_out = [json.loads(line) for line in (out / "prefs_eval_sampled.jsonl").read_text().splitlines()]
    assert (len(train), len(held_out)) == (24, 6)
    verify = MathCorrect(MathCorrectConfig())
    for pair in train[8:] + held_out:
        answer = str(eval(pair["prompt"].removeprefix("What is ").split("?")[0]))  # noqa: S307
        assert verify.score(Sample(pair["prompt"], pair["chosen"], answer)) == 1.0, pair
        assert verify.score(Sample(pair["prompt"], pair["rejected"], answer)) == 0.0, pair

    reward = RewardModelScore(RewardModelConfig(path=summary["checkpoint"]))
    samples = [Sample("What is 2 + 2? Answer with just the number.", r) for r in ("4", "5")]
    values = reward.score_batch(samples)
    assert values == pytest.approx([reward.score(s) for s in samples])
    assert values[0] != values[1]
