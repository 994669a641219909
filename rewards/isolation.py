"""Running reward terms with isolation: a term that raises, hangs or returns a non-finite value
costs that sample only (value 0, the error recorded in `reward/errors`), never the run.

Reward actors call `score_terms` (and `prefer_pairs` for pairwise terms) over their share of a
step; the raw per-term values go to the driver, which combines them (`rewards/combine.py`).

A timeout can only abandon a worker thread, and a thread that holds the GIL (sympy on
`\\boxed{9^{9^{9}}}`) stalls the whole process anyway. So the methods of a reward with
`isolate_process` run in a worker process instead, which the timeout kills (DESIGN.md §7c).
"""
from __future__ import annotations

import concurrent.futures as cf
import ctypes
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import weakref
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Callable

import numpy as np

from rewards.base import Reward, Sample

if TYPE_CHECKING:
    from core.protocol import TermScores

# Loading a reward in a fresh worker: start-up and imports, not the reward's own work.
_LOAD_TIMEOUT_S = 60.0


class IsolatedRunner:
    """Calls `reward.score(sample)` with a timeout: in a worker thread, or in a worker process
    when the reward sets `isolate_process`.

    A thread call that times out leaves its thread running; the pool is replaced so later calls
    do not queue behind it. A process call that times out kills the process; the next one
    starts a fresh process. `run_any` closures always take the thread path.
    """

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self._pool = cf.ThreadPoolExecutor(max_workers=1)
        self._worker = _Worker()

    def call(self, reward: Reward, sample: Sample) -> tuple[float, str | None]:
        return self.run(reward.score, sample)

    def run(self, fn: Callable[..., float], *args) -> tuple[float, str | None]:
        """`fn(*args)` as a float, or (0.0, why) when it raised, timed out or was not finite."""
        owner = getattr(fn, "__self__", None)
        if isinstance(owner, Reward) and owner.isolate_process:
            value, err = self._worker.call(owner, fn.__name__, args, self.timeout_s)
        else:
            value, err = self.run_any(lambda: float(fn(*args)))
        if err is None and not np.isfinite(value):
            err = f"non-finite value {value}"
        return (value, None) if err is None else (0.0, err)

    def run_any(self, fn: Callable[[], object]) -> tuple[object, str | None]:
        """`fn()`'s result, or (None, why) when it raised or timed out."""
        future = self._pool.submit(fn)
        try:
            return future.result(timeout=self.timeout_s), None
        except cf.TimeoutError:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = cf.ThreadPoolExecutor(max_workers=1)
            return None, f"timeout after {self.timeout_s:g}s"
        except Exception as e:  # any failure of user reward code costs this sample only
            return None, f"{type(e).__name__}: {e}"


class _Worker:
    """One long-lived worker process (started on first use) that scores rewards sent to it.

    Requests go over a pipe one at a time: ("load", key, pickled reward) once per reward and
    process, then ("call", key, method, args) -> (float value, None) or (None, "Type: msg").
    A call past its timeout kills the process (SIGKILL); the next call starts another. The
    process dies with its runner (garbage collection, interpreter exit) or its parent process.
    """

    def __init__(self):
        self._lock = threading.Lock()  # one request at a time on the pipe
        self._proc = self._conn = self._stop = None
        self._loaded: dict[int, Reward] = {}  # kept alive so that their ids stay unique

    def call(self, reward: Reward, method: str, args: tuple, timeout_s: float) -> tuple[float | None, str | None]:
        with self._lock:
            err = self._load(reward)
            if err is not None:
                return None, f"worker process could not load the reward: {err}"
            return self._request(("call", id(reward), method, args), timeout_s,
                                 f"timeout after {timeout_s:g}s")

    def _load(self, reward: Reward) -> str | None:
        if self._proc is None or self._proc.poll() is not None:
            self._restart(reward)
        if self._loaded.get(id(reward)) is reward:
            return None
        try:
            blob = pickle.dumps(reward)
        except Exception as e:
            return f"{type(e).__name__}: {e}"
        _, err = self._request(("load", id(reward), blob), _LOAD_TIMEOUT_S,
                               f"not loaded within {_LOAD_TIMEOUT_S:g}s")
        if err is None:
            self._loaded[id(reward)] = reward
        return err

    def _request(self, message: tuple, timeout_s: float, on_timeout: str) -> tuple[object, str | None]:
        try:
            self._conn.send(message)
        except (OSError, EOFError):
            return None, self._died()
        except Exception as e:  # the arguments do not pickle: nothing was sent
            return None, f"{type(e).__name__}: {e}"
        try:
            if not self._conn.poll(timeout_s):
                self._restart(None)
                return None, on_timeout
            return self._conn.recv()
        except (OSError, EOFError):
            return None, self._died()

    def _died(self) -> str:
        try:
            code = self._proc.wait(1)  # the pipe closes just before the exit code is known
        except subprocess.TimeoutExpired:
            code = None
        self._restart(None)
        return f"worker process died (exit code {code})"

    def _restart(self, reward: Reward | None) -> None:
        """Stops the current process, if any; starts a new one when `reward` is given."""
        if self._stop is not None:
            self._stop()
        self._proc = self._conn = self._stop = None
        self._loaded.clear()
        if reward is not None:
            self._proc, self._conn = _start_worker()
            self._stop = weakref.finalize(self, _kill, self._proc, self._conn)


