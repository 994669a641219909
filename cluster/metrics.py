"""Run logging: every step's metrics (names `<area>/<name>`) to wandb and to
`<output_dir>/metrics.jsonl` whatever the wandb mode, a table of sample generations (also appended
to `<output_dir>/samples.jsonl`), a progress bar. `rewardflow report` (apps/report.py) reads
those files back."""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

from cluster.recipe import LoggingConfig, RecipeConfig
from core.flops import PHASES, phase_flops, step_tokens


class PhaseTimer:
    """Collects `timing/<phase>` seconds for one step."""

    def __init__(self):
        self.times: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.times[f"timing/{name}"] = self.times.get(f"timing/{name}", 0.0) + time.perf_counter() - started


@dataclass(frozen=True)
class StepFlops:
    """Per step and phase (generate, reference, critic, update): `perf/<phase>_tflops`, the
    phase's floor work in TFLOP (10^12 FLOPs, an amount, not a rate; core/flops.py), and
    `perf/<phase>_peak_frac`, that work over (the phase's seconds x its role's workers x the
    measured peak). The peak is learner rank 0's matmul FLOP/s in the run's dtype, measured once
    at start (`core.flops.matmul_peak`; logged as `perf/peak_tflops`, TFLOP/s); every worker is
    taken to have a device like it. Counts come from the step's rollouts, all of them trained on.

    In the asynchronous loop `timing/generate` is the wait for rollouts made during earlier
    updates, not the generation: no `perf/generate_peak_frac` there."""

    body_params: int
    head_params: int
    peak_flops: float  # FLOP/s
    reference: bool
    critic: bool
    update_passes: float
    workers: dict[str, int]  # phase -> workers doing it
    generate_timed: bool

    @classmethod
    def for_run(cls, cfg: RecipeConfig, model_path: str, needs, learners) -> "StepFlops":
        """Count the policy's parameters (config only) and measure the peak in learner rank 0,
        on its device, in the run's dtype, while nothing else of the run computes."""
        import ray

        from core.flops import matmul_peak
        from core.models import matmul_params

        device = "cuda" if cfg.learner.num_gpus > 0 else "cpu"
        peak = ray.get(learners.actors[0].__ray_call__.remote(
            lambda self, dtype, device: matmul_peak(dtype, device), cfg.model.dtype, device))
        critic_workers = cfg.critic.num_workers if needs.critic else 0
        return cls(*matmul_params(model_path), peak, needs.reference, needs.critic,
                   cfg.algo.epochs + (1 / 3 if needs.old_logprobs else 0),
                   {"generate": cfg.rollout.num_workers, "reference": cfg.reference.num_workers,
                    "critic": cfg.critic.num_workers, "update": cfg.learner.num_workers + critic_workers},
                   cfg.train.max_staleness == 0)

    def metrics(self, rollouts, times: dict[str, float]) -> dict[str, float]:
        """`rollouts`: the step's `Rollouts`; `times`: its `PhaseTimer.times`."""
        prompt, response = step_tokens([len(p) for p in rollouts.prompt_ids],
                                        [len(r) for r in rollouts.response_ids], rollouts.group_ids)
        flops = phase_flops(self.body_params, self.head_params, prompt, response, self.reference, self.critic,
                            self.update_passes)
        out = {"perf/peak_tflops": self.peak_flops / 1e12}
        for phase in PHASES:
            if not flops[phase]:
                continue
            out[f"perf/{phase}_tflops"] = flops[phase] / 1e12
            seconds = times.get(f"timing/{phase}", 0.0)
            if seconds > 0 and (phase != "generate" or self.generate_timed):
                out[f"perf/{phase}_peak_frac"] = flops[phase] / (seconds * self.workers[phase] * self.peak_flops)
        return out


def wandb_mode(cfg: LoggingConfig) -> str:
    if cfg.wandb_mode:
        return cfg.wandb_mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


class RunLogger:
    """`run_id`: the wandb run to continue (a resumed run's checkpoint keeps it, `Controller.state`);
    None starts a new one."""

    def __init__(self, cfg: LoggingConfig, recipe: dict, out_dir: str, total_steps: int,
                 run_id: str | None = None, bar_file=None):
        import wandb

        self.cfg = cfg
        self.wandb = wandb
        self.run = wandb.init(mode=wandb_mode(cfg), project=cfg.project, name=cfg.run_name, dir=out_dir,
                              config=recipe, reinit="finish_previous", id=run_id,
                              resume="allow" if run_id else None)
        self.total_steps = total_steps
        self.bar = None
        self.bar_file = bar_file  # None: stderr
        # One JSON object per logged step, appended (a resumed run continues the same file).
        self.jsonl = open(os.path.join(out_dir, "metrics.jsonl"), "a", encoding="utf-8")
        self.samples_path = os.path.join(out_dir, "samples.jsonl")
        self.sources: list[Callable[[], dict[str, float]]] = []

    @property
    def run_id(self) -> str:
        return self.run.id

    @property
    def location(self) -> str | None:
        """Where to see the wandb run: its URL (online), its directory (offline), None (disabled)."""
        if self.run.settings.mode == "offline":
            return os.path.dirname(self.run.dir)
        return self.run.url

    def describe(self, info: dict) -> None:
        """Add facts known only once the roles are placed (Ray job id, nodes) to the run's config."""
        self.run.config.update(info, allow_val_change=True)

    def add_source(self, source: Callable[[], dict[str, float]]) -> None:
        """Metrics merged into every logged step (e.g. per-role resources); a source must not block."""
        self.sources.append(source)

    def start_progress(self) -> None:
        """Progress bar with ETA, started when training starts (not during start-up)."""
        if self.cfg.progress_bar and self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total_steps, desc="train", unit="step", dynamic_ncols=True,
                            file=self.bar_file)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        # NaN/inf are logged as they are: a diverging run must show it.
        for source in self.sources:
            metrics = {**metrics, **source()}
        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        self.run.log(clean, step=step)
        self.jsonl.write(json.dumps({"step": step, "time": time.time(), **clean}) + "\n")
        self.jsonl.flush()

    def advance(self, metrics: dict[str, float]) -> None:
        if self.bar is not None:
            shown = {k.split("/")[-1]: f"{metrics[k]:.3f}" for k in ("reward/total", "eval/accuracy") if k in metrics}
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(1)

    def samples_table(self, step: int, rollouts, scores) -> None:
        n = min(self.cfg.table_rows, len(rollouts))
        if n == 0:
            return
        columns = ["step", "prompt", "response", "answer", "reward", "error"]
        rows = [[step, rollouts.prompt_texts[i], rollouts.response_texts[i], rollouts.answers[i],
                 float(scores.values[i]), scores.errors[i] or ""] for i in range(n)]
        table = self.wandb.Table(columns=columns)
        for row in rows:
            table.add_data(*row)
        self.run.log({"samples": table}, step=step)
        with open(self.samples_path, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(dict(zip(columns, row))) + "\n" for row in rows)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.jsonl.close()
        self.run.finish()
