"""Checkpoint directories: atomic publish, pruning, `train.resume` checks (one-line errors), and
the signed manifest that keeps `train.resume` from loading files the run did not write."""
import hashlib
import json
import os
import pickle
import stat

import pytest

from cluster.checkpoint import (MANIFEST, STATE_KEYS, begin, checkpoint_key, commit, complete_checkpoints,
                                key_path, resolve_resume)
from cluster.recipe import ConfigError, load_recipe

# Small stand-ins for what DeepSpeed's save_checkpoint writes from each rank.
DS_FILES = ("learner/latest", "learner/state/mp_rank_00_model_states.pt",
            "learner/state/zero_pp_rank_0_mp_rank_00_optim_states.pt",
            "learner/state/zero_pp_rank_1_mp_rank_00_optim_states.pt")
PT = "learner/state/mp_rank_00_model_states.pt"


def _cfg(tmp_path, *overrides):
    return load_recipe("recipes/grpo_arith.yaml", [f"train.output_dir={tmp_path}", *overrides])


def _write(tmp_path, step, *overrides):
    tmp = begin(tmp_path / "checkpoints", step)
    for i, rel in enumerate(DS_FILES):
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(os.urandom(64 + i))
    state = {**dict.fromkeys(STATE_KEYS), "step": step}
    return commit(tmp, state, _cfg(tmp_path, *overrides))


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


# --- the signed manifest ----------------------------------------------------------------------


class _Payload:
    """Unpickling this runs a shell command that leaves a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _resume(tmp_path):
    return resolve_resume(_cfg(tmp_path, "train.resume=latest", "train.steps=20"))


def test_commit_signs_every_file_and_the_checkpoint_resolves(tmp_path):
    ckpt = _write(tmp_path, 3)
    listed = json.loads((ckpt / MANIFEST).read_text())["files"]
    assert sorted(listed) == sorted([*DS_FILES, "state.json"])
    assert listed[PT]["size"] == 65 and len(listed[PT]["sha256"]) == 64
    assert _resume(tmp_path)[0] == ckpt
    # The key lives outside the run directory, made once, readable by this user only.
    assert not key_path().is_relative_to(tmp_path)
    assert stat.S_IMODE(key_path().stat().st_mode) == 0o600 and len(checkpoint_key()) == 32
    assert checkpoint_key(create=True) == checkpoint_key()


def test_a_planted_pickle_is_refused_without_being_unpickled(tmp_path):
    import torch

    ckpt = _write(tmp_path, 3)
    marker = tmp_path / "pwned"
    torch.save({"module": _Payload(marker)}, ckpt / PT)
    with pytest.raises(ConfigError, match=f"^train.resume: {ckpt}/{PT} does not match the checkpoint's manifest "
                                          r"\(not written by this run\)$"):
        _resume(tmp_path)
    # The same payload in a file of exactly the original size: caught by its digest.
    payload = pickle.dumps(_Payload(marker))
    (ckpt / PT).write_bytes(payload[:65].ljust(65, b"."))
    with pytest.raises(ConfigError, match=f"{PT} does not match the checkpoint's manifest"):
        _resume(tmp_path)
    assert not marker.exists()
    pickle.loads(payload)  # the payload is live: unpickling it does leave the marker
    assert marker.exists()


def test_added_removed_and_linked_files_are_refused(tmp_path):
    ckpt = _write(tmp_path, 3)
    (ckpt / "learner/state/extra.pt").write_bytes(b"x")
    with pytest.raises(ConfigError, match=f"^train.resume: {ckpt}/learner/state/extra.pt is not in the "
                                          r"checkpoint's manifest \(not written by this run\)$"):
        _resume(tmp_path)
    (ckpt / "learner/state/extra.pt").unlink()
    (ckpt / DS_FILES[2]).unlink()
    with pytest.raises(ConfigError, match=f"^train.resume: {ckpt}/{DS_FILES[2]} is missing"):
        _resume(tmp_path)
    (ckpt / DS_FILES[2]).symlink_to(ckpt / DS_FILES[3])  # same size, same bytes: a link all the same
    with pytest.raises(ConfigError, match=f"{DS_FILES[2]} does not match the checkpoint's manifest"):
        _resume(tmp_path)


def test_forged_and_missing_manifests_are_refused(tmp_path):
    ckpt = _write(tmp_path, 3)
    (ckpt / PT).write_bytes(b"planted".ljust(65))
    manifest = json.loads((ckpt / MANIFEST).read_text())
    manifest["files"][PT]["sha256"] = hashlib.sha256((ckpt / PT).read_bytes()).hexdigest()
    (ckpt / MANIFEST).write_text(json.dumps(manifest))  # edited digest, old signature
    with pytest.raises(ConfigError, match=f"^train.resume: {ckpt}/{MANIFEST} is not signed with {key_path()} "
                                          r"\(not written by this run\)$"):
        _resume(tmp_path)
    manifest["hmac"] = "00" * 32
    (ckpt / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="is not signed with"):
        _resume(tmp_path)
    (ckpt / MANIFEST).write_text("{not json")
    with pytest.raises(ConfigError, match=f"^train.resume: {ckpt}/{MANIFEST} is not a checkpoint manifest"):
        _resume(tmp_path)
    (ckpt / MANIFEST).unlink()
    with pytest.raises(ConfigError, match=fr"^train.resume: {ckpt} has no {MANIFEST} \(not written by this run\)$"):
        _resume(tmp_path)


def test_a_checkpoint_signed_with_another_key_is_refused(tmp_path, monkeypatch):
    _write(tmp_path, 3)
    monkeypatch.setenv("REWARDFLOW_CACHE", str(tmp_path / "another-users-cache"))
    with pytest.raises(ConfigError, match=r"cannot be checked: no checkpoint key at .*another-users-cache/checkpoint.key"):
        _resume(tmp_path)
    checkpoint_key(create=True)
    with pytest.raises(ConfigError, match="is not signed with"):
        _resume(tmp_path)
    key_path().chmod(0o644)
    with pytest.raises(ConfigError, match=r"checkpoint key .* is accessible to other users; chmod 600 it$"):
        _resume(tmp_path)


@pytest.mark.parametrize("text, message", [
    ("{oops", r"state.json is not JSON \(Expecting property name enclosed in double quotes: line 1 column 2"),
    ("[1, 2]", r"state.json is not a JSON object$"),
    ('{"step": 3}', (r"state.json lacks prompts_consumed, samples_seen, rewards, eval_accuracy_before, "
                     r"accuracy_curve, wall_s, recipe$")),
])
def test_a_broken_state_json_is_a_one_line_error(tmp_path, text, message):
    """A state.json the run signed but that is not what a restart reads (a bug, an old version)."""
    from cluster.checkpoint import write_manifest

    ckpt = _write(tmp_path, 3)
    (ckpt / "state.json").write_text(text)
    write_manifest(ckpt, checkpoint_key())
    with pytest.raises(ConfigError, match=f"^train.resume: {ckpt}/{message}"):
        _resume(tmp_path)
