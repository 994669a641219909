"""Human ratings looked up from a JSONL file (rewards/human_rating.py)."""
import json

import pydantic
import pytest

from rewards.base import Sample
from rewards.human_rating import HumanRating, HumanRatingConfig
from rewards.isolation import IsolatedRunner


def test_human_rating_looks_up_normalised_pairs_and_records_unrated(tmp_path):
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
    with pytest.raises(pydantic.ValidationError, match="no such file"):
        HumanRatingConfig(path=str(tmp_path / "none.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "response": "r"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: a row needs prompt, response and a numeric rating"):
        HumanRating(HumanRatingConfig(path=str(bad)))
