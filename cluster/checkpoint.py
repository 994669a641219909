"""Run checkpoints: what a restarted loop needs to continue where the last one stopped.

    <output_dir>/checkpoints/step_<N>/
        state.json   the loop's state after N steps (cluster.controller.Controller.state) + recipe
        learner/     DeepSpeed checkpoint of the policy: weights, optimiser, scheduler (every rank)
        critic/      the same for the value model, when the algorithm has one

A checkpoint is written under a temporary name and renamed when complete, so a crash while
saving never leaves a directory that looks resumable. The ranks write to one path: on several
nodes it must be a shared filesystem.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from cluster.recipe import ConfigError, RecipeConfig, dump_recipe

STATE = "state.json"
# Settings a resumed run must share with the run it continues: they decide which prompts the
# remaining steps draw and what the saved optimiser state belongs to.
MUST_MATCH = ("model.path", "task", "algo.name", "train.seed", "train.prompts_per_step")


def checkpoint_root(cfg: RecipeConfig) -> Path:
    return Path(cfg.train.output_dir).resolve() / "checkpoints"


def complete_checkpoints(root: Path) -> list[Path]:
    """Finished step_N directories under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_")
             and p.name[5:].isdigit() and (p / STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def begin(root: Path, steps_done: int) -> Path:
    """An empty temporary directory for the checkpoint after `steps_done` steps."""
    tmp = root / f"step_{steps_done}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def commit(tmp: Path, state: dict, cfg: RecipeConfig) -> Path:
    """Write the state, publish the checkpoint under its final name, drop the oldest beyond
    `train.keep_checkpoints`."""
    (tmp / STATE).write_text(json.dumps({**state, "recipe": dump_recipe(cfg)}, indent=2))
    final = tmp.with_name(tmp.name.removesuffix(".tmp"))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in complete_checkpoints(final.parent)[:-cfg.train.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _get(tree: dict, dotted: str):
    for key in dotted.split("."):
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


def resolve_resume(cfg: RecipeConfig) -> tuple[Path, dict] | None:
    """(checkpoint directory, its state) for `train.resume`, checked against this recipe; None
    when not resuming. Raises ConfigError with one line naming what is wrong."""
    where = cfg.train.resume
    if where is None:
        return None
    if where == "latest":
        found = complete_checkpoints(checkpoint_root(cfg))
        if not found:
            raise ConfigError(f"train.resume=latest: no checkpoint in {checkpoint_root(cfg)}")
        path = found[-1]
    else:
        path = Path(where).resolve()
        if not (path / STATE).is_file():
            raise ConfigError(f"train.resume: {where} is not a checkpoint directory (no {STATE})")
    state = json.loads((path / STATE).read_text())
    ours = dump_recipe(cfg)
    for key in MUST_MATCH:
        theirs, mine = _get(state["recipe"], key), _get(ours, key)
        if theirs != mine:
            raise ConfigError(f"train.resume: the checkpoint was written with {key}={theirs!r}, this recipe has {mine!r}")
    if state["step"] >= cfg.train.steps:
        raise ConfigError(f"train.resume: the checkpoint is at step {state['step']}, "
                          f"train.steps={cfg.train.steps} leaves nothing to train")
    return path, state
