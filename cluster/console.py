"""What `rewardflow train` shows at the terminal, and where everything else goes.

By default the console gets one line per start-up phase, the progress bar, errors (one line each)
and the final summary. All the rest goes to files under `<output_dir>/logs/`:

- `<role>-<i>.log`: each actor's stdout and stderr (vLLM, DeepSpeed, transformers, tracebacks).
  `redirect_worker_output`, a Ray worker setup hook, points the actor process's file descriptors
  1 and 2 at that file before the actor's class is imported, so child processes (isolated reward
  workers) and C code write there too.
- `driver.log`: the driver's own stdout and stderr while the run is up (Ray's messages, Python
  warnings) and, when the run fails, its full traceback.

`logging.verbose` (`rewardflow train --verbose`) shows everything as well: the actors copy their
output to the file and to Ray, which forwards it to the console, and the driver's stderr stays on
the terminal.
"""
from __future__ import annotations

import os
import re
import sys
import threading
import traceback
from contextlib import contextmanager
from pathlib import Path

LOG_DIR_ENV = "REWARDFLOW_LOG_DIR"  # job-wide: where actors write their logs
LOG_NAME_ENV = "REWARDFLOW_LOG_NAME"  # per actor: "<role>-<i>", its log file's name
TEE_ENV = "REWARDFLOW_LOG_TEE"  # "1": copy the actor's output to Ray's forwarding as well
SETUP_HOOK = "cluster.console.redirect_worker_output"

# The driver's map from Ray actor id (hex) to the actor's log name, to name the actor of an error.
_actor_names: dict[str, str] = {}


class RunFailed(Exception):
    """A run failed; the message is one line naming what failed and the log files to read."""


def redirect_worker_output() -> None:
    """Ray worker setup hook (runs in every worker process of the job, before any actor or task):
    an actor spawned with LOG_NAME_ENV writes its stdout and stderr to `<LOG_DIR_ENV>/<name>.log`.
    A file that cannot be opened (a node without the driver's file system) leaves output to Ray."""
    log_dir, name = os.environ.get(LOG_DIR_ENV), os.environ.get(LOG_NAME_ENV)
    if not log_dir or not name:
        return
    try:
        os.makedirs(log_dir, exist_ok=True)
        fd = os.open(os.path.join(log_dir, f"{name}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    tee = os.environ.get(TEE_ENV) == "1"
    for target in (1, 2):
        if tee:  # a thread copies a pipe to the file and to Ray's file (a hard crash may lose its last lines)
            read, write = os.pipe()
            threading.Thread(target=_copy, args=(read, (fd, os.dup(target))), daemon=True).start()
            os.dup2(write, target)
            os.close(write)
        else:
            os.dup2(fd, target)
    if not tee:
        os.close(fd)


def _copy(read: int, targets: tuple[int, ...]) -> None:
    """Copy everything from pipe `read` to each fd in `targets` until the pipe closes."""
    while chunk := os.read(read, 65536):
        for fd in targets:
            os.write(fd, chunk)


class Console:
    """The terminal of a run: phase lines (`say`) and the progress bar (`stream`)."""

    def __init__(self, stream, log_dir: Path, verbose: bool):
        self.stream = stream
        self.log_dir = log_dir
        self.verbose = verbose

    def say(self, text: str) -> None:
        print(f"rewardflow: {text}", file=self.stream, flush=True)

    def runtime_env(self) -> dict:
        """The job-level runtime env that sends every named actor's output to its log file."""
        env = {LOG_DIR_ENV: str(self.log_dir), TEE_ENV: "1" if self.verbose else "0"}
        return {"worker_process_setup_hook": SETUP_HOOK, "env_vars": env}


def name_actor(actor, name: str) -> None:
    """Remember `actor` (a Ray actor handle) as `name` (`<role>-<i>`, its log file's name)."""
    _actor_names[actor._actor_id.hex()] = name


@contextmanager
def run_console(log_dir: Path, verbose: bool):
    """Yields the run's `Console`. Unless `verbose`, the driver's stdout and stderr (Ray's
    messages, Python warnings, library prints) go to `<log_dir>/driver.log` until the block
    ends, and an exception from the block is logged there in full and raised again as a one-line
    `RunFailed` (a `ConfigError` passes unchanged: it already is one line)."""
    from core.config import ConfigError

    log_dir.mkdir(parents=True, exist_ok=True)
    if verbose:
        yield Console(sys.stderr, log_dir, verbose)
        return
    with open(log_dir / "driver.log", "a", encoding="utf-8", buffering=1) as log:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = {fd: os.dup(fd) for fd in (1, 2)}
        terminal = os.fdopen(os.dup(2), "w", buffering=1)
        for fd in saved:
            os.dup2(log.fileno(), fd)
        try:
            yield Console(terminal, log_dir, verbose)
        except ConfigError:
            raise
        except Exception as e:
            traceback.print_exc(file=log)
            raise RunFailed(failure_line(e, log_dir)) from e
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            terminal.close()


def failure_line(exc: BaseException, log_dir: Path) -> str:
    """One line for a failed run: the error, the actor it came from (found along the exception's
    chain) with that actor's log file, and the driver log that holds the full traceback."""
    logs = f"traceback: {log_dir / 'driver.log'}"
    for e in _chain(exc):
        name = _actor_names.get(_actor_id(e) or "")
        if name:
            return f"{name}: {_summary(exc)} (log: {log_dir / name}.log; {logs})"
    return f"{_summary(exc)} ({logs})"


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _actor_id(e: BaseException) -> str | None:
    """The hex id of the actor an error came from: a RayActorError's `actor_id`; a task error
    raised as its cause's type keeps the id only in its message's header."""
    from ray.exceptions import RayActorError, RayTaskError

    if isinstance(e, RayActorError):
        return e.actor_id
    if isinstance(e, RayTaskError):
        found = re.search(r"actor_id=([0-9a-f]+)", str(e))
        return found.group(1) if found else None
    return None


def _summary(e: BaseException, limit: int = 200) -> str:
    """`Type: message`, one line: a task error's cause; for an actor that died, the message's
    last line that is not indented (the exception line of a failed `__init__`'s traceback)."""
    from ray.exceptions import RayActorError, RayTaskError

    if isinstance(e, RayTaskError) and not isinstance(e.cause, RayTaskError):
        e = e.cause
    text = str(e).strip()
    if isinstance(e, RayActorError):
        lines = [line for line in text.splitlines() if line.strip() and not line[0].isspace()] or [text]
        # A failed __init__: the traceback's last line. Died later: Ray's fixed first line, then
        # why (the worker's exit, out of memory, ...).
        line = lines[-1] if e.actor_init_failed else lines[min(1, len(lines) - 1)]
    else:
        line = f"{type(e).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")
    if len(line) <= limit:
        return line
    cut = line.rfind(". ", 0, limit)  # whole sentences where there are some
    return line[:cut + 1] if cut > limit // 2 else line[:limit - 3] + "..."
