"""Checkpoint directories: atomic publish, pruning, and `train.resume` checks (one-line errors)."""
import json

import pytest

from cluster.checkpoint import begin, commit, complete_checkpoints, resolve_resume
from cluster.recipe import ConfigError, load_recipe


def _cfg(tmp_path, *overrides):
    return load_recipe("recipes/grpo_arith.yaml", [f"train.output_dir={tmp_path}", *overrides])


def _write(tmp_path, step, *overrides):
    return commit(begin(tmp_path / "checkpoints", step), {"step": step}, _cfg(tmp_path, *overrides))


def test_commit_publishes_complete_checkpoints_and_keeps_the_newest(tmp_path):
    for step in (9, 10, 11):
        _write(tmp_path, step, "train.keep_checkpoints=2")
    begin(tmp_path / "checkpoints", 12)  # a save that never finished
    assert [p.name for p in complete_checkpoints(tmp_path / "checkpoints")] == ["step_10", "step_11"]
    assert (tmp_path / "checkpoints/step_12.tmp").is_dir()


def test_resume_latest_picks_the_newest_complete_checkpoint(tmp_path):
    _write(tmp_path, 2, "train.keep_checkpoints=5")
    _write(tmp_path, 10, "train.keep_checkpoints=5")
    path, state = resolve_resume(_cfg(tmp_path, "train.resume=latest", "train.steps=20"))
    assert path.name == "step_10" and state["step"] == 10
    path, state = resolve_resume(_cfg(tmp_path, f"train.resume={tmp_path}/checkpoints/step_2"))
    assert path.name == "step_2" and state["step"] == 2
    assert resolve_resume(_cfg(tmp_path)) is None


@pytest.mark.parametrize("overrides, message", [
    (["train.resume=latest"], "train.resume=latest: no checkpoint in"),
    (["train.resume=nowhere"], "train.resume: nowhere is not a checkpoint directory"),
])
def test_resume_without_a_checkpoint_is_a_one_line_error(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_resume(_cfg(tmp_path, *overrides))


def test_resume_refuses_a_checkpoint_of_another_recipe_or_with_nothing_left(tmp_path):
    _write(tmp_path, 4, "train.prompts_per_step=4")
    with pytest.raises(ConfigError, match=r"written with train.prompts_per_step=4, this recipe has 8$"):
        resolve_resume(_cfg(tmp_path, "train.resume=latest"))
    with pytest.raises(ConfigError, match=r"at step 4, train.steps=4 leaves nothing to train"):
        resolve_resume(_cfg(tmp_path, "train.resume=latest", "train.prompts_per_step=4", "train.steps=4"))
    state = json.loads((tmp_path / "checkpoints/step_4/state.json").read_text())
    assert state["recipe"]["train"]["prompts_per_step"] == 4
