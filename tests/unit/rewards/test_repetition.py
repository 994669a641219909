"""The repeated n-gram penalty (rewards/repetition.py)."""
import pytest

from rewards.base import Sample
from rewards.repetition import Repetition, RepetitionConfig


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
