"""Recovery time per role: SIGKILL a rollout, a reward, a reference and a learner actor in one
training run on the default model, and time each from the kill to the next completed step.

    .venv/bin/python bench/recovery.py [--steps 7] [--out runs/bench_recovery]

The baseline is the same run's own step time: the median of the steps that no kill touched.
A rollout, reward or reference actor is restarted and its requests sent again; a learner rank's
death restarts the learner group from the newest checkpoint (one is written every step), so its
recovery includes that step again. Prints one JSON object (the figures for docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Kill one actor of each class once the run has logged the step before it (step k's line is
# written when step k is done); the learner last, right after a checkpoint.
PLAN = {2: ["RolloutActor"], 3: ["RewardActor"], 4: ["ReferenceActor"], 5: ["LearnerActor"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=7)
    p.add_argument("--out", default="runs/bench_recovery")
    args = p.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    from cluster.launch import train
    from cluster.recipe import load_recipe
    from tests.fault_injection import Saboteur

    out = Path(args.out).resolve()
    if out.exists():
        import shutil

        shutil.rmtree(out)
    cfg = load_recipe("recipes/grpo_arith.yaml", [
        f"train.output_dir={out}", f"train.steps={args.steps}", "train.prompts_per_step=8", "algo.group_size=8",
        "algo.kl_coef=0.04", "rollout.max_new_tokens=48", "train.checkpoint_every=1", "train.save_final=false",
        "logging.wandb_mode=disabled", "logging.progress_bar=false"])
    out.mkdir(parents=True)
    saboteur = Saboteur(out, PLAN)
    saboteur.start()
    started = time.time()
    summary = train(cfg)
    saboteur.stop.set()
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    done_at = {}  # step -> time its line was written (a step trained again: its last time)
    for line in lines:
        if "timing/step" in line:
            done_at[line["step"]] = line["time"]
    killed = {}
    for (step, what), at in zip(saboteur.done, saboteur.at):
        after = [t for s, t in sorted(done_at.items()) if t > at]
        killed[what] = {"after_step": step, "recovery_s": round(after[0] - at, 1) if after else None}
    touched = {s for what in killed.values() for s in (what["after_step"] + 1, what["after_step"] + 2)}
    normal = [line["timing/step"] for line in lines if "timing/step" in line and line["step"] not in touched
              and line["step"] > 1]
    baseline = statistics.median(normal)
    print(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "command": "python bench/recovery.py " + " ".join(sys.argv[1:]),
        "steps": summary["steps"], "wall_s": round(time.time() - started, 1),
        "median_step_s": round(baseline, 1), "normal_steps": len(normal),
        "recovery": {what: {**v, "x_step": round(v["recovery_s"] / baseline, 2) if v["recovery_s"] else None}
                     for what, v in killed.items()},
        "faults": summary["faults"], "batches_once": len(summary["prompt_batches"]) == summary["steps"],
    }, indent=2))


if __name__ == "__main__":
    main()
