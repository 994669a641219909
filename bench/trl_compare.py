"""Benchmark: rewardflow against TRL's GRPOTrainer on one GRPO configuration, at the same
training wall-clock: samples/s and held-out greedy accuracy.

TRL is never a dependency of rewardflow: it goes into a virtualenv of its own, once, with the
torch and transformers rewardflow pins (pip finds them where it found rewardflow's):

    python3 -m venv /tmp/trl_venv
    /tmp/trl_venv/bin/pip install trl==1.16.0 torch==2.13.0+cpu transformers==5.19.0 \\
        math-verify==0.9.0 pydantic pyyaml

Then, from the repository root:

    RAY_TMPDIR=/tmp/ray_speed .venv/bin/python bench/trl_compare.py [--steps 8] \\
        [--trl-python /tmp/trl_venv/bin/python] [overrides of the recipe...]

1. rewardflow: `rewardflow train recipes/bench_trl_config.yaml train.steps=<steps>`; its training
   wall-clock W is the sum of its steps' `timing/step` (start-up and evals left out).
2. TRL: this file's `trl` command in TRL's virtualenv: GRPOTrainer on the same weights, prompts
   (the recipe's train split), reward (`rewards.math_correct`, as the recipe) and settings,
   stopped at the step end nearest W of its own training wall-clock.
3. One evaluator for the base model and both trained policies, each in a process of its own:
   vLLM greedy decoding of the recipe's held-out prompts, at most `train.eval_max_new_tokens`
   tokens, scored by `rewards.math_correct` (what `eval/accuracy` is in a run).

Settings, rewardflow recipe -> TRL `GRPOConfig`:
    8 prompts x 8 samples   train.prompts_per_step, algo.group_size -> num_generations=8,
                            per_device_train_batch_size=16 x gradient_accumulation_steps=4:
                            one generation batch of 64 and one optimiser step per step
    <= 48 new tokens        rollout.max_new_tokens -> max_completion_length
    KL 0.04 (k3 estimator)  algo.kl_coef -> beta (frozen initial policy as the reference)
    lr 1e-5, constant       algo.lr -> learning_rate, lr_scheduler_type="constant"; AdamW
                            (0.9, 0.999), no weight decay, gradient clipping 1.0 on both sides
    ratio clip 0.2, 1 pass  algo.clip_eps, algo.epochs -> epsilon, num_iterations
    token-mean loss         algo.loss_agg=token_mean -> loss_type="dapo" (tokens of the whole batch)
    group std advantages    algo.adv_scale=std -> scale_rewards="group"
    temperature 1, top_p 1  rollout.temperature, rollout.top_p -> temperature, top_p
    generation              vLLM CPU in the rollout actor -> transformers `generate` (TRL's vLLM
                            path needs vllm<=0.31 and a GPU; `use_vllm=False` is its default)
    fp32, 2 CPU threads     the same model dtype; torch's threads as each process finds them
Prints a Markdown section for docs/benchmarks.md; everything measured goes to `--out`.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPE = "recipes/bench_trl_config.yaml"


def load_cfg(overrides: list[str]):
    from cluster.recipe import load_recipe

    return load_recipe(ROOT / RECIPE, overrides)


# -- 1. rewardflow ------------------------------------------------------------------------------
def run_rewardflow(steps: int, out: Path, overrides: list[str]) -> dict:
    cli = Path(sys.executable).with_name("rewardflow")
    subprocess.run([str(cli), "train", RECIPE, f"train.steps={steps}", f"train.output_dir={out}", *overrides],
                   check=True, cwd=ROOT)
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps_rows = [r for r in rows if "timing/step" in r]
    recipe = summary["recipe"]
    samples = len(steps_rows) * recipe["train"]["prompts_per_step"] * recipe["algo"]["group_size"]
    wall = sum(r["timing/step"] for r in steps_rows)
    means = {k: sum(r.get(k, 0.0) for r in steps_rows) / len(steps_rows)
             for k in steps_rows[-1] if k.startswith(("timing/", "perf/"))}
    return {"steps": len(steps_rows), "samples": samples, "train_wall_s": wall, "samples_per_s": samples / wall,
            "step_s": [r["timing/step"] for r in steps_rows], "mean": means, "model": summary["final_checkpoint"],
            "in_run_eval": [summary["eval_accuracy_before"], summary["eval_accuracy_after"]],
            "reward": [r.get("reward/total") for r in steps_rows]}


# -- 2. TRL (runs in TRL's virtualenv) ----------------------------------------------------------
def trl_main(args, overrides: list[str]) -> None:
    """GRPOTrainer on the recipe's settings until its training wall-clock is nearest `budget_s`."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from core.data import load_rows
    from core.models import resolve_model_path
    from rewards.base import Sample
    from rewards.math_correct import MathCorrect, MathCorrectConfig

    cfg = load_cfg(overrides)
    train, _ = load_rows(cfg.task)
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": row.question + cfg.task.instruction}],
                               "answer": row.answer} for row in train])
    check = MathCorrect(MathCorrectConfig())

    def math_correct(completions, answer, **_):
        return [check.score(Sample("", c[0]["content"], a)) for c, a in zip(completions, answer)]

    a, r, g = cfg.algo, cfg.rollout, cfg.algo.group_size
    micro = 16
    config = GRPOConfig(
        output_dir=str(args.out), learning_rate=a.lr, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=cfg.learner.grad_clip, beta=a.kl_coef, epsilon=a.clip_eps,
        num_iterations=a.epochs, loss_type="dapo", scale_rewards="group", num_generations=g,
        max_completion_length=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p,
        per_device_train_batch_size=micro, gradient_accumulation_steps=cfg.train.prompts_per_step * g // micro,
        max_steps=100_000, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, bf16=False,
        seed=cfg.train.seed, dataloader_num_workers=0,
    )
    clock = BudgetClock(args.budget_s)
    model_path = resolve_model_path(cfg.model.path)
    trainer = GRPOTrainer(model=model_path, reward_funcs=math_correct, args=config, train_dataset=data,
                          callbacks=[clock.callback(TrainerCallback)])
    trainer.train()
    trainer.save_model(str(args.out / "final"))
    samples = trainer.state.global_step * cfg.train.prompts_per_step * g
    wall = clock.step_ends[-1] if clock.step_ends else 0.0
    summary = {"steps": trainer.state.global_step, "samples": samples, "train_wall_s": wall,
               "samples_per_s": samples / wall if wall else 0.0,
               "step_s": [t - s for s, t in zip([0.0, *clock.step_ends], clock.step_ends)],
               "model": str(args.out / "final"), "threads": torch.get_num_threads(),
               "reward": [h.get("reward") for h in trainer.state.log_history if "reward" in h],
               "log_history": trainer.state.log_history}
    (args.out / "trl_summary.json").write_text(json.dumps(summary, indent=1))


