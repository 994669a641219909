"""Benchmark: the default recipe synchronous (max_staleness 0) and asynchronous (1), one run each;
or, with --interrupt, asynchronous with `rollout.interrupt` off and on.

    .venv/bin/python bench/async_default.py [--staleness 1] [--interrupt] [overrides...]

Both runs go through `rewardflow train`'s code path with the same recipe and seed, one after the
other; the first is the baseline. Appends to docs/benchmarks.md: held-out accuracy against wall-clock for both (the curve),
end-to-end samples/s, mean step time per phase, orchestration overhead (step time outside
generate / score / forward / update / sync), and each role's busy share of the training wall.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.grpo_default import machine, publish  # noqa: E402


def run(staleness: int, interrupt: bool, overrides: list[str]) -> dict:
    from cluster.launch import train
    from cluster.recipe import load_recipe

    cfg = load_recipe(ROOT / "recipes/grpo_arith.yaml", [
        f"train.output_dir=runs/bench_async_{staleness}_{int(interrupt)}", f"train.max_staleness={staleness}",
        f"rollout.interrupt={str(interrupt).lower()}", "train.eval_every=4", "train.save_final=false", *overrides])
    return train(cfg)


def section(results: dict[tuple[int, bool], dict], argv: list[str]) -> str:
    sync = next(iter(results.values()))
    lines = []
    for (k, interrupt), s in results.items():
        t = s["mean_step_timing_s"]
        other = t["timing/other"] / t["timing/step"]
        busy = ", ".join(f"{role} {100 * sum(b) / len(b) / s['wall_s']:.0f}%" for role, b in s["busy_s"].items())
        curve = " → ".join(f"{p['eval_accuracy']:.2f} @ {p['wall_s']:.0f}s" for p in s["accuracy_curve"])
        lines.append(
            f"| {k} | {'on' if interrupt else 'off'} | {s['wall_s']:.0f} | {s['samples_per_s']:.3f} | {sync['wall_s'] / s['wall_s']:.2f}x | "
            f"{t['timing/step']:.1f} | {t['timing/generate']:.1f} | {t['timing/update']:.1f} | "
            f"{t['timing/weight_sync']:.2f} | {100 * other:.2f}% | {busy} | {curve} |")
    recipe = sync["recipe"]
    return f"""
## Default recipe, {"asynchronous, interrupt off vs on" if any(i for _, i in results) else "synchronous vs asynchronous"} ({datetime.date.today().isoformat()})

- command: `{" ".join(["python bench/async_default.py", *argv])}`
- machine: {machine()}
- recipe: `recipes/grpo_arith.yaml` ({recipe['train']['steps']} steps, {recipe['train']['prompts_per_step']} prompts x {recipe['algo']['group_size']} samples, eval every 4 steps on {recipe['task']['arithmetic']['eval_size']} held-out problems); the runs differ only in `train.max_staleness` and `rollout.interrupt`; baseline: the first row, same session
- wall = evals + training (start-up excluded); "other" = orchestration overhead, the step time outside generate / score / reference / update / weight sync (mean over steps); busy = each role's own working seconds / wall (mean over its actors)

| max_staleness | interrupt | wall s | samples/s | speed vs baseline | step s | generate (wait) s | update s | weight sync s | other | busy share per role | held-out accuracy @ wall-clock |
|---|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(lines)}
"""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--staleness", type=int, default=1)
    p.add_argument("--interrupt", action="store_true", help="asynchronous with interrupt off, then on")
    args, overrides = p.parse_known_args()
    runs = [(args.staleness, False), (args.staleness, True)] if args.interrupt else [(0, False), (args.staleness, False)]
    results = {(k, i): run(k, i, overrides) for k, i in runs}
    text = section(results, sys.argv[1:])
    publish(text)


if __name__ == "__main__":
    main()
