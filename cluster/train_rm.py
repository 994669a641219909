"""`rewardflow train-rm`: train a Bradley-Terry reward model from preference pairs.

The job reads (or builds) the pairs on the driver, starts one `RewardModelTrainerActor` per
DeepSpeed rank on a local Ray cluster (or RAY_ADDRESS / cluster.address), measures held-out
pairwise accuracy before training, trains `epochs` passes, measures it again, and saves an HF
checkpoint that `rewards/reward_model.py` (the `reward_model` reward) scores with.
"""
from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

from pydantic import Field, model_validator

from cluster.config import ClusterConfig, ConfigError, ModelConfig, RoleConfig, Section, load_config
from cluster.preference_data import (ArithmeticPrefsConfig, PreferencePair, arithmetic_preferences, read_pairs,
                                     write_pairs)


class PrefsDataConfig(Section):
    """Pairs from JSONL files (prompt / chosen / rejected), or built from the arithmetic task."""

    train_path: str | None = None
    # None: hold out the last eval_fraction of train_path (in its seeded shuffled order).
    eval_path: str | None = None
    eval_fraction: float = Field(0.1, gt=0, lt=1)
    arithmetic: ArithmeticPrefsConfig | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if (self.train_path is None) == (self.arithmetic is None):
            raise ValueError("set exactly one of data.train_path and data.arithmetic")
        if self.eval_path is not None and self.train_path is None:
            raise ValueError("data.eval_path goes with data.train_path (the arithmetic set has its own held-out split)")
        return self


class TrainRMConfig(Section):
    model: ModelConfig = ModelConfig()
    data: PrefsDataConfig
    lr: float = Field(1e-5, gt=0)
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(16, ge=1)  # pairs per optimiser step, over all ranks
    max_length: int = Field(256, ge=8)
    zero_stage: int = Field(0, ge=0, le=3)
    grad_clip: float = Field(1.0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    output_dir: str = "runs/rm"
    seed: int = 0
    learner: RoleConfig = RoleConfig()
    cluster: ClusterConfig = ClusterConfig()

    @model_validator(mode="after")
    def _batch_feeds_ranks(self):
        if self.batch_size < self.learner.num_workers:
            raise ValueError(f"batch_size: {self.batch_size} pairs cannot feed {self.learner.num_workers} ranks")
        return self


def load_rm_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> TrainRMConfig:
    """YAML + dotted overrides, validated once. Raises ConfigError (one line naming the key)."""
    return load_config(TrainRMConfig, path, overrides)


def load_pairs(cfg: PrefsDataConfig, seed: int) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, held-out) pairs for the job."""
    if cfg.arithmetic is not None:
        return arithmetic_preferences(cfg.arithmetic)
    train = read_pairs(cfg.train_path, "data.train_path")
    if cfg.eval_path is not None:
        return train, read_pairs(cfg.eval_path, "data.eval_path")
    if len(train) < 2:
        raise ConfigError(f"data.train_path: {cfg.train_path} has {len(train)} pair; need 2 to hold some out")
    random.Random(seed).shuffle(train)
    n_eval = max(1, round(len(train) * cfg.eval_fraction))
    return train[:-n_eval], train[-n_eval:]


class RewardModelTrainers:
    """The DeepSpeed ranks of the reward-model trainer, as one object."""

    def __init__(self, cfg: TrainRMConfig, model_path: str):
        import ray

        from actors.reward_model import RewardModelTrainerActor
        from cluster.placement import place_role, threads_for, worker_env

        world = cfg.learner.num_workers
        options = place_role("learner", cfg.learner, cfg.cluster.placement_strategy)
        remote_cls = ray.remote(RewardModelTrainerActor)
        self.actors = [remote_cls.options(**opts, runtime_env=worker_env(cfg.learner)).remote(
            i, world, model_path, cfg, threads_for()) for i, opts in enumerate(options)]
        addr, port = ray.get(self.actors[0].address.remote())
        self.setup_s = max(self._call("setup", addr, port))

    def _call(self, method: str, *args) -> list:
        """The same call on every rank; fails fast when one raises (see `get_all`)."""
        from cluster.groups import get_all

        return get_all([getattr(a, method).remote(*args) for a in self.actors], self.actors)

    def _summed(self, method: str, *args) -> dict[str, float]:
        results = self._call(method, *args)
        return {k: sum(r[k] for r in results) for k in results[0]}

    def evaluate(self, pairs_ref) -> dict[str, float]:
        s = self._summed("evaluate", pairs_ref)
        n = max(s["count"], 1.0)
        return {"accuracy": s["correct"] / n, "loss": s["loss_sum"] / n, "margin": s["margin_sum"] / n}

    def train_epoch(self, pairs_ref, epoch: int) -> dict[str, float]:
        s = self._summed("train_epoch", pairs_ref, epoch)
        n = max(s["count"], 1.0)
        return {"loss": s["loss_sum"] / n, "accuracy": s["correct"] / n, "steps": s["steps"] / len(self.actors)}

    def save(self, out_dir: str) -> str:
        return self._call("save", out_dir)[0]


def train_rm(cfg: TrainRMConfig) -> dict:
    """Run the job; returns the summary also written to `<output_dir>/summary.json`."""
    import ray

    from cluster.placement import start_ray
    from learners.models import resolve_model_path

    started = time.perf_counter()
    model_path = resolve_model_path(cfg.model.path)
    out_dir = Path(cfg.output_dir).resolve()
    train, held_out = load_pairs(cfg.data, cfg.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.data.arithmetic is not None:
        write_pairs(train, out_dir / "prefs_train.jsonl")
        write_pairs(held_out, out_dir / "prefs_eval.jsonl")
    address = start_ray(cfg, ["learner"])
    try:
        trainers = RewardModelTrainers(cfg, model_path)
        train_ref, eval_ref = ray.put(train), ray.put(held_out)
        before = trainers.evaluate(eval_ref)
        print(f"rewardflow train-rm: held-out pairwise accuracy {before['accuracy']:.3f} before training", flush=True)
        epochs = []
        for epoch in range(cfg.epochs):
            t0 = time.perf_counter()
            row = {"epoch": epoch + 1, "train": trainers.train_epoch(train_ref, epoch)}
            row["eval"] = trainers.evaluate(eval_ref)
            row["wall_s"] = time.perf_counter() - t0
            epochs.append(row)
            print(f"rewardflow train-rm: epoch {epoch + 1}/{cfg.epochs}: train loss {row['train']['loss']:.4f} "
                  f"acc {row['train']['accuracy']:.3f}; held-out acc {row['eval']['accuracy']:.3f} "
                  f"({row['wall_s']:.0f}s)", flush=True)
        checkpoint = trainers.save(str(out_dir / "final"))
    finally:
        ray.shutdown()
    summary = {
        "train_pairs": len(train), "eval_pairs": len(held_out),
        "eval_accuracy_before": before["accuracy"], "eval_accuracy_after": epochs[-1]["eval"]["accuracy"],
        "eval_before": before, "epochs": epochs, "checkpoint": checkpoint, "setup_s": trainers.setup_s,
        "wall_s": time.perf_counter() - started, "ray_address": address, "config": cfg.model_dump(mode="json"),
    }
    summary["summary_path"] = str(out_dir / "summary.json")
    Path(summary["summary_path"]).write_text(json.dumps(summary, indent=1))
    return summary
