import threading

import numpy as np
import pytest

from actors.reward import RewardActor
from cluster.recipe import load_recipe
from core.protocol import Rollouts
from rewards.answer_format import AnswerFormat, AnswerFormatConfig
from rewards.base import Reward, Sample
from rewards.combine import CombineConfig, Combiner, TermCombineConfig
from rewards.isolation import IsolatedRunner, score_terms
from rewards.exact_match import ExactMatch, ExactMatchConfig
from rewards.length_penalty import LengthPenalty, LengthPenaltyConfig
from rewards.math_correct import MathCorrect, MathCorrectConfig
from rewards.regex_match import RegexMatch, RegexMatchConfig
from rewards.repetition import Repetition, RepetitionConfig


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


@pytest.mark.parametrize("response,answer,expected", [
    ("Paris", "paris", 1.0),                 # case folded
    ("  New \n York ", "new york", 1.0),      # whitespace collapsed
    ("Paris, France", "Paris", 0.0),
    ("", "Paris", 0.0),
])
def test_exact_match(response, answer, expected):
    assert ExactMatch(ExactMatchConfig()).score(Sample("q", response, answer)) == expected


def test_exact_match_case_sensitive_and_custom_values():
    r = ExactMatch(ExactMatchConfig(case_sensitive=True, correct=2.0, wrong=-1.0))
    assert r.score(Sample("q", "Paris", "Paris")) == 2.0
    assert r.score(Sample("q", "paris", "Paris")) == -1.0


def test_exact_match_extracts_the_last_match():
    tagged = ExactMatch(ExactMatchConfig(extract=r"<answer>(.*?)</answer>"))
    assert tagged.score(Sample("q", "<answer>3</answer> no, <answer> 4 </answer>", "4")) == 1.0
    assert tagged.score(Sample("q", "<answer>3</answer> no, <answer> 4 </answer>", "3")) == 0.0
    assert tagged.score(Sample("q", "4", "4")) == 0.0  # no tag: no answer
    no_group = ExactMatch(ExactMatchConfig(extract=r"\d+"))
    assert no_group.score(Sample("q", "x 12 y 13", "13")) == 1.0


def test_exact_match_needs_a_reference_and_a_valid_pattern():
    with pytest.raises(ValueError, match="no reference answer"):
        ExactMatch(ExactMatchConfig()).score(Sample("q", "4", " "))
    with pytest.raises(ValueError, match="extract\n.*not a valid regular expression"):
        ExactMatchConfig(extract="(")


@pytest.mark.parametrize("response,reference,full,expected", [
    (" 4.00 ", r"4(\.0+)?", True, 1.0),
    ("4.5", r"4(\.0+)?", True, 0.0),        # fullmatch: "4" is only a prefix
    ("4.5", r"4(\.0+)?", False, 1.0),       # search: "4" is found
    ("PARIS", r"(?i)paris|parís", True, 1.0),
    ("Lyon", r"(?i)paris|parís", True, 0.0),
])
def test_regex_match(response, reference, full, expected):
    assert RegexMatch(RegexMatchConfig(full=full)).score(Sample("q", response, reference)) == expected


def test_regex_match_extract_and_bad_reference():
    r = RegexMatch(RegexMatchConfig(extract=r"Answer: (.*)"))
    assert r.score(Sample("q", "A looks wrong.\nAnswer: b", "[Bb]")) == 1.0
    assert r.score(Sample("q", "b", "[Bb]")) == 0.0
    with pytest.raises(ValueError, match="is not a regular expression"):
        r.score(Sample("q", "Answer: (", "("))


@pytest.mark.parametrize("tokens,max_penalty,expected", [
    (5, None, 0.0),       # within the 10-token budget
    (10, None, 0.0),
    (15, None, -0.5),     # −0.1 · (15 − 10)
    (15, 0.3, -0.3),      # capped
])
def test_length_penalty(tokens, max_penalty, expected):
    r = LengthPenalty(LengthPenaltyConfig(free_tokens=10, coef=0.1, max_penalty=max_penalty))
    assert r.score(Sample("q", "x", num_tokens=tokens)) == pytest.approx(expected)


@pytest.mark.parametrize("response,n,coef,expected", [
    ("a b a b a b", 2, 1.0, -0.6),   # bigrams ab ba ab ba ab: 2 unique of 5 → −(1 − 2/5)
    ("a a a b", 1, 0.5, -0.25),      # 2 unique of 4 words → −0.5 · (1 − 2/4)
    ("the cat sat", 3, 1.0, 0.0),    # one trigram, unique
    ("one two", 3, 1.0, 0.0),        # fewer words than n
    ("", 3, 1.0, 0.0),
])
def test_repetition(response, n, coef, expected):
    r = Repetition(RepetitionConfig(n=n, coef=coef))
    assert r.score(Sample("q", response)) == pytest.approx(expected)


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


def test_reward_actor_returns_raw_terms_that_the_driver_combines():
    cfg = load_recipe("recipes/grpo_arith.yaml", [
        "rewards=[{name: math_correct}, {name: length_penalty, weight: 0.5, args: {free_tokens: 1, coef: 1}}]"])
    rollouts = Rollouts(
        prompt_ids=[np.array([1])] * 2, response_ids=[np.array([5]), np.array([5, 6, 7])],
        rollout_logprobs=[np.zeros(1), np.zeros(3)], response_texts=["4", "It is 5"], finish_reasons=["stop"] * 2,
        group_ids=np.array([0, 0]), policy_versions=np.array([0, 0]), prompt_texts=["2 + 2?"] * 2, answers=["4"] * 2)
    raw = RewardActor(cfg.rewards, timeout_s=5).score(rollouts)
    assert raw.terms["math_correct"].tolist() == [1.0, 0.0]
    assert raw.terms["length_penalty"].tolist() == [0.0, -2.0]   # 3 tokens, 1 free
    # 1 + 0.5·0 = 1; 0 + 0.5·(−2) = −1
    assert Combiner(cfg.rewards, cfg.reward.combine)(raw.terms, rollouts.group_ids).tolist() == [1.0, -1.0]


def test_human_rating_looks_up_normalised_pairs_and_records_unrated(tmp_path):
    import json

    from rewards.isolation import IsolatedRunner
    from rewards.human_rating import HumanRating, HumanRatingConfig

    path = tmp_path / "ratings.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "What is 2 + 2?", "response": "4", "rating": 0.9},
        {"prompt": "What is 2 + 2?", "response": "5", "rating": -0.7}]))
    r = HumanRating(HumanRatingConfig(path=str(path)))
    assert r.score(Sample("What is  2 + 2?", " 4\n")) == 0.9  # whitespace-normalised match
    assert r.score(Sample("What is 2 + 2?", "5")) == -0.7
    value, err = IsolatedRunner(1.0).call(r, Sample("What is 2 + 2?", "22"))
    assert (value, err) == (0.0, "KeyError: 'no human rating for this response'")
    assert HumanRating(HumanRatingConfig(path=str(path), unrated=0.25)).score(Sample("q", "r")) == 0.25


def test_human_rating_rejects_missing_file_and_bad_rows(tmp_path):
    import pydantic

    from rewards.human_rating import HumanRating, HumanRatingConfig

    with pytest.raises(pydantic.ValidationError, match="no such file"):
        HumanRatingConfig(path=str(tmp_path / "none.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "response": "r"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: a row needs prompt, response and a numeric rating"):
        HumanRating(HumanRatingConfig(path=str(bad)))
