"""Normalised exact match against the reference answer (rewards/exact_match.py)."""
import pytest

from rewards.base import Sample
from rewards.exact_match import ExactMatch, ExactMatchConfig


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