class BudgetClock:
    """Training wall-clock from the first step's start; stops training at the step end nearest
    the budget (the next step would end further past it than this one ends short of it)."""

    def __init__(self, budget_s: float):
        self.budget_s = budget_s
        self.started: float | None = None
        self.step_ends: list[float] = []

    def callback(self, base):
        clock = self

        class Budget(base):
            def on_train_begin(self, args, state, control, **kwargs):
                clock.started = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                clock.step_ends.append(time.perf_counter() - clock.started)
                last = clock.step_ends[-1] - (clock.step_ends[-2] if len(clock.step_ends) > 1 else 0.0)
                if clock.step_ends[-1] + last / 2 >= clock.budget_s:
                    control.should_training_stop = True

        return Budget()


def run_trl(python: str, budget_s: float, out: Path, overrides: list[str]) -> dict:
    subprocess.run([python, __file__, "trl", "--budget-s", str(budget_s), "--out", str(out), *overrides],
                   check=True, cwd=ROOT)
    return json.loads((out / "trl_summary.json").read_text())


# -- 3. one evaluator ---------------------------------------------------------------------------
def eval_main(args, overrides: list[str]) -> None:
    """Held-out greedy accuracy of the model at `args.model` (printed as JSON on the last line)."""
    from core.data import load_rows, render_prompts
    from core.models import configure_vllm_env, load_tokenizer, resolve_model_path
    from rewards.base import Sample
    from rewards.math_correct import MathCorrect, MathCorrectConfig

    cfg = load_cfg(overrides)
    configure_vllm_env(cfg.rollout.kv_cache_gib)
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    path = resolve_model_path(args.model)
    _, held_out = load_rows(cfg.task)
    prompts = render_prompts(held_out, load_tokenizer(path), cfg.task)
    llm = LLM(model=path, dtype=cfg.model.dtype, max_model_len=cfg.rollout.max_prompt_len + cfg.train.eval_max_new_tokens,
              seed=0, enforce_eager=True)
    outs = llm.generate([TokensPrompt(prompt_token_ids=t.tolist()) for t in prompts.token_ids],
                        SamplingParams(temperature=0.0, max_tokens=cfg.train.eval_max_new_tokens), use_tqdm=False)
    check = MathCorrect(MathCorrectConfig())
    right = [check.score(Sample("", o.outputs[0].text, a)) for o, a in zip(outs, prompts.answers)]
    print(json.dumps({"model": args.model, "accuracy": sum(right) / len(right), "n": len(right)}))


