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

from cluster.recipe import LoggingConfig


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
