"""Final-answer correctness (rewards/math_correct.py)."""
import pytest

from rewards.base import Sample
from rewards.math_correct import MathCorrect, MathCorrectConfig


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
