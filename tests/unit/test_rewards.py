import threading

import pytest

from rewards.answer_format import AnswerFormat, AnswerFormatConfig
from rewards.base import Reward, Sample
from rewards.compose import IsolatedRunner, Term, score_weighted
from rewards.math_correct import MathCorrect, MathCorrectConfig
from rewards.registry import REWARDS


@pytest.mark.parametrize("response,answer,expected", [
    ("42", "42", 1.0),
    ("The answer is 42.", "42", 1.0),
    ("23 + 19 = 42", "42", 1.0),
    ("41", "42", 0.0),
    ("no idea", "42", 0.0),
    ("$\\frac{1}{2}$", "0.5", 1.0),
    ("so the result is \\boxed{\\frac{1}{2}} (not 7)", "0.5", 1.0),
    ("1/2", "0.5", 1.0),
    ("It is 1,250.", "1250", 1.0),
    ("-7", "-7", 1.0),
    ("150 or maybe 151", "150", 0.0),   # only the last number counts
    # Restating the question is not an answer (math-verify alone would evaluate 97 + 53 = 150).
    ("To find 97 + 53, we simply add them together.", "150", 0.0),
])
def test_math_correct(response, answer, expected):
    assert MathCorrect(MathCorrectConfig()).score(Sample("q", response, answer)) == expected


def test_math_correct_math_verify_mode_evaluates_expressions():
    reward = MathCorrect(MathCorrectConfig(extract="math_verify"))
    assert reward.score(Sample("q", "To find 97 + 53, we simply add them together.", "150")) == 1.0


def test_math_correct_raises_on_unparseable_reference():
    with pytest.raises(ValueError, match="does not parse"):
        MathCorrect(MathCorrectConfig()).score(Sample("q", "1", ""))


@pytest.mark.parametrize("response,expected", [("42", 1.0), (" -7 ", 1.0), ("3.5", 1.0), ("It is 42", 0.0), ("", 0.0)])
def test_answer_format_default_pattern(response, expected):
    assert AnswerFormat(AnswerFormatConfig()).score(Sample("q", response)) == expected


def test_answer_format_custom_pattern_and_values():
    r = AnswerFormat(AnswerFormatConfig(pattern=r"<answer>.*</answer>", match=0.5, no_match=-0.5))
    assert r.score(Sample("q", "so <answer>3</answer>")) == 0.5
    assert r.score(Sample("q", "3")) == -0.5


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
    terms = [Term("math_correct", MathCorrect(MathCorrectConfig()), 1.0),
             Term("answer_format", AnswerFormat(AnswerFormatConfig()), 0.1)]
    scores = score_weighted(terms, samples, IsolatedRunner(timeout_s=5))
    # sample 0: 1·1 + .1·1 = 1.1; sample 1: 1·0 + .1·0 = 0
    assert scores.values.tolist() == pytest.approx([1.1, 0.0])
    assert scores.terms["answer_format"].tolist() == [1.0, 0.0]
    assert scores.errors == [None, None]

    failing = terms + [Term("raises", _Raises(None), 1.0)]
    scores = score_weighted(failing, samples, IsolatedRunner(timeout_s=5))
    assert scores.values.tolist() == pytest.approx([1.1, 0.0])
    assert scores.errors == ["raises: RuntimeError: boom"] * 2
    assert scores.num_errors == 2


def test_a_hanging_reward_times_out_and_the_next_call_still_runs():
    runner = IsolatedRunner(timeout_s=0.2)
    try:
        value, err = runner.call(_Hangs(None), Sample("q", "r"))
        assert (value, err) == (0.0, "timeout after 0.2s")
        assert runner.call(MathCorrect(MathCorrectConfig()), Sample("q", "2", "2")) == (1.0, None)
    finally:
        _Hangs.release.set()


def test_every_registered_reward_builds_from_default_config_and_is_tagged():
    for name, cls in REWARDS.items():
        reward = cls(cls.Config())
        assert reward.taxonomy.basis and reward.taxonomy.granularity, name
        assert isinstance(reward.score(Sample("What is 1 + 1?", "2", "2")), float), name


@pytest.mark.parametrize("tokens,expected", [
    (10, 0.0),     # L <= 48: no penalty
    (48, 0.0),
    (52, -0.25),   # (48 - 52) / 16
    (64, -1.0),    # (48 - 64) / 16
    (65, -1.0),    # beyond L_max
])
def test_overlong_soft_punishment(tokens, expected):
    from rewards.overlong import Overlong, OverlongConfig

    r = Overlong(OverlongConfig(max_tokens=64, cache_tokens=16))
    assert r.score(Sample("q", "x", num_tokens=tokens)) == expected


def test_overlong_config_rejects_cache_above_max():
    from rewards.overlong import OverlongConfig

    with pytest.raises(Exception, match="cache_tokens must not exceed max_tokens"):
        OverlongConfig(max_tokens=8, cache_tokens=16)
