"""Regex match: `correct` when the response's answer matches the reference read as a regular
expression, else `wrong`.

For data whose reference lists the accepted spellings as a pattern, e.g. r"(?i)paris" or
r"4(\\.0+)?". The answer is the response stripped of surrounding whitespace or, with `extract`,
the last match of that expression (group 1 if it has one). `full` requires the pattern to match
the whole answer (re.fullmatch); otherwise a match anywhere counts (re.search). A reference that
is not a valid pattern raises: that sample's error, counted in `reward/errors`.
(`answer_format` is the other regex reward: one fixed pattern from the config, for format.)
"""
from __future__ import annotations

import re

from pydantic import field_validator

from rewards.base import Basis, Expression, Format, Granularity, Reward, RewardConfig, Sample, Taxonomy
from rewards.exact_match import extract_answer, valid_regex


class RegexMatchConfig(RewardConfig):
    extract: str | None = None
    full: bool = True
    correct: float = 1.0
    wrong: float = 0.0

    _regex = field_validator("extract")(valid_regex)


class RegexMatch(Reward):
    Config = RegexMatchConfig
    taxonomy = Taxonomy(Basis.RULE, Format.SCALAR, Expression.EXPLICIT, Granularity.SEQUENCE)
    summary = "answer matches the reference read as a regex: references that list accepted spellings"

    def __init__(self, cfg: RegexMatchConfig):
        super().__init__(cfg)
        self._extract = re.compile(cfg.extract, re.DOTALL) if cfg.extract else None

    def score(self, sample: Sample) -> float:
        try:
            reference = re.compile(sample.answer)
        except re.error as e:
            raise ValueError(f"reference {sample.answer!r} is not a regular expression: {e}") from None
        answer = extract_answer(sample.response, self._extract)
        if answer is None:
            return self.cfg.wrong
        answer = answer.strip()
        hit = reference.fullmatch(answer) if self.cfg.full else reference.search(answer)
        return self.cfg.correct if hit else self.cfg.wrong
