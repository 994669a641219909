"""Verifiable math correctness: 1 if the response's final answer equals the reference, else 0.

Parsing and equivalence come from `math-verify` (numbers, fractions, LaTeX, sets); its own
signal-based timeout is off because the reward actor runs rewards in worker threads and
enforces its own timeout.
"""
from __future__ import annotations

from math_verify import parse, verify
from pydantic import Field

from rewards.base import Basis, Expression, Format, Granularity, Reward, RewardConfig, Sample, Taxonomy


class MathCorrectConfig(RewardConfig):
    correct: float = 1.0
    wrong: float = Field(0.0)


class MathCorrect(Reward):
    Config = MathCorrectConfig
    taxonomy = Taxonomy(Basis.RULE, Format.SCALAR, Expression.EXPLICIT, Granularity.SEQUENCE)
    summary = "final answer equals the reference (math-verify): verifiable tasks"

    def score(self, sample: Sample) -> float:
        gold = parse(sample.answer, parsing_timeout=None)
        if not gold:
            raise ValueError(f"reference answer {sample.answer!r} does not parse")
        pred = parse(sample.response, parsing_timeout=None)
        ok = bool(pred) and verify(gold, pred, timeout_seconds=None)
        return self.cfg.correct if ok else self.cfg.wrong
