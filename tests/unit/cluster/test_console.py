"""The run's console (cluster/console.py): actors' output to their log files, the driver's noise to
driver.log, errors as one line naming the actor and its log."""
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from ray.exceptions import ActorDiedError, RayTaskError

from cluster import console
from cluster.console import LOG_DIR_ENV, LOG_NAME_ENV, TEE_ENV, RunFailed, failure_line, run_console
from core.config import ConfigError

# A worker process's life in miniature: the setup hook, then Python, warnings and a child process.
WORKER = """
import os, sys, warnings
from cluster.console import redirect_worker_output
redirect_worker_output()
print("python stdout")
print("python stderr", file=sys.stderr)
warnings.warn("a library warning")
sys.stdout.flush()
os.system("echo child process")
"""


def run_worker(tmp_path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WORKER], capture_output=True, text=True, timeout=60,
                          env={**os.environ, LOG_DIR_ENV: str(tmp_path / "logs"), **env})


def test_a_named_worker_writes_everything_to_its_log_file_and_nothing_to_ray(tmp_path):
    proc = run_worker(tmp_path, **{LOG_NAME_ENV: "rollout-0"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""
    log = (tmp_path / "logs" / "rollout-0.log").read_text()
    for line in ("python stdout", "python stderr", "UserWarning: a library warning", "child process"):
        assert line in log


def test_verbose_copies_a_workers_output_to_ray_as_well(tmp_path):
    proc = run_worker(tmp_path, **{LOG_NAME_ENV: "reward-1", TEE_ENV: "1"})
    assert proc.returncode == 0, proc.stderr
    assert "python stdout" in proc.stdout and "child process" in proc.stdout
    assert "python stderr" in proc.stderr and "a library warning" in proc.stderr
    log = (tmp_path / "logs" / "reward-1.log").read_text()
    assert "python stdout" in log and "python stderr" in log and "child process" in log


def test_a_worker_without_a_name_is_left_to_ray(tmp_path):
    proc = run_worker(tmp_path)
    assert "python stdout" in proc.stdout and "python stderr" in proc.stderr
    assert not (tmp_path / "logs").exists()


# A driver in miniature: library prints, warnings and C-level writes during the run, then the summary.
DRIVER = """
import os, sys, warnings
from pathlib import Path
from cluster.console import run_console
with run_console(Path(sys.argv[1]), verbose=False) as out:
    print("a library's print")
    print("a library's log line", file=sys.stderr)
    warnings.warn("a driver warning")
    os.write(2, b"from C\\n")
    out.say("rollout: 1 actor ready (1.0 s)")
print("summary")
"""


def test_the_driver_shows_only_what_the_console_says(tmp_path):
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path / "logs")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "summary\n"  # the driver's own streams are back after the run
    assert proc.stderr == "rewardflow: rollout: 1 actor ready (1.0 s)\n"
    log = (tmp_path / "logs" / "driver.log").read_text()
    for line in ("a library's print", "a library's log line", "UserWarning: a driver warning", "from C"):
        assert line in log


def test_verbose_leaves_the_drivers_output_on_the_console(tmp_path, capfd):
    with run_console(tmp_path / "logs", verbose=True) as out:
        print("a library's print", file=sys.stderr)
        out.say("Ray started locally")
        assert out.runtime_env()["env_vars"][TEE_ENV] == "1"
    assert capfd.readouterr().err == "a library's print\nrewardflow: Ray started locally\n"


TRACEBACK = ('Traceback (most recent call last):\n  File "actors/rollout.py", line 9, in generate\n'
             '    engine.generate()\nValueError: prompt too long\n')


def task_error(actor_id: str) -> RayTaskError:
    """An actor method's exception as `ray.get` raises it: a RayTaskError that is also a ValueError."""
    return RayTaskError("RolloutActor.generate", TRACEBACK, ValueError("prompt too long"), proctitle="ray::Rollout",
                        pid=7, ip="127.0.0.1", actor_repr="<RolloutActor>", actor_id=actor_id).as_instanceof_cause()


@pytest.fixture
def rollout_1(monkeypatch):
    monkeypatch.setattr(console, "_actor_names", {})
    console.name_actor(SimpleNamespace(_actor_id=SimpleNamespace(hex=lambda: "ab12")), "rollout-1")
    return "ab12"


def test_a_failed_run_is_one_line_naming_the_actor_and_its_log(tmp_path, capfd, rollout_1):
    logs = tmp_path / "logs"
    with pytest.raises(RunFailed) as failed, run_console(logs, verbose=False):
        raise task_error(rollout_1)
    assert str(failed.value) == (f"rollout-1: ValueError: prompt too long (log: {logs}/rollout-1.log; "
                                 f"traceback: {logs}/driver.log)")
    assert capfd.readouterr().err == ""
    assert "ValueError: prompt too long" in (logs / "driver.log").read_text()  # the whole traceback


def test_failure_line_of_actor_deaths(tmp_path, rollout_1):
    init_failed = ActorDiedError(RayTaskError("RolloutActor.__init__", TRACEBACK, ValueError("x"),
                                              proctitle="p", pid=7, ip="127.0.0.1", actor_repr="r", actor_id="ab12"))
    assert failure_line(init_failed, tmp_path).startswith("rollout-1: ValueError: prompt too long (log: ")
    # Died later (killed, out of memory): Ray's first line is always the same; the next one says why.
    died = ActorDiedError()
    died.actor_id, died.error_msg = rollout_1, ("The actor died unexpectedly before finishing this task.\n"
                                                "\tclass_name: RolloutActor\n\tpid: 7\n"
                                                "The actor is dead because its worker process has died. " * 5)
    line = failure_line(died, tmp_path)
    assert line.startswith("rollout-1: The actor is dead because its worker process has died. ")
    assert line.endswith(f"(log: {tmp_path}/rollout-1.log; traceback: {tmp_path}/driver.log)")
    assert len(line) < 200 + len(str(tmp_path)) * 2 + 40  # long messages are cut at a sentence


def test_failure_line_finds_the_actor_along_the_chain_and_keeps_the_drivers_message(tmp_path, rollout_1):
    try:
        try:
            raise task_error(rollout_1)
        except ValueError as e:
            raise RuntimeError("weight sync of version 2 failed: rollout actor 1 died") from e
    except RuntimeError as e:
        line = failure_line(e, tmp_path)
    assert line.startswith("rollout-1: RuntimeError: weight sync of version 2 failed: rollout actor 1 died (log: ")
    assert failure_line(KeyError("step"), tmp_path) == f"KeyError: 'step' (traceback: {tmp_path}/driver.log)"


def test_config_errors_and_verbose_runs_raise_unchanged(tmp_path, rollout_1):
    with pytest.raises(ConfigError, match="^algo.lr: bad$"), run_console(tmp_path / "a", verbose=False):
        raise ConfigError("algo.lr: bad")
    with pytest.raises(ValueError, match="prompt too long"), run_console(tmp_path / "b", verbose=True):
        raise task_error(rollout_1)
