"""The CLI in a subprocess: bad input gets one line naming the key and exit code 2."""
import os
import subprocess
import sys

import pytest


def _run(*args):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "apps.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.mark.parametrize("args,message", [
    (["train", "recipes/grpo_arith.yaml", "algo.clip_eps=-1"],
     "rewardflow: error: algo.clip_eps: Input should be greater than 0 (got -1)"),
    (["train", "recipes/grpo_arith.yaml", "learner.zero_stag=1"], "rewardflow: error: learner.zero_stag: unknown key"),
    (["train", "recipes/missing.yaml"], "rewardflow: error: recipe recipes/missing.yaml: no such file"),
    (["train", "recipes/grpo_arith.yaml", "train.resume=nowhere"],
     "rewardflow: error: train.resume: nowhere is not a checkpoint directory (no state.json)"),
    (["train", "recipes/grpo_arith.yaml", "model.path=/nonexistent/model"],
     "rewardflow: error: model.path: /nonexistent/model is not a local Hugging Face model directory (no config.json)"),
    (["submit", "recipes/grpo_arith.yaml", "algo.group_size=1"],
     "rewardflow: error: algo.group_size: Input should be greater than or equal to 2 (got 1)"),
])
def test_bad_recipe_is_rejected_with_one_line(args, message, tmp_path):
    proc = _run(*args, f"train.output_dir={tmp_path}/out")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [message]
    assert not (tmp_path / "out").exists()


def test_help_lists_commands():
    proc = _run("--help")
    assert proc.returncode == 0
    for cmd in ("train", "setup", "submit"):
        assert cmd in proc.stdout


@pytest.mark.parametrize("overrides,message", [
    (["model.path=/nonexistent/rm"],
     "rewardflow: error: model.path: /nonexistent/rm is not a local Hugging Face model directory (no config.json)"),
    (["data.arithmetic.sampled.policy=/nonexistent/policy"],
     "rewardflow: error: data.arithmetic.sampled.policy: /nonexistent/policy is not a local Hugging Face model "
     "directory (no config.json)"),
    (["data.arithmetic.sampled.n=0"],
     "rewardflow: error: data.arithmetic.sampled.n: Input should be greater than or equal to 1 (got 0)"),
])
def test_bad_train_rm_recipe_is_rejected_with_one_line(overrides, message, tiny_model_path, tmp_path):
    # The second stage's recipe: its reward model and the policy it samples are both paths.
    proc = _run("train-rm", "recipes/rm_arith_sampled.yaml", f"model.path={tiny_model_path}", *overrides,
                f"output_dir={tmp_path}/out")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [message]
    assert not (tmp_path / "out").exists()
