"""`rewardflow sft`: supervised fine-tuning of the policy on DeepSpeed, before RL.

The job builds every data source on the driver (files, IFT, EFT: `core/sft_data.py`), renders
each conversation with the tokenizer's chat template and leaves out the examples longer than
`max_len` (counted and reported; none is cut, so no response loses its end or its EOS), holds out
`data.eval_fraction` of each source, and only then starts one `SFTTrainerActor` per DeepSpeed
rank on a local Ray cluster (or RAY_ADDRESS / cluster.address). It measures the held-out loss,
trains `steps` optimiser steps on the shuffled mixture, measures it again, and saves an HF
checkpoint (`<output_dir>/final`) that `core.models.load_policy`, vLLM and a `train` recipe's
`model.path` load. With IFT + EFT sources this is the M1 model of Self-Rewarding LMs (Yuan et
al. 2024): instruction following plus the judge format the policy will later use on itself.
"""
from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

from pydantic import Field, model_validator

from cluster.recipe import ClusterConfig, LearnerConfig, ModelConfig
from core.config import ConfigError, Section, load_config, make_output_dir
from core.sft_data import (Conversation, EftSourceConfig, FileSourceConfig, SFTDataConfig, conversation_segments,
                           ift_conversations, pair_conversations, read_conversations, source_name)
from learners.sft import TokenizedExample, example_tokens


class SFTConfig(Section):
    """The `sft` recipe: where the examples come from, how long to train, the ranks."""

    model: ModelConfig = ModelConfig()
    data: SFTDataConfig
    lr: float = Field(1e-5, gt=0)
    # Optimiser steps; None: `epochs` passes over the training examples (a last partial batch of
    # each pass is left out). Set one of the two.
    steps: int | None = Field(None, ge=1)
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(16, ge=1)  # examples per optimiser step, over all ranks
    # Tokens of one example, template included; a longer example is left out (and counted).
    max_len: int = Field(1024, ge=2)
    output_dir: str = "runs/sft"
    seed: int = 0
    learner: LearnerConfig = LearnerConfig()
    cluster: ClusterConfig = ClusterConfig()

    @model_validator(mode="after")
    def _consistent(self):
        if {"steps", "epochs"} <= self.model_fields_set and self.steps is not None:
            raise ValueError(f"epochs: set steps or epochs, not both (steps={self.steps} is set; "
                             "steps=null counts epochs)")
        if self.batch_size < self.learner.num_workers:
            raise ValueError(f"batch_size: {self.batch_size} examples cannot feed {self.learner.num_workers} ranks")
        return self


def load_sft_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> SFTConfig:
    """YAML + dotted overrides, validated once. Raises ConfigError (one line naming the key)."""
    return load_config(SFTConfig, path, overrides)


def load_sources(cfg: SFTDataConfig) -> dict[str, list[Conversation]]:
    """Every source's conversations, by source name (a repeated name gets its index appended)."""
    from core.data import TaskConfig
    from rewards.self_judge import DEFAULT_RUBRIC, eft_examples, load_template

    out: dict[str, list[Conversation]] = {}
    for i, src in enumerate(cfg.sources):
        key = f"data.sources.{i}"
        if isinstance(src, FileSourceConfig):
            convs = read_conversations(src.path, f"{key}.path")
        elif isinstance(src, EftSourceConfig):
            try:
                template = DEFAULT_RUBRIC if src.template is None else load_template(src.template)
            except ValueError as e:
                raise ConfigError(f"{key}.template: {e}") from None
            task = TaskConfig(kind="arithmetic", arithmetic=src.task, instruction=src.instruction)
            convs = pair_conversations(eft_examples(task, src.n, src.seed, template), "eft")
        else:
            convs = ift_conversations(src)
        name = source_name(src)
        out[f"{name}_{i}" if name in out else name] = convs
    return out


def tokenize(tokenizer, convs: list[Conversation], max_len: int) -> tuple[list[TokenizedExample], int]:
    """The conversations as token examples, and how many were left out as longer than `max_len`."""
    out = []
    for conv in convs:
        try:
            example = example_tokens(conversation_segments(tokenizer, conv.messages))
        except ValueError as e:
            raise ConfigError(f"model.path: {conv.where}: {e}") from None
        if len(example) <= max_len:
            out.append(example)
    return out, len(convs) - len(out)


