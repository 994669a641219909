"""Format reward: 1 when the response matches a required pattern (e.g. an answer tag), else 0."""
from __future__ import annotations

import re

from pydantic import field_validator

from rewards.base import Basis, Expression, Format, Granularity, Reward, RewardConfig, Sample, Taxonomy
from rewards.exact_match import valid_regex


class AnswerFormatConfig(RewardConfig):
    # Default: the response is a single (possibly signed, decimal) number and nothing else.
    pattern: str = r"^\s*-?\d+(\.\d+)?\s*$"
    match: float = 1.0
    no_match: float = 0.0

    _regex = field_validator("pattern")(valid_regex)


class AnswerFormat(Reward):
    Config = AnswerFormatConfig
    taxonomy = Taxonomy(Basis.RULE, Format.SCALAR, Expression.EXPLICIT, Granularity.SEQUENCE)
    summary = "response matches a required pattern (answer tag, bare number): teach an output format"

    def __init__(self, cfg: AnswerFormatConfig):
        super().__init__(cfg)
        self._re = re.compile(cfg.pattern, re.DOTALL)

    def score(self, sample: Sample) -> float:
        return self.cfg.match if self._re.search(sample.response) else self.cfg.no_match
