"""The answer-format reward (rewards/answer_format.py)."""
import pytest

from rewards.answer_format import AnswerFormat, AnswerFormatConfig
from rewards.base import Sample


@pytest.mark.parametrize("response,expected", [("42", 1.0), (" -7 ", 1.0), ("3.5", 1.0), ("It is 42", 0.0), ("", 0.0)])
def test_answer_format_default_pattern(response, expected):
    assert AnswerFormat(AnswerFormatConfig()).score(Sample("q", response)) == expected


def test_answer_format_custom_pattern_and_values():
    r = AnswerFormat(AnswerFormatConfig(pattern=r"<answer>.*</answer>", match=0.5, no_match=-0.5))
    assert r.score(Sample("q", "so <answer>3</answer>")) == 0.5
    assert r.score(Sample("q", "3")) == -0.5
