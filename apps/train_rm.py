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

from cluster.recipe import ClusterConfig, ModelConfig, RoleConfig
from core.config import ConfigError, Section, load_config, make_output_dir
from core.preference_data import (ArithmeticPrefsConfig, PreferencePair, arithmetic_preferences,
                                  pairs_from_samples, read_pairs, write_pairs)


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


def sample_policy(rows: list, prefs: ArithmeticPrefsConfig, path: str, cfg: TrainRMConfig
                  ) -> tuple[list[list[str]], list[list[bool]]]:
    """`prefs.sampled.n` responses per problem from the policy (a rollout group of one vLLM actor
    with the learner role's resources, stopped afterwards) and the final-answer check of each."""
    from cluster.groups import RolloutGroup
    from core.data import TaskConfig, render_prompts
    from core.models import load_tokenizer
    from core.protocol import SamplingSpec
    from rewards.base import Sample
    from rewards.math_correct import MathCorrect, MathCorrectConfig

    spec = prefs.sampled
    prompts = render_prompts(rows, load_tokenizer(path), TaskConfig(instruction=prefs.instruction))
    max_len = max(len(ids) for ids in prompts.token_ids) + spec.max_new_tokens
    one_worker = cfg.learner.model_copy(update={"num_workers": 1})
    group = RolloutGroup(one_worker, cfg.cluster.placement_strategy, path, max_len, seed=cfg.seed)
    try:
        # The engine is seeded; a per-request seed breaks vLLM's CPU runner (see cluster/controller.py).
        out = group.generate(prompts, SamplingSpec(n=spec.n, max_new_tokens=spec.max_new_tokens,
                                                   temperature=spec.temperature))
    finally:
        group.stop()
    verify = MathCorrect(MathCorrectConfig())
    texts: list[list[str]] = [[] for _ in rows]
    correct: list[list[bool]] = [[] for _ in rows]
    for text, g in zip(out.response_texts, out.group_ids):
        texts[g].append(text)
        correct[g].append(verify.score(Sample(prompts.texts[g], text, rows[g].answer)) == 1.0)
    return texts, correct


def sampled_pairs(prefs: ArithmeticPrefsConfig, policy_path: str, cfg: TrainRMConfig
                  ) -> tuple[list[PreferencePair], list[PreferencePair], dict[str, float]]:
    """(train, held-out) pairs from the policy's samples on the task's train and eval problems,
    and statistics: how often the policy was right on each, how many pairs each gave."""
    from core.data import arithmetic_rows

    train_rows, eval_rows = arithmetic_rows(prefs.task)
    train_rows = list({r.id: r for r in train_rows}.values())  # a problem the split repeats is sampled once
    texts, correct = sample_policy(train_rows + eval_rows, prefs, policy_path, cfg)
    rng = random.Random(cfg.seed + 3)
    out, stats, lo = [], {}, 0
    for name, rows in (("train", train_rows), ("held_out", eval_rows)):
        part = slice(lo, lo + len(rows))
        lo += len(rows)
        stats[f"{name}_sample_accuracy"] = sum(map(sum, correct[part])) / max(sum(map(len, correct[part])), 1)
        out.append(pairs_from_samples(rows, texts[part], correct[part], prefs.instruction, rng))
    stats.update(train_pairs=len(out[0]), eval_pairs=len(out[1]))
    return out[0], out[1], stats


def add_sampled_pairs(cfg: TrainRMConfig, policy_path: str, train: list[PreferencePair],
                      sets: dict[str, list[PreferencePair]]) -> tuple[list[PreferencePair], dict[str, float]]:
    """The train pairs with the policy's sampled ones added; adds the held-out set "eval_sampled"
    to `sets`; returns the sampling statistics too."""
    sampled_train, sets["eval_sampled"], sampling = sampled_pairs(cfg.data.arithmetic, policy_path, cfg)
    print(f"rewardflow train-rm: {len(sampled_train)} + {len(sets['eval_sampled'])} pairs from policy "
          f"samples (right {sampling['train_sample_accuracy']:.3f} of the time)", flush=True)
    return train + sampled_train, sampling


