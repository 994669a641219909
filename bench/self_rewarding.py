"""Benchmark: is the policy any good as its own judge, and does self-rewarding help?

    .venv/bin/python bench/self_rewarding.py judge --eft-model runs/sft_arith/final [--problems 50]
    .venv/bin/python bench/self_rewarding.py iterative [overrides...]
    .venv/bin/python bench/self_rewarding.py online [--steps 8] [overrides...]

judge: the default policy samples 4 answers to each of `--problems` held-out arithmetic problems
    (temperature 1); each answer is judged 3 times with the additive 5-point rubric by the base
    model and by the EFT model (`rewardflow sft recipes/sft_arith.yaml`: IFT + EFT), both free
    (how often "Score: N" parses at all) and constrained to the score format. Reported against
    the answer check (math_correct), all on the same answers: pairwise agreement (a right answer
    scored above a wrong one to the same problem; ties ½) and AUC.
iterative: `recipes/self_rewarding_iterative_arith.yaml` end to end: held-out greedy accuracy
    after each iteration, the judge's agreement with the answer check and the pairs kept per
    iteration (from the run's metrics.jsonl).
online: `recipes/self_rewarding_arith.yaml` and `recipes/grpo_arith.yaml` (the baseline: GRPO on
    the answer check itself) for the same number of steps of 64 samples each, in the same session:
    held-out accuracy against wall-clock.
Each appends a section to docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.grpo_default import machine, publish  # noqa: E402

ITERATIVE = "recipes/self_rewarding_iterative_arith.yaml"
ONLINE = "recipes/self_rewarding_arith.yaml"


def judge_quality(engine, questions, responses, group_ids, correct, constrained: bool) -> dict:
    from learners.self_rewarding import judge_answer_agreement
    from rewards.self_judge import SelfJudgeConfig, aggregate_judgments, parse_score

    texts, _, _ = engine.judge(questions, responses, SelfJudgeConfig(k=3, max_new_tokens=48, constrained=constrained))
    means, stats = aggregate_judgments([[parse_score(t) for t in row] for row in texts])
    found = judge_answer_agreement(group_ids, means, correct)
    return {"parse_rate": stats["parse_rate"], "agreement": found["pairwise_agreement"], "pairs": found["pairs"],
            "auc": found["auc"], "example": texts[0][0]}


def run_judge(args) -> None:
    from actors.rollout import RolloutActor
    from cluster.recipe import load_recipe
    from core.data import load_rows, render_prompts
    from core.models import load_checked_tokenizer, resolve_model_path
    from core.protocol import SamplingSpec
    from rewards.base import Sample
    from rewards.math_correct import MathCorrect, MathCorrectConfig

    cfg = load_recipe(ROOT / ONLINE)
    base = resolve_model_path(cfg.model.path)
    _, rows = load_rows(cfg.task)
    prompts = render_prompts(rows[:args.problems], load_checked_tokenizer(base, "model.path"), cfg.task)
    results = {}
    policy = RolloutActor(base, max_model_len=1024, seed=0)
    rollouts = policy.generate(prompts, SamplingSpec(n=4, max_new_tokens=32, temperature=1.0))
    check = MathCorrect(MathCorrectConfig())
    correct = np.array([check.score(Sample(prompt="", response=r, answer=a)) > 0.5
                        for r, a in zip(rollouts.response_texts, rollouts.answers)])
    questions = [prompts.questions[g] for g in rollouts.group_ids]
    for label, path in (("base model", base), ("EFT model", args.eft_model)):
        engine = policy if path == base else RolloutActor(path, max_model_len=1024, seed=0)
        results[label] = {mode: judge_quality(engine, questions, rollouts.response_texts, rollouts.group_ids, correct,
                                              constrained=mode == "constrained") for mode in ("free", "constrained")}
        del engine
    rows_md = "\n".join(
        f"| {label} | {mode} | {r['parse_rate']:.2f} | {r['agreement']:.3f} ({r['pairs']} pairs) | {r['auc']:.3f} |"
        for label, by_mode in results.items() for mode, r in by_mode.items())
    publish(f"""
## Self-judge quality before and after EFT ({datetime.date.today().isoformat()})

- command: `python bench/self_rewarding.py {' '.join(sys.argv[1:])}`
- machine: {machine()}
- answers: the default policy, 4 per problem at temperature 1, on {args.problems} held-out problems of
  `{ONLINE}`'s task ({len(rollouts)} answers, {correct.mean():.2f} right by the answer check); every
  judge sees the same answers, 3 judgments each (temperature 0.7, 48 new tokens, the default rubric)
