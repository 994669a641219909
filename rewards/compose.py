"""Run reward terms over samples with isolation, and combine them as a weighted sum.

A term that raises or exceeds its timeout costs that sample only: its value is the term's
`failure_value` (0), the error is recorded, and the run goes on.
"""
from __future__ import annotations

import concurrent.futures as cf
from dataclasses import dataclass

import numpy as np

from cluster.protocol import Scores
from rewards.base import Reward, Sample


@dataclass
class Term:
    name: str
    reward: Reward
    weight: float


class IsolatedRunner:
    """Calls `reward.score(sample)` in a worker thread with a timeout.

    A call that times out leaves its thread running; the pool is replaced so later calls
    do not queue behind it.
    """

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self._pool = cf.ThreadPoolExecutor(max_workers=1)

    def call(self, reward: Reward, sample: Sample) -> tuple[float, str | None]:
        future = self._pool.submit(reward.score, sample)
        try:
            value = float(future.result(timeout=self.timeout_s))
        except cf.TimeoutError:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = cf.ThreadPoolExecutor(max_workers=1)
            return 0.0, f"timeout after {self.timeout_s:g}s"
        except Exception as e:  # any failure of user reward code costs this sample only
            return 0.0, f"{type(e).__name__}: {e}"
        if not np.isfinite(value):
            return 0.0, f"non-finite value {value}"
        return value, None


def score_weighted(terms: list[Term], samples: list[Sample], runner: IsolatedRunner) -> Scores:
    """values_i = Σ_k w_k · r_k(sample_i); per-term raw values kept in `terms`."""
    raw = {t.name: np.zeros(len(samples), dtype=np.float64) for t in terms}
    errors: list[str | None] = [None] * len(samples)
    for i, sample in enumerate(samples):
        for t in terms:
            value, err = runner.call(t.reward, sample)
            raw[t.name][i] = value
            if err is not None and errors[i] is None:
                errors[i] = f"{t.name}: {err}"
    values = sum(t.weight * raw[t.name] for t in terms)
    return Scores(values=np.asarray(values, dtype=np.float64), terms=raw, errors=errors)