def _start_worker() -> tuple[subprocess.Popen, Connection]:
    """A fresh interpreter running `_serve` on one end of a socket pair.

    Not `fork` (the caller has threads) and not multiprocessing's spawn or forkserver: those
    re-import the caller's `__main__` in the worker (the `rewardflow` script imports torch: 2 s
    before the first sample). This imports only this module and, on load, the reward's.
    """
    ours, theirs = socket.socketpair()
    with theirs:
        code = (f"import sys; sys.path[:] = {sys.path!r}; "
                f"from {__name__} import _serve; _serve({theirs.fileno()}, {os.getpid()})")
        # Always from the same long-lived thread: the worker's death signal is tied to the thread
        # that started it (`_die_with_parent`), and a pool thread may exit while the worker lives.
        proc = _LAUNCHER.submit(subprocess.Popen, [sys.executable, "-c", code], pass_fds=[theirs.fileno()]).result()
    return proc, Connection(ours.detach())


_LAUNCHER = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="reward-worker-launcher")


def _kill(proc: subprocess.Popen, conn: Connection) -> None:
    conn.close()
    proc.kill()
    proc.wait()  # reaps it: no zombie


def _serve(fd: int, parent: int) -> None:
    """The worker process: answers requests until the pipe closes or the parent process dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's; the worker ends with it
    _die_with_parent(parent)
    conn, rewards = Connection(fd), {}
    while True:
        try:
            kind, key, *rest = conn.recv()
        except EOFError:
            return
        try:
            if kind == "load":
                rewards[key] = pickle.loads(rest[0])
                reply = None, None
            else:
                method, args = rest
                reply = float(getattr(rewards[key], method)(*args)), None
        except Exception as e:  # any failure of user reward code costs this sample only
            reply = None, f"{type(e).__name__}: {e}"
        conn.send(reply)


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent dies (Linux), even in the middle of a runaway call:
    the kernel sends it, so a call holding the GIL cannot delay it. Elsewhere an idle worker
    still ends when the pipe closes."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before that
        os._exit(1)


def score_terms(rewards: dict[str, Reward], samples: list[Sample], runner: IsolatedRunner) -> TermScores:
    """Raw value of every term on every sample; a sample's first failure (in term order) is its
    error. A reward with `score_batch` (reward models, remote rewards) gets one call for all
    samples; if that call fails, its samples are scored one by one, so only failing ones cost."""
    from core.protocol import TermScores  # imports torch: kept out of the worker process's start-up

    raw = {name: np.zeros(len(samples), dtype=np.float64) for name in rewards}
    errors: list[list[str]] = [[] for _ in samples]
    for name, reward in rewards.items():
        batched = _score_batch(reward, samples, runner) if hasattr(reward, "score_batch") else None
        for i, sample in enumerate(samples):
            value, err = batched[i] if batched is not None else runner.call(reward, sample)
            raw[name][i] = value
            if err is not None:
                errors[i].append(f"{name}: {err}")
    return TermScores(terms=raw, errors=[e[0] if e else None for e in errors])


def _score_batch(reward: Reward, samples: list[Sample], runner: IsolatedRunner) -> list[tuple[float, str | None]] | None:
    """(value, error) per sample from one `score_batch` call, or None when the call failed as a
    whole. A batch answer may carry per-sample errors (`.values`, `.errors`: remote rewards)."""
    out, err = runner.run_any(lambda: reward.score_batch(samples))
    if err is not None:
        return None
    values, errs = (out.values, out.errors) if hasattr(out, "errors") else (list(out), [None] * len(samples))
    if len(values) != len(samples) or len(errs) != len(samples):
        return None
    result = []
    for v, e in zip(values, errs):
        v = float(v) if e is None else 0.0
        result.append((0.0, "non-finite value") if not np.isfinite(v) else (v, e))
    return result


def prefer_pairs(pairwise: dict[str, tuple[Reward, float]], pairs: list[tuple[Sample, Sample]],
                 runner: IsolatedRunner) -> tuple[np.ndarray, list[str | None]]:
    """P(first ≻ second) per pair: the weight-averaged `prefer` of the pairwise terms.

    A term that fails on a pair counts as "no preference" (½) there — a failed judge must not
    silently favour either side — and the pair's first error is recorded.
    """
    total = sum(w for _, w in pairwise.values())
    prefs = np.zeros(len(pairs), dtype=np.float64)
    errors: list[str | None] = [None] * len(pairs)
    for i, (a, b) in enumerate(pairs):
        for name, (reward, weight) in pairwise.items():
            p, err = runner.run(reward.prefer, a, b)
            if err is None and not 0.0 <= p <= 1.0:
                err = f"preference {p} outside [0, 1]"
            if err is not None:
                p, errors[i] = 0.5, errors[i] or f"{name}: {err}"
            prefs[i] += weight * p / total
    return prefs, errors