- judges: the base model, and `{args.eft_model}` (`rewardflow sft recipes/sft_arith.yaml`: IFT + EFT);
  free = sampled as they come, constrained = decoded under "<one line>\\nScore: <0-5>"
- baseline: a judge that cannot tell right from wrong scores agreement 0.5 and AUC 0.5

| judge | decoding | parse rate | agreement with the answer check | AUC |
|---|---|---|---|---|
{rows_md}

Examples (first answer's first judgment): {json.dumps({k: v['free']['example'][:120] for k, v in results.items()})}
""")


def metrics_of(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def run_iterative(overrides: list[str]) -> None:
    from cluster.launch import train
    from cluster.recipe import load_recipe

    cfg = load_recipe(ROOT / ITERATIVE, overrides)
    summary = train(cfg)
    per = cfg.train.sync_every
    logged = metrics_of(Path(cfg.train.output_dir))
    curve = {p["step"]: p for p in summary["accuracy_curve"]}
    rows = []
    for it in range(cfg.algo.iterations + 1):
        steps = [m for m in logged if it * per < m["step"] <= (it + 1) * per and "judge/pairs" in m]
        acc = curve.get(it * per, {}).get("eval_accuracy")
        mean = lambda k: np.nanmean([m.get(k, np.nan) for m in steps]) if steps else np.nan  # noqa: E731
        rows.append(f"| M{it} | {acc if acc is not None else float('nan'):.3f} | "
                    + (f"{mean('judge/answer_agreement'):.3f} | {mean('judge/answer_auc'):.3f} | "
                       f"{mean('judge/pairs_kept_frac'):.2f} | {mean('judge/implicit_agreement'):.2f} | "
                       f"{mean('reward/math_correct'):.3f} |" if steps else "- | - | - | - | - |"))
    publish(f"""
## Iterative self-rewarding on the default model ({datetime.date.today().isoformat()})

- command: `python bench/self_rewarding.py {' '.join(sys.argv[1:])}`
- machine: {machine()}
- recipe: `{ITERATIVE}`; {cfg.algo.iterations} iterations of {per} steps, {cfg.train.prompts_per_step} prompts x
  {cfg.algo.samples_per_prompt} samples per step, {cfg.algo.judge.k} judgments per sample (constrained:
  {cfg.algo.judge.constrained}); wall {summary['total_wall_s']:.0f} s ({summary['mean_step_timing_s']['timing/judge']:.0f} s
  of {summary['mean_step_timing_s']['timing/step']:.0f} s per step judging)
- baseline: M0, the base model, held-out greedy accuracy measured in the same run

| model | held-out accuracy (greedy, {cfg.task.arithmetic.eval_size} problems) | while it judged: agreement with the answer check | AUC | pairs kept | implicit-reward agreement | its samples right |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}
""")


def run_online(steps: int, overrides: list[str]) -> None:
    from cluster.launch import train
    from cluster.recipe import load_recipe

    runs = {}
    for recipe, extra in ((ONLINE, []), ("recipes/grpo_arith.yaml", ["train.prompts_per_step=8"])):
        cfg = load_recipe(ROOT / recipe, [f"train.steps={steps}", f"train.eval_every={max(1, steps // 2)}",
                                          f"train.output_dir=runs/bench_online/{Path(recipe).stem}", *extra, *overrides])
        runs[recipe] = train(cfg)
    rows = "\n".join(
        f"| `{recipe}` | {s['samples_per_s']:.2f} | "
        + " → ".join(f"{p['eval_accuracy']:.2f} @ {p['wall_s']:.0f}s" for p in s["accuracy_curve"]) + " |"
        for recipe, s in runs.items())
    publish(f"""
## Online self-rewarding vs GRPO on the answer check, default model ({datetime.date.today().isoformat()})

- command: `python bench/self_rewarding.py {' '.join(sys.argv[1:])}`
- machine: {machine()}
- both: {steps} steps of 64 samples (self-rewarding: 16 prompts x 4, judged by the policy itself; GRPO: 8
  prompts x 8, rewarded by math_correct), held-out greedy accuracy on 100 problems; baseline: GRPO, same session

| recipe | samples/s | held-out accuracy @ wall-clock (evals and training) |
|---|---|---|
{rows}
""")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("part", choices=["judge", "iterative", "online"])
    p.add_argument("--eft-model", default="runs/sft_arith/final")
    p.add_argument("--problems", type=int, default=50)
    p.add_argument("--steps", type=int, default=8)
    args, overrides = p.parse_known_args()
    if args.part == "judge":
        run_judge(args)
    elif args.part == "iterative":
        run_iterative(overrides)
    else:
        run_online(args.steps, overrides)


if __name__ == "__main__":
    main()
