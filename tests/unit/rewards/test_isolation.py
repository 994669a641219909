"""Scoring terms in isolation (rewards/isolation.py): a raising or hanging reward costs only its own
samples, a failed batch call falls back to samples one at a time."""
import threading

import numpy as np
import pytest

from rewards.answer_format import AnswerFormat, AnswerFormatConfig
from rewards.base import Reward, Sample
from rewards.combine import CombineConfig, Combiner, TermCombineConfig
from rewards.isolation import IsolatedRunner, score_terms
from rewards.math_correct import MathCorrect, MathCorrectConfig
from rewards.repetition import Repetition, RepetitionConfig


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
