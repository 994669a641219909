"""Benchmark: a recipe end to end on the default model, with a per-phase step-time breakdown.

    .venv/bin/python bench/grpo_default.py [--recipe recipes/ppo_arith.yaml] [overrides...]

Runs the recipe (default `recipes/grpo_arith.yaml`, the one `make run` trains) plus overrides
through the same code path as `rewardflow train`, then appends a section to docs/benchmarks.md:
eval accuracy of the base model and of the trained policy measured in the same run (ratio
after/before), and the mean time per phase of a step.
"""
from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def machine() -> str:
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.machine()} CPU, {os.cpu_count()} cores, {mem_gib:.0f} GiB, no GPU"


def publish(text: str) -> None:
    """Append a section to docs/benchmarks.md and print it."""
    with open(ROOT / "docs/benchmarks.md", "a") as f:
        f.write(text)
    print(text)


def report(summary: dict, argv: list[str], recipe: str = "recipes/grpo_arith.yaml") -> str:
    t = summary["mean_step_timing_s"]
    step = t["timing/step"]
    rows = "\n".join(
        f"| {k.split('/')[1]} | {v:.1f} | {100 * v / step:.0f}% |"
        for k, v in t.items() if k != "timing/step"
    )
    before, after = summary["eval_accuracy_before"], summary["eval_accuracy_after"]
    ratio = f"{after / before:.2f}x" if before else "n/a"
    cmd = " ".join(["python bench/grpo_default.py", *argv])
    algo = summary["recipe"]["algo"]
    per_prompt = algo.get("group_size") or algo.get("samples_per_prompt") or 2
    return f"""
## `{recipe}` ({algo['name']}) on the default model, end to end ({datetime.date.today().isoformat()})

- command: `{cmd}`
- machine: {machine()}
- recipe: `{recipe}`; {summary['steps']} steps, {summary['recipe']['train']['prompts_per_step']} prompts x {per_prompt} samples per step
- wall: {summary['total_wall_s']:.0f} s total ({summary['startup_s']:.0f} s start-up, {summary['wall_s']:.0f} s evals + training); {summary['samples_per_s']:.2f} samples/s
- held-out greedy accuracy ({summary['recipe']['task']['arithmetic']['eval_size']} problems): base model {before:.3f} -> trained {after:.3f} (ratio {ratio}, both measured in this run)

| phase | mean s per step | share of step |
|---|---|---|
{rows}
| step | {step:.1f} | 100% |
"""


def main(argv: list[str]) -> None:
    from cluster.recipe import load_recipe
    from cluster.launch import train

    recipe = "recipes/grpo_arith.yaml"
    if argv[:1] == ["--recipe"]:
        recipe, overrides = argv[1], argv[2:]
    else:
        overrides = list(argv)
    name = Path(recipe).stem
    summary = train(load_recipe(ROOT / recipe, [f"train.output_dir=runs/bench_{name}", *overrides]))
    text = report(summary, argv, recipe)
    publish(text)


if __name__ == "__main__":
    main(sys.argv[1:])