def evaluate(model: str, overrides: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, "eval", "--model", model, *overrides], check=True, cwd=ROOT,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the comparison -----------------------------------------------------------------------------
def compare(args, overrides: list[str]) -> dict:
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)  # a run appends to metrics.jsonl: start from nothing
    rf = run_rewardflow(args.steps, out / "rewardflow", overrides)
    load_rf = os.getloadavg()
    trl = run_trl(args.trl_python, rf["train_wall_s"], out / "trl", overrides)
    load_trl = os.getloadavg()
    accuracy = {name: evaluate(model, overrides) for name, model in
                [("base", load_cfg(overrides).model.path), ("rewardflow", rf["model"]), ("trl", trl["model"])]}
    result = {"rewardflow": rf, "trl": {k: v for k, v in trl.items() if k != "log_history"}, "accuracy": accuracy,
              "load_after": {"rewardflow": load_rf, "trl": load_trl}, "overrides": overrides, "steps": args.steps}
    (out / "comparison.json").write_text(json.dumps(result, indent=1))
    return result


def report(result: dict, argv: list[str]) -> str:
    from bench.grpo_default import machine

    rf, trl = result["rewardflow"], result["trl"]
    acc = {name: e["accuracy"] for name, e in result["accuracy"].items()}
    phases = ", ".join(f"{k.split('/')[1]} {v:.1f} s" for k, v in rf["mean"].items()
                       if k.startswith("timing/") and k not in ("timing/step", "timing/other") and v >= 0.05)
    fractions = ", ".join(f"{k.split('/')[1].removesuffix('_peak_frac')} {100 * v:.0f}%" for k, v in rf["mean"].items()
                          if k.endswith("_peak_frac"))
    load = result["load_after"]
    return f"""
## rewardflow vs TRL {'1.16.0'} GRPOTrainer, same configuration and training wall-clock ({datetime.date.today().isoformat()})

- command: `{' '.join(['python bench/trl_compare.py', *argv])}`
- machine: {machine()}; shared with other jobs: load average (1/5/15 min) after the rewardflow run {', '.join(f'{x:.1f}' for x in load['rewardflow'])}, after the TRL run {', '.join(f'{x:.1f}' for x in load['trl'])}
- configuration: `{RECIPE}` (8 prompts x 8 samples, <= 48 new tokens, KL 0.04, lr 1e-5, temperature 1; TRL settings mapped in the script's docstring)
- rewardflow mean step: {sum(rf['step_s']) / len(rf['step_s']):.1f} s ({phases}); fraction of the measured peak: {fractions or 'n/a'}
- TRL mean step: {sum(trl['step_s']) / max(1, len(trl['step_s'])):.1f} s (transformers generate; {trl['threads']} torch threads)

| | steps | samples | training wall s | samples/s | held-out greedy accuracy |
|---|---|---|---|---|---|
| base model | – | – | – | – | {acc['base']:.2f} |
| rewardflow | {rf['steps']} | {rf['samples']} | {rf['train_wall_s']:.0f} | {rf['samples_per_s']:.2f} | {acc['rewardflow']:.2f} |
| TRL GRPOTrainer | {trl['steps']} | {trl['samples']} | {trl['train_wall_s']:.0f} | {trl['samples_per_s']:.2f} | {acc['trl']:.2f} |

rewardflow / TRL samples/s: {rf['samples_per_s'] / trl['samples_per_s']:.2f}x (target >= 2x). Held-out: {result['accuracy']['base']['n']} problems, one evaluator for all three (vLLM greedy, `rewards.math_correct`); rewardflow's own in-run eval: {rf['in_run_eval'][0]:.2f} -> {rf['in_run_eval'][1]:.2f}.
"""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("command", nargs="?", default="compare", choices=["compare", "trl", "eval"])
    p.add_argument("--steps", type=int, default=8, help="rewardflow steps; TRL gets their training wall-clock")
    p.add_argument("--trl-python", default="/tmp/trl_venv/bin/python")
    p.add_argument("--out", type=Path, default=Path("runs/bench_trl"))
    p.add_argument("--budget-s", type=float, help="trl: training wall-clock to stop near")
    p.add_argument("--model", help="eval: the model directory (or 'default')")
    args, overrides = p.parse_known_args()
    if args.command == "trl":
        trl_main(args, overrides)
    elif args.command == "eval":
        eval_main(args, overrides)
    else:
        result = compare(args, overrides)
        print(report(result, sys.argv[1:]))


if __name__ == "__main__":
    main()
