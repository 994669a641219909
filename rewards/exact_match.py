"""Exact match: `correct` when the response's answer equals the reference string, else `wrong`.

The answer is the whole response or, with `extract`, the last match of that regular expression
(its first group when it has one, e.g. r"<answer>(.*?)</answer>"); no match is a wrong answer.
Both sides are normalised first: surrounding whitespace stripped, inner runs of whitespace
collapsed to one space, case folded unless `case_sensitive`. Numbers with several spellings
("0.5", "1/2") need `math_correct`; references that list accepted spellings need `regex_match`.
"""
from __future__ import annotations

import re

from pydantic import field_validator

from rewards.base import Basis, Expression, Format, Granularity, Reward, RewardConfig, Sample, Taxonomy


def valid_regex(pattern: str | None) -> str | None:
    """Config check shared by the rule rewards that take a regular expression."""
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from None
    return pattern


def extract_answer(text: str, pattern: re.Pattern | None) -> str | None:
    """`text` itself without a pattern; else the last match (its group 1 if any), None if none."""
    if pattern is None:
        return text
    matches = list(pattern.finditer(text))
    if not matches:
        return None
    last = matches[-1]
    return last.group(1) if pattern.groups else last.group(0)


def normalize_text(text: str, case_sensitive: bool) -> str:
    text = " ".join(text.split())
    return text if case_sensitive else text.casefold()


class AnswerMatchConfig(RewardConfig):
    extract: str | None = None
    correct: float = 1.0
    wrong: float = 0.0

    _regex = field_validator("extract")(valid_regex)


class AnswerMatch(Reward):
    """`correct` when the response's answer (`extract_answer`) matches the sample's reference,
    else `wrong`; subclasses say what a valid reference is and what matching means."""

    cfg: AnswerMatchConfig

    def __init__(self, cfg: AnswerMatchConfig):
        super().__init__(cfg)
        self._extract = re.compile(cfg.extract, re.DOTALL) if cfg.extract else None

    def reference(self, sample: Sample):
        """The sample's reference, ready to match against; raises when it is not usable."""
        raise NotImplementedError

    def matches(self, answer: str, reference) -> bool:
        raise NotImplementedError

    def score(self, sample: Sample) -> float:
        reference = self.reference(sample)
        answer = extract_answer(sample.response, self._extract)
        return self.cfg.correct if answer is not None and self.matches(answer, reference) else self.cfg.wrong


class ExactMatchConfig(AnswerMatchConfig):
    case_sensitive: bool = False


class ExactMatch(AnswerMatch):
    Config = ExactMatchConfig
    taxonomy = Taxonomy(Basis.RULE, Format.SCALAR, Expression.EXPLICIT, Granularity.SEQUENCE)
    summary = "answer string equals the reference (whitespace/case normalised): short-answer QA, labels"

    def reference(self, sample: Sample) -> str:
        if not sample.answer.strip():
            raise ValueError("sample has no reference answer")
        return normalize_text(sample.answer, self.cfg.case_sensitive)

    def matches(self, answer: str, reference: str) -> bool:
        return normalize_text(answer, self.cfg.case_sensitive) == reference
