"""`rewardflow train` as a person sees it: a few lines before the first step, no library warnings,
and every actor's output in `<output_dir>/logs/` (shown on the console too with --verbose)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.test_e2e import tiny_overrides

pytestmark = pytest.mark.cluster
BIN = Path(sys.executable).parent
# vLLM's own log format: "WARNING 11-30 19:13:38 [cpu_worker.py:114] ..."
VLLM_LINE = re.compile(r"WARNING \d\d-\d\d [\d:]+ \[\w+\.py:\d+\]")
MAX_LINES_BEFORE_FIRST_STEP = 10  # measured: 8 (logs, Ray, 4 roles, weight sync, started); 27 before


def train(model: str, out: Path, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    cmd = [str(BIN / "rewardflow"), "train", "recipes/grpo_arith.yaml", *flags, *tiny_overrides(model, out),
           "train.steps=1", "train.save_final=false", "logging.progress_bar=true"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def before_first_step(proc: subprocess.CompletedProcess) -> list[str]:
    """The console's lines before the progress bar first shows (phase lines and the bar are on stderr)."""
    return proc.stderr[:proc.stderr.index("train:")].splitlines()


def test_default_console_is_short_and_the_logs_hold_the_rest(tiny_model_path, tmp_path):
    proc = train(tiny_model_path, tmp_path / "quiet")
    lines = before_first_step(proc)
    assert len(lines) <= MAX_LINES_BEFORE_FIRST_STEP, "\n".join(lines)
    assert all(line.startswith("rewardflow: ") for line in lines if line.strip()), "\n".join(lines)
    assert any(re.match(r"rewardflow: rollout: 1 actor ready \(\d+\.\d s\)$", line) for line in lines)
    assert "WARNING" not in proc.stdout + proc.stderr
    assert "rewardflow: 1 steps in" in proc.stdout

    logs = tmp_path / "quiet" / "logs"
    assert {"driver.log", "rollout-0.log", "reward-0.log", "reference-0.log", "learner-0.log"} <= {
        p.name for p in logs.iterdir()}
    assert VLLM_LINE.search((logs / "rollout-0.log").read_text())  # vLLM's start-up, off the console
    assert "Started a local Ray instance" in (logs / "driver.log").read_text()


def test_verbose_shows_the_actors_output_and_still_logs_it(tiny_model_path, tmp_path):
    proc = train(tiny_model_path, tmp_path / "verbose", "--verbose")
    shown = proc.stdout + proc.stderr
    assert VLLM_LINE.search(shown) and "(RolloutActor pid=" in shown
    assert "rewardflow: rollout: 1 actor ready" in shown
    assert VLLM_LINE.search((tmp_path / "verbose" / "logs" / "rollout-0.log").read_text())
