"""Scoring terms in isolation (rewards/isolation.py): a raising or hanging reward costs only its own
samples, a failed batch call falls back to samples one at a time, a reward that can run away
holding the GIL (`isolate_process`) runs in a worker process that its timeout kills."""
import gc
import os
import threading
import time

import numpy as np
import pytest

from rewards.answer_format import AnswerFormat, AnswerFormatConfig
from rewards.base import Reward, Sample
from rewards.combine import CombineConfig, Combiner, TermCombineConfig
from rewards.isolation import IsolatedRunner, prefer_pairs, score_terms
from rewards.math_correct import MathCorrect, MathCorrectConfig
from rewards.repetition import Repetition, RepetitionConfig
from tests.unit.rewards.process_rewards import InWorker, LongerInWorker, Unpicklable


class _Raises(Reward):
    def score(self, sample):
        raise RuntimeError("boom")


class _Hangs(Reward):
    release = threading.Event()

    def score(self, sample):
        self.release.wait(5)
        return 1.0


def test_weighted_sum_and_isolation_of_failures():
    samples = [Sample("q", "42", "42"), Sample("q", "It is 41", "42")]
    rewards = {"math_correct": MathCorrect(MathCorrectConfig()), "answer_format": AnswerFormat(AnswerFormatConfig())}
    weights = {"math_correct": 1.0, "answer_format": 0.1, "raises": 1.0}

    def combined(terms: dict) -> list[float]:
        raw = score_terms(terms, samples, IsolatedRunner(timeout_s=5))
        combine = Combiner([TermCombineConfig(name=n, weight=weights[n]) for n in terms], CombineConfig())
        return raw, combine(raw.terms, np.zeros(len(samples), dtype=np.int64)).tolist()

    raw, values = combined(rewards)
    # sample 0: 1·1 + .1·1 = 1.1; sample 1: 1·0 + .1·0 = 0
    assert values == pytest.approx([1.1, 0.0])
    assert raw.terms["answer_format"].tolist() == [1.0, 0.0]
    assert raw.errors == [None, None]

    raw, values = combined({**rewards, "raises": _Raises(None)})
    assert values == pytest.approx([1.1, 0.0])
    assert raw.errors == ["raises: RuntimeError: boom"] * 2


def test_a_hanging_reward_times_out_and_the_next_call_still_runs():
    runner = IsolatedRunner(timeout_s=0.2)
    try:
        value, err = runner.call(_Hangs(None), Sample("q", "r"))
        assert (value, err) == (0.0, "timeout after 0.2s")
        assert runner.call(MathCorrect(MathCorrectConfig()), Sample("q", "2", "2")) == (1.0, None)
    finally:
        _Hangs.release.set()


def test_score_terms_keeps_raw_terms_and_first_error():
    rewards = {"math_correct": MathCorrect(MathCorrectConfig()), "raises": _Raises(None),
               "repetition": Repetition(RepetitionConfig(n=1))}
    out = score_terms(rewards, [Sample("q", "2 2", "2"), Sample("q", "3", "2")], IsolatedRunner(timeout_s=5))
    assert out.terms["math_correct"].tolist() == [1.0, 0.0]
    assert out.terms["repetition"].tolist() == [-0.5, 0.0]   # "2 2": 1 unique of 2
    assert out.terms["raises"].tolist() == [0.0, 0.0]
    assert out.errors == ["raises: RuntimeError: boom"] * 2


class _Batched(Reward):
    """Scores len(response); its batch call fails whenever a response says "bad"."""

    def __init__(self):
        self.batch_calls, self.single_calls = 0, 0

    def score_batch(self, samples):
        self.batch_calls += 1
        if any(s.response == "bad" for s in samples):
            raise ValueError("bad batch")
        return [float(len(s.response)) for s in samples]

    def score(self, sample):
        self.single_calls += 1
        if sample.response == "bad":
            raise ValueError("bad sample")
        return float(len(sample.response))


