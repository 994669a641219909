"""Soft overlong punishment (DAPO, Yu et al. 2025, eq. 13), on the response's token count L.

    R(L) = 0                              if L <= L_max - L_cache
         = ((L_max - L_cache) - L) / L_cache   if L_max - L_cache < L <= L_max
         = -1                             if L > L_max
"""
from __future__ import annotations

from pydantic import Field, model_validator

from rewards.base import Basis, Expression, Format, Granularity, Reward, RewardConfig, Sample, Taxonomy


class OverlongConfig(RewardConfig):
    max_tokens: int = Field(64, ge=1)
    cache_tokens: int = Field(16, ge=1)

    @model_validator(mode="after")
    def _cache_within_max(self):
        if self.cache_tokens > self.max_tokens:
            raise ValueError("cache_tokens must not exceed max_tokens")
        return self


class Overlong(Reward):
    Config = OverlongConfig
    taxonomy = Taxonomy(Basis.RULE, Format.SCALAR, Expression.EXPLICIT, Granularity.SEQUENCE)
    summary = "DAPO soft overlong punishment: discourage responses that run into the length limit"

    def score(self, sample: Sample) -> float:
        soft = self.cfg.max_tokens - self.cfg.cache_tokens
        if sample.num_tokens <= soft:
            return 0.0
        if sample.num_tokens <= self.cfg.max_tokens:
            return (soft - sample.num_tokens) / self.cfg.cache_tokens
        return -1.0
