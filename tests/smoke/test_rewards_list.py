"""`rewardflow rewards list` in a subprocess: the registry with its four taxonomy columns."""
import os
import subprocess
import sys
from pathlib import Path

from rewards.registry import REWARDS

RF = Path(sys.executable).parent / "rewardflow"


def _run(*args):
    return subprocess.run([str(RF), "rewards", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "WANDB_MODE": "disabled"})


def test_rewards_list_prints_every_reward_with_its_taxonomy():
    proc = _run("list")
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.strip().splitlines()
    assert header.split() == ["name", "basis", "format", "expression", "granularity", "use"]
    assert [r.split()[0] for r in rows] == list(REWARDS)
    by_name = {r.split()[0]: r.split() for r in rows}
    assert by_name["math_correct"][1:5] == ["rule", "scalar", "explicit", "sequence"]
    assert by_name["repetition"][1:5] == ["rule", "scalar", "explicit", "sequence"]


def test_rewards_list_markdown_is_the_docs_table():
    proc = _run("list", "--markdown")
    assert proc.returncode == 0, proc.stderr
    docs = (Path(__file__).resolve().parents[2] / "docs" / "rewards.md").read_text()
    assert proc.stdout.strip() in docs