def split_held_out(examples: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, held-out): a seeded shuffle, then the last round(n · fraction) held out (at least
    one when the fraction is set and n ≥ 2; never all of them)."""
    examples = list(examples)
    random.Random(seed).shuffle(examples)
    n_eval = min(max(round(len(examples) * fraction), int(fraction > 0)), len(examples) - 1) if examples else 0
    return examples[:len(examples) - n_eval], examples[len(examples) - n_eval:]


def build_examples(cfg: SFTConfig, tokenizer) -> tuple[list[TokenizedExample], dict[str, list[TokenizedExample]], dict]:
    """(training mixture, held-out examples by source, per-source counts); ConfigError on bad data,
    or when nothing is left to train on."""
    train, held_out, counts = [], {}, {}
    for i, (name, convs) in enumerate(load_sources(cfg.data).items()):
        examples, dropped = tokenize(tokenizer, convs, cfg.max_len)
        tr, ev = split_held_out(examples, cfg.data.eval_fraction, cfg.seed + i)
        train += tr
        if ev:
            held_out[name] = ev
        counts[name] = {"train": len(tr), "eval": len(ev), "overlong": dropped}
    if len(train) < cfg.batch_size:
        overlong = sum(c["overlong"] for c in counts.values())
        raise ConfigError(f"batch_size: {cfg.batch_size} examples per step, but the sources leave {len(train)} "
                          f"to train on ({overlong} longer than max_len={cfg.max_len} left out)")
    return train, held_out, counts


def step_batches(n: int, cfg: SFTConfig) -> list[list[int]]:
    """Example indices of each optimiser step: seeded passes over the n examples, each cut into
    batches of `batch_size` (a pass's last partial batch is left out)."""
    per_pass = n // cfg.batch_size
    steps = cfg.steps or cfg.epochs * per_pass
    batches: list[list[int]] = []
    for epoch in range(-(-steps // per_pass)):
        order = list(range(n))
        random.Random(cfg.seed * 1000 + epoch).shuffle(order)
        batches += [order[k * cfg.batch_size:(k + 1) * cfg.batch_size] for k in range(per_pass)]
    return batches[:steps]


def eval_losses(trainers, held_out: dict[str, list[TokenizedExample]]) -> dict[str, float] | None:
    """Token-mean held-out loss per source and over all of them ("all"); None without a held-out set."""
    if not held_out:
        return None
    sums = {name: trainers.nll_sums(examples) for name, examples in held_out.items()}
    total = {k: sum(s[k] for s in sums.values()) for k in ("nll_sum", "tokens")}
    return {"all": total["nll_sum"] / total["tokens"], **{n: s["nll_sum"] / s["tokens"] for n, s in sums.items()}}


def _losses_line(losses: dict[str, float]) -> str:
    others = [f"{k} {v:.4f}" for k, v in losses.items() if k != "all"]
    return f"{losses['all']:.4f}" + (f" ({', '.join(others)})" if len(others) > 1 else "")


def train_steps(trainers, train: list[TokenizedExample], cfg: SFTConfig) -> list[dict[str, float]]:
    """One row per optimiser step: the step's token-mean loss (before its update) and grad norm."""
    batches = step_batches(len(train), cfg)
    every = max(1, len(batches) // 10)
    rows = []
    for step, idx in enumerate(batches, 1):
        t0 = time.perf_counter()
        out = trainers.train_step([train[i] for i in idx])
        rows.append({"step": step, "loss": out["loss/sft"], "grad_norm": out.get("train/grad_norm"),
                     "wall_s": time.perf_counter() - t0})
        if step == 1 or step % every == 0 or step == len(batches):
            print(f"rewardflow sft: step {step}/{len(batches)} loss {out['loss/sft']:.4f} "
                  f"({rows[-1]['wall_s']:.1f}s)", flush=True)
    return rows


def run_sft(cfg: SFTConfig) -> dict:
    """Run the job; returns the summary also written to `<output_dir>/summary.json`."""
    import ray

    from cluster.placement import start_ray
    from cluster.sft import SFTTrainerGroup
    from core.models import load_checked_tokenizer, resolve_model_path

    started = time.perf_counter()
    model_path = resolve_model_path(cfg.model.path)
    tokenizer = load_checked_tokenizer(model_path, "model.path")
    train, held_out, counts = build_examples(cfg, tokenizer)
    print(f"rewardflow sft: {len(train)} training and {sum(map(len, held_out.values()))} held-out examples ("
          + ", ".join(f"{k} {c['train']}+{c['eval']}" for k, c in counts.items())
          + f"); {sum(c['overlong'] for c in counts.values())} longer than max_len={cfg.max_len} left out",
          flush=True)
    out_dir = make_output_dir(cfg.output_dir, "output_dir")
    address = start_ray(cfg, ["learner"])
    try:
        trainers = SFTTrainerGroup(cfg, model_path, tokenizer.pad_token_id)
        before = eval_losses(trainers, held_out)
        if before:
            print(f"rewardflow sft: held-out loss {_losses_line(before)} before training", flush=True)
        steps = train_steps(trainers, train, cfg)
        after = eval_losses(trainers, held_out)
        if after:
            print(f"rewardflow sft: held-out loss {_losses_line(after)} after training", flush=True)
        checkpoint = trainers.save(str(out_dir / "final"))
    finally:
        ray.shutdown()
    summary = {
        "train_examples": len(train), "eval_examples": sum(map(len, held_out.values())), "sources": counts,
        "steps": len(steps), "train_loss": [r["loss"] for r in steps],
        "eval_loss_before": before["all"] if before else None, "eval_loss_after": after["all"] if after else None,
        "eval_before": before, "eval_after": after, "step_rows": steps, "checkpoint": checkpoint,
        "setup_s": trainers.setup_s, "wall_s": time.perf_counter() - started, "ray_address": address,
        "config": cfg.model_dump(mode="json"),
    }
    summary["summary_path"] = str(out_dir / "summary.json")
    Path(summary["summary_path"]).write_text(json.dumps(summary, indent=1))
    return summary
