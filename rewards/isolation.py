"""Running reward terms with isolation: a term that raises, hangs or returns a non-finite value
costs that sample only (value 0, the error recorded in `reward/errors`), never the run.

Reward actors call `score_terms` (and `prefer_pairs` for pairwise terms) over their share of a
step; the raw per-term values go to the driver, which combines them (`rewards/combine.py`).
"""
from __future__ import annotations

import concurrent.futures as cf
from typing import Callable

import numpy as np

from core.protocol import TermScores
from rewards.base import Reward, Sample


class IsolatedRunner:
    """Calls `reward.score(sample)` in a worker thread with a timeout.

    A call that times out leaves its thread running; the pool is replaced so later calls
    do not queue behind it.
    """

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self._pool = cf.ThreadPoolExecutor(max_workers=1)

    def call(self, reward: Reward, sample: Sample) -> tuple[float, str | None]:
        return self.run(reward.score, sample)

    def run(self, fn: Callable[..., float], *args) -> tuple[float, str | None]:
        """`fn(*args)` as a float, or (0.0, why) when it raised, timed out or was not finite."""
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


def score_terms(rewards: dict[str, Reward], samples: list[Sample], runner: IsolatedRunner) -> TermScores:
    """Raw value of every term on every sample; a sample's first failure (in term order) is its
    error. A reward with `score_batch` (reward models, remote rewards) gets one call for all
    samples; if that call fails, its samples are scored one by one, so only failing ones cost."""
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