def train_epochs(cfg: TrainRMConfig, trainers, train_ref, refs: dict) -> tuple[dict, list[dict]]:
    """Held-out statistics before training, then one row per epoch (train and held-out)."""
    def evaluate() -> dict:
        return {k: trainers.evaluate(ref) for k, ref in refs.items()}

    before = evaluate()
    print(f"rewardflow train-rm: held-out pairwise accuracy {before['eval']['accuracy']:.3f} before training"
          + "".join(f", {k} {v['accuracy']:.3f}" for k, v in before.items() if k != "eval"), flush=True)
    epochs = []
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        row = {"epoch": epoch + 1, "train": trainers.train_epoch(train_ref, epoch), **evaluate()}
        row["wall_s"] = time.perf_counter() - t0
        epochs.append(row)
        print(f"rewardflow train-rm: epoch {epoch + 1}/{cfg.epochs}: train loss {row['train']['loss']:.4f} "
              f"acc {row['train']['accuracy']:.3f}; held-out acc {row['eval']['accuracy']:.3f}"
              + "".join(f", {k} {row[k]['accuracy']:.3f}" for k in refs if k != "eval")
              + f" ({row['wall_s']:.0f}s)", flush=True)
    return before, epochs


def train_rm(cfg: TrainRMConfig) -> dict:
    """Run the job; returns the summary also written to `<output_dir>/summary.json`."""
    import ray

    from cluster.groups import RewardModelTrainerGroup
    from cluster.placement import start_ray
    from core.models import resolve_model_path

    started = time.perf_counter()
    model_path = resolve_model_path(cfg.model.path)
    sampled = cfg.data.arithmetic.sampled if cfg.data.arithmetic is not None else None
    if sampled is not None:
        policy_path = resolve_model_path(sampled.policy, "data.arithmetic.sampled.policy")
    train, held_out = load_pairs(cfg.data, cfg.seed)
    out_dir = make_output_dir(cfg.output_dir, "output_dir")
    address = start_ray(cfg, ["learner"])
    try:
        # Held-out sets by name: "eval" (the built or given pairs), "eval_sampled" (policy samples).
        sets, sampling = {"eval": held_out}, {}
        if sampled is not None:
            train, sampling = add_sampled_pairs(cfg, policy_path, train, sets)
        if cfg.data.arithmetic is not None:  # what was built, for inspection
            for name, pairs in (("train", train), *sets.items()):
                write_pairs(pairs, out_dir / f"prefs_{name}.jsonl")
        trainers = RewardModelTrainerGroup(cfg, model_path)
        refs = {k: ray.put(v) for k, v in sets.items() if v}
        before, epochs = train_epochs(cfg, trainers, ray.put(train), refs)
        checkpoint = trainers.save(str(out_dir / "final"))
    finally:
        ray.shutdown()
    summary = {
        "train_pairs": len(train), "eval_pairs": len(held_out),
        "eval_accuracy_before": before["eval"]["accuracy"], "eval_accuracy_after": epochs[-1]["eval"]["accuracy"],
        "eval_before": before["eval"], "epochs": epochs, "checkpoint": checkpoint, "setup_s": trainers.setup_s,
        "wall_s": time.perf_counter() - started, "ray_address": address, "config": cfg.model_dump(mode="json"),
    }
    if "eval_sampled" in refs:
        summary["sampled"] = {**sampling, "eval_before": before["eval_sampled"],
                              "eval_accuracy_before": before["eval_sampled"]["accuracy"],
                              "eval_accuracy_after": epochs[-1]["eval_sampled"]["accuracy"]}
    summary["summary_path"] = str(out_dir / "summary.json")
    Path(summary["summary_path"]).write_text(json.dumps(summary, indent=1))
    return summary
