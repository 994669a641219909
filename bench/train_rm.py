"""Benchmark: a Bradley-Terry reward model for arithmetic from the default model.

    .venv/bin/python bench/train_rm.py [--recipe recipes/rm_arith.yaml] [overrides...]

Builds the arithmetic preference set (a correct answer preferred to a wrong one; held-out pairs
on problems never trained on), trains the recipe (default `recipes/rm_arith.yaml`, plus overrides) through the same
code path as `rewardflow train-rm`, and appends to docs/benchmarks.md the held-out pairwise
accuracy of the untrained score head and of the trained reward model, both measured in this run.
"""
from __future__ import annotations

import datetime
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.grpo_default import machine, publish  # noqa: E402


def report(summary: dict, argv: list[str], recipe: str) -> str:
    cfg = summary["config"]
    rows = "\n".join(
        f"| {e['epoch']} | {e['train']['steps']:.0f} | {e['train']['loss']:.4f} | {e['train']['accuracy']:.3f} | "
        f"{e['eval']['loss']:.4f} | {e['eval']['accuracy']:.3f} | {e['wall_s']:.0f} |"
        for e in summary["epochs"])
    before = summary["eval_before"]
    cmd = " ".join(["python bench/train_rm.py", "--recipe", recipe, *argv])
    start = "untrained head" if cfg["model"]["path"] == "default" else "starting checkpoint"
    sampled = summary.get("sampled")
    extra = "" if sampled is None else f"""
- policy samples: {sampled['train_pairs']} of the train pairs and {sampled['eval_pairs']} held-out pairs rank the
  policy's own samples (right {sampled['train_sample_accuracy']:.3f} / {sampled['held_out_sample_accuracy']:.3f} of the
  time on train / held-out problems); held-out pairwise accuracy on them {sampled['eval_accuracy_before']:.3f} ->
  {sampled['eval_accuracy_after']:.3f}"""
    return f"""
## Bradley-Terry reward model on arithmetic preferences ({datetime.date.today().isoformat()})

- command: `{cmd}`
- machine: {machine()}
- recipe: `{recipe}`; model `{cfg['model']['path']}` + a scalar score head; {summary['train_pairs']} train
  pairs, {summary['eval_pairs']} held-out pairs (problems never trained on); lr {cfg['lr']:g}, batch {cfg['batch_size']}
  pairs, {cfg['epochs']} epoch(s), ZeRO stage {cfg['zero_stage']}, {cfg['learner']['num_workers']} rank(s)
- wall: {summary['wall_s']:.0f} s total ({summary['setup_s']:.0f} s engine set-up)
- held-out pairwise accuracy (chance 0.5): {start} {before['accuracy']:.3f} (BT loss {before['loss']:.4f})
  -> trained {summary['eval_accuracy_after']:.3f} (both measured in this run){extra}

| epoch | steps | train BT loss | train acc | held-out BT loss | held-out acc | epoch s |
|---|---|---|---|---|---|---|
{rows}
"""


def main(argv: list[str]) -> None:
    from apps.train_rm import load_rm_config, train_rm
    from core.models import ensure_default_model

    ensure_default_model()
    recipe = "recipes/rm_arith.yaml"
    if argv[:1] == ["--recipe"]:
        recipe, argv = argv[1], argv[2:]
    overrides = ["output_dir=runs/bench_" + Path(recipe).stem, *argv]
    summary = train_rm(load_rm_config(ROOT / recipe, overrides))
    text = report(summary, argv, recipe)
    publish(text)


if __name__ == "__main__":
    main(sys.argv[1:])
