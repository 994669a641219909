"""The length penalty beyond a token budget (rewards/length_penalty.py)."""
import pytest

from rewards.base import Sample
from rewards.length_penalty import LengthPenalty, LengthPenaltyConfig


@pytest.mark.parametrize("tokens,max_penalty,expected", [
    (5, None, 0.0),       # within the 10-token budget
    (10, None, 0.0),
    (15, None, -0.5),     # −0.1 · (15 − 10)
    (15, 0.3, -0.3),      # capped
])
def test_length_penalty(tokens, max_penalty, expected):
    r = LengthPenalty(LengthPenaltyConfig(free_tokens=10, coef=0.1, max_penalty=max_penalty))
    assert r.score(Sample("q", "x", num_tokens=tokens)) == pytest.approx(expected)
