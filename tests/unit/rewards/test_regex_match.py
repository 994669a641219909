"""The reference answer as a regular expression (rewards/regex_match.py)."""
import pytest

from rewards.base import Sample
from rewards.regex_match import RegexMatch, RegexMatchConfig


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
