"""Linear length penalty on the response's token count L: free up to a budget, then a constant
cost per token, optionally capped.

    R(L) = -coef · max(0, L - free_tokens)                  max_penalty unset
    R(L) = max(-max_penalty, -coef · max(0, L - free_tokens))

`overlong` (DAPO's soft punishment) only acts near the generation limit; this one prices every
token past the budget, to trade accuracy for shorter answers.
"""
from __future__ import annotations

from pydantic import Field

from rewards.base import Basis, Expression, Format, Granularity, Reward, RewardConfig, Sample, Taxonomy


class LengthPenaltyConfig(RewardConfig):
    free_tokens: int = Field(0, ge=0)
    coef: float = Field(0.01, ge=0)
    max_penalty: float | None = Field(None, gt=0)


class LengthPenalty(Reward):
    Config = LengthPenaltyConfig
    taxonomy = Taxonomy(Basis.RULE, Format.SCALAR, Expression.EXPLICIT, Granularity.SEQUENCE)
    summary = "linear cost per token past a budget (optionally capped): push towards shorter responses"

    def score(self, sample: Sample) -> float:
        penalty = self.cfg.coef * max(0, sample.num_tokens - self.cfg.free_tokens)
        if self.cfg.max_penalty is not None:
            penalty = min(penalty, self.cfg.max_penalty)
        return -penalty
