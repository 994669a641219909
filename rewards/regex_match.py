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

from rewards.base import Basis, Expression, Format, Granularity, Sample, Taxonomy
from rewards.exact_match import AnswerMatch, AnswerMatchConfig


class RegexMatchConfig(AnswerMatchConfig):
    full: bool = True


class RegexMatch(AnswerMatch):
    Config = RegexMatchConfig
    taxonomy = Taxonomy(Basis.RULE, Format.SCALAR, Expression.EXPLICIT, Granularity.SEQUENCE)
    summary = "answer matches the reference read as a regex: references that list accepted spellings"
    # The pattern comes from the sample: a catastrophic one backtracks for minutes holding the GIL.
    isolate_process = True

    def reference(self, sample: Sample) -> re.Pattern:
        try:
            return re.compile(sample.answer)
        except re.error as e:
            raise ValueError(f"reference {sample.answer!r} is not a regular expression: {e}") from None

    def matches(self, answer: str, reference: re.Pattern) -> bool:
        answer = answer.strip()
        return bool(reference.fullmatch(answer) if self.cfg.full else reference.search(answer))
