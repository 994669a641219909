"""Human ratings: the score people gave a (prompt, response), looked up from a JSONL file.

Rows are `{"prompt": ..., "response": ..., "rating": float}`; both texts are matched after
whitespace normalisation. A response nobody rated gets `unrated` (None: the lookup raises, so
the sample is counted in `reward/errors` instead of silently scoring 0). Use it to replay human
labels (rated responses mixed into training, audits of a model or judge reward against people)
rather than as the only reward of on-policy sampling, whose fresh responses are mostly unrated.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from pydantic import field_validator

from rewards.base import Basis, Expression, Format, Granularity, Reward, RewardConfig, Sample, Taxonomy


def _key(prompt: str, response: str) -> tuple[str, str]:
    return " ".join(prompt.split()), " ".join(response.split())


class HumanRatingConfig(RewardConfig):
    path: str
    unrated: float | None = None

    @field_validator("path")
    @classmethod
    def _exists(cls, path: str) -> str:
        if not Path(path).is_file():
            raise ValueError(f"{path}: no such file")
        return str(Path(path).resolve())


def load_ratings(path: str) -> dict[tuple[str, str], float]:
    table = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            row = json.loads(line)
            try:
                table[_key(row["prompt"], row["response"])] = float(row["rating"])
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}:{n}: a row needs prompt, response and a numeric rating ({e})") from None
    return table


class HumanRating(Reward):
    Config = HumanRatingConfig
    taxonomy = Taxonomy(Basis.HUMAN, Format.SCALAR, Expression.EXPLICIT, Granularity.SEQUENCE)
    summary = "ratings people gave (prompt, response) pairs, from a JSONL file: replay or audit human labels"

    def __init__(self, cfg: HumanRatingConfig):
        super().__init__(cfg)
        self.ratings = load_ratings(cfg.path)

    def score(self, sample: Sample) -> float:
        rating = self.ratings.get(_key(sample.prompt, sample.response), self.cfg.unrated)
        if rating is None:
            raise KeyError("no human rating for this response")
        return rating

    @classmethod
    def example_config(cls) -> HumanRatingConfig:
        path = Path(tempfile.mkdtemp(prefix="rewardflow-ratings-")) / "ratings.jsonl"
        path.write_text(json.dumps({"prompt": "What is 2 + 2?", "response": "4", "rating": 1.0}) + "\n")
        return HumanRatingConfig(path=str(path), unrated=0.0)