def test_batched_rewards_get_one_call_and_fall_back_to_samples_when_it_fails():
    runner = IsolatedRunner(timeout_s=5)
    good = [Sample("q", "ab"), Sample("q", "abcd")]
    reward = _Batched()
    out = score_terms({"b": reward}, good, runner)
    assert out.terms["b"].tolist() == [2.0, 4.0] and out.errors == [None, None]
    assert (reward.batch_calls, reward.single_calls) == (1, 0)
    # The batch fails as a whole: each sample is scored alone and only the bad one costs.
    out = score_terms({"b": reward}, [good[0], Sample("q", "bad"), good[1]], runner)
    assert out.terms["b"].tolist() == [2.0, 0.0, 4.0]
    assert out.errors == [None, "b: ValueError: bad sample", None]
    assert (reward.batch_calls, reward.single_calls) == (2, 3)


# ---------------------------------------------------------------- process isolation (isolate_process)

# sympy evaluates 9^(9^9) (a 370-million-digit integer) for minutes, holding the GIL.
RUNAWAY = Sample("What is 1?", "\\boxed{9^{9^{9}}}", "1")


def test_a_runaway_math_answer_is_killed_at_the_timeout_and_the_worker_restarts():
    runner, reward = IsolatedRunner(timeout_s=2), MathCorrect(MathCorrectConfig())
    assert runner.call(reward, Sample("q", "2", "2")) == (1.0, None)  # the worker is up
    started = time.monotonic()
    assert runner.call(reward, RUNAWAY) == (0.0, "timeout after 2s")
    assert time.monotonic() - started < 6
    assert runner.call(reward, Sample("q", "It is \\boxed{2}", "2")) == (1.0, None)
    assert runner.call(reward, Sample("q", "2", "")) == (0.0, "ValueError: reference answer '' does not parse")


def test_the_process_scoring_a_runaway_answer_leaves_other_threads_running():
    runner, reward = IsolatedRunner(timeout_s=2), MathCorrect(MathCorrectConfig())
    runner.call(reward, Sample("q", "2", "2"))
    ticks, done = [], threading.Event()

    def tick():
        while not done.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.01)

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    started = time.monotonic()
    assert runner.call(reward, RUNAWAY) == (0.0, "timeout after 2s")
    ended = time.monotonic()
    done.set()
    ticker.join()
    during = [started, *(t for t in ticks if started <= t <= ended), ended]
    # A 10 ms ticker: held off by the GIL it would stop for the whole 2 s call.
    assert len(during) > 50 and max(np.diff(during)) < 0.5


def _gone(pid: int, within_s: float = 5.0) -> bool:
    """True once `pid` has exited and been reaped (no zombie left in /proc)."""
    deadline = time.monotonic() + within_s
    while os.path.exists(f"/proc/{pid}"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_process_isolated_reward_reports_failures_like_the_thread_path():
    runner, reward = IsolatedRunner(timeout_s=1), InWorker(None)
    pid, err = runner.call(reward, Sample("q", "pid"))
    assert err is None and pid != os.getpid()
    assert runner.call(reward, Sample("q", "pid")) == (pid, None)  # one long-lived worker
    assert runner.call(reward, Sample("q", "raise")) == (0.0, "RuntimeError: boom")
    assert runner.call(reward, Sample("q", "nan")) == (0.0, "non-finite value nan")
    assert runner.call(reward, Sample("q", "exit")) == (0.0, "worker process died (exit code 3)")
    pid2, _ = runner.call(reward, Sample("q", "pid"))
    assert runner.call(reward, Sample("q", "spin")) == (0.0, "timeout after 1s")
    assert _gone(int(pid)) and _gone(int(pid2))  # the killed workers were reaped
    assert runner.call(Unpicklable(), Sample("q", "r")) == (
        0.0, "worker process could not load the reward: TypeError: cannot pickle '_thread.lock' object")
    prefs, errors = prefer_pairs({"longer": (LongerInWorker(None), 1.0)},
                                 [(Sample("q", "ab"), Sample("q", "a")), (Sample("q", "a"), Sample("q", "ab"))], runner)
    assert prefs.tolist() == [1.0, 0.0] and errors == [None, None]


def test_the_worker_process_ends_with_its_runner():
    runner = IsolatedRunner(timeout_s=5)
    pid, _ = runner.call(InWorker(None), Sample("q", "pid"))
    del runner
    gc.collect()
    assert _gone(int(pid))
