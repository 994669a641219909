"""Benchmark: the issue-16 GRPO step's phase times before and after each change, against each
phase's compute floor, in one session.

    RAY_TMPDIR=/tmp/ray_speed .venv/bin/python bench/step_phases.py [--steps 4] [--before REV] \\
        [overrides of the recipe...]

Three runs of `recipes/bench_trl_config.yaml` (8 prompts x 8 samples, <= 48 new tokens, KL 0.04 to
the frozen reference, default model, fp32), one after the other, each `--steps` steps:

1. before: the source tree at `--before` (a git worktree made for the run and removed after; its
   code with this tree's venv), the baseline;
2. this tree with `learner.share_prompt=off reference.share_prompt=off`: every change but the
   shared prompt and length packing (the rollout actor's engine settings and worker environment,
   the reproducibility settings);
3. this tree as it is.

Each phase's mean over the steps after the first (the first warms up); the floor of a phase is
its FLOPs (core/flops.py: every distinct position once) over the matmul peak the run measured at
start, from run 3's `perf/<phase>_peak_frac`. The learner's and the reference's positions per step
come from `perf/learner_tokens` and `perf/reference_tokens` (run 2 computes what run 1 did).
`--seeds 1 2` also runs before and now with those sampling seeds and reports held-out accuracy
per seed (one seed's accuracy after a few steps is mostly that seed's luck). Appends a section to
docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.grpo_default import machine, publish

RECIPE = ROOT / "recipes/bench_trl_config.yaml"
BEFORE = "968a039"  # the last commit before the issue-16 changes
PHASES = ("generate", "score", "reference", "update", "weight_sync", "other")
UNSHARED = ["learner.share_prompt=off", "reference.share_prompt=off"]


def train_in(tree: Path, steps: int, out: Path, overrides: list[str]) -> dict:
    """`rewardflow train` from the source tree `tree` (this venv's packages); the steps' metrics."""
    code = "import sys; from apps.cli import main; sys.argv[0] = 'rewardflow'; sys.exit(main())"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run([sys.executable, "-c", code, "train", str(RECIPE), f"train.steps={steps}",
                    f"train.output_dir={out}", "train.save_final=false", *overrides], check=True, cwd=tree, env=env)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    return {"steps": [r for r in rows if "timing/step" in r], "load": os.getloadavg(),
            "accuracy": [summary["eval_accuracy_before"], summary["eval_accuracy_after"]]}


def means(run: dict) -> dict[str, float]:
    """Each metric's mean over the steps after the first."""
    rows = run["steps"][1:] or run["steps"]
    return {k: sum(r.get(k, 0.0) for r in rows) / len(rows) for k in rows[-1]}


def section(runs: dict[str, dict], args, argv: list[str]) -> str:
    m = {name: means(run) for name, run in runs.items()}
    base, now = m["before"], m["now"]
    lines = []
    for phase in ("step", *PHASES):
        key = f"timing/{phase}"
        if max(v.get(key, 0.0) for v in m.values()) < 0.05:
            continue
        frac = now.get(f"perf/{phase}_peak_frac")
        floor = f"{frac * now[key]:.1f}" if frac else "–"
        ratio = f"{now[key] / base[key]:.2f}x" if base.get(key) else "–"
        lines.append(f"| {phase} | {base.get(key, 0.0):.1f} | {m['unshared'].get(key, 0.0):.1f} | {now[key]:.1f} | "
                     f"{ratio} | {floor} |")
    tokens = []
    for role in ("learner", "reference"):
        key = f"perf/{role}_tokens"
        if key in now:
            tokens.append(f"{role} {m['unshared'][key]:.0f} → {now[key]:.0f} ({now[key] / m['unshared'][key]:.2f}x)")
    samples = {name: 64 / v["timing/step"] for name, v in m.items()}
    load = ", ".join(f"{name} {run['load'][0]:.1f}" for name, run in runs.items())
    return f"""
## The issue-16 step, phase by phase, before and after ({datetime.date.today().isoformat()})

- command: `{' '.join(['python bench/step_phases.py', *argv])}`
- machine: {machine()}; load average (1 min) after each run: {load}
- workload: `recipes/bench_trl_config.yaml`, {args.steps} steps per run, means over steps 2..{args.steps}
- baseline: "before", the source at `{args.before}` (the last commit before the issue-16 changes), same session
- "unshared": this tree with `share_prompt=off` for learner and reference (every change but the
  shared prompt and packing); "now": this tree as it is; floor: the phase's FLOPs (every
  distinct position once) over the matmul peak measured at the run's start

| phase | before s | unshared s | now s | now / before | floor s |
|---|---|---|---|---|---|
{chr(10).join(lines)}

Samples/s: before {samples['before']:.2f}, unshared {samples['unshared']:.2f}, now {samples['now']:.2f}
({samples['now'] / samples['before']:.2f}x before). Positions computed per step: {'; '.join(tokens)}.
"""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--before", default=BEFORE)
    p.add_argument("--out", default="runs/bench_step_phases")
    p.add_argument("--seeds", type=int, nargs="*", default=[],
                   help="more `train.seed`s to run before and now with, for held-out accuracy only")
    args, overrides = p.parse_known_args()
    out = ROOT / args.out
    shutil.rmtree(out, ignore_errors=True)
    tree = Path(tempfile.mkdtemp(prefix="rewardflow-before-")) / "src"
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), args.before], check=True, cwd=ROOT)
    seeds: dict[int, dict] = {}
    try:
        runs = {"before": train_in(tree, args.steps, out / "before", overrides)}
        for seed in args.seeds:
            seeds[seed] = {"before": train_in(tree, args.steps, out / f"before_{seed}", [f"train.seed={seed}", *overrides])}
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], check=True, cwd=ROOT)
    runs["unshared"] = train_in(ROOT, args.steps, out / "unshared", [*UNSHARED, *overrides])
    runs["now"] = train_in(ROOT, args.steps, out / "now", overrides)
    for seed in args.seeds:
        seeds[seed]["now"] = train_in(ROOT, args.steps, out / f"now_{seed}", [f"train.seed={seed}", *overrides])
    (out / "runs.json").write_text(json.dumps({"runs": runs, "seeds": seeds}, indent=1))
    publish(section(runs, args, sys.argv[1:]) + accuracy_table(runs, seeds))


def accuracy_table(runs: dict[str, dict], seeds: dict[int, dict]) -> str:
    """Held-out greedy accuracy after the run, before and now, per `train.seed` (the recipe's first)."""
    rows = [("0 (the recipe's)", runs), *seeds.items()]
    lines = [f"| {seed} | {r['before']['accuracy'][0]:.2f} | {r['before']['accuracy'][1]:.2f} | "
             f"{r['now']['accuracy'][1]:.2f} |" for seed, r in rows]
    return f"""
Held-out greedy accuracy after the steps, per sampling seed (`train.seed`):

| seed | base model | before | now |
|---|---|---|---|
{chr(10).join(lines)}
"""


if __name__ == "__main__":
    main()
