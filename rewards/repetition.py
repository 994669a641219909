"""Repetition penalty: minus the share of the response's word n-grams that repeat an earlier one.

    R = -coef · (1 - |unique n-grams| / |n-grams|)        0 when the response has fewer than n words

Words are whitespace-separated and n-grams overlap, so W words give W - n + 1 n-grams. After the
n-gram repetition penalty of Yeo et al. 2025 ("Demystifying Long Chain-of-Thought Reasoning in
LLMs"); deviation: one value per sequence over words, not a penalty on the repeating tokens.
"""
from __future__ import annotations

from pydantic import Field

from rewards.base import Basis, Expression, Format, Granularity, Reward, RewardConfig, Sample, Taxonomy


def repeated_ngram_share(words: list[str], n: int) -> float:
    """1 - unique/total over the overlapping n-grams of `words`; 0 with fewer than n words."""
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


class RepetitionConfig(RewardConfig):
    n: int = Field(3, ge=1)
    coef: float = Field(1.0, ge=0)


class Repetition(Reward):
    Config = RepetitionConfig
    taxonomy = Taxonomy(Basis.RULE, Format.SCALAR, Expression.EXPLICIT, Granularity.SEQUENCE)
    summary = "minus the share of repeated word n-grams: stop loops and degenerate repetition"

    def score(self, sample: Sample) -> float:
        return -self.cfg.coef * repeated_ngram_share(sample.response.split(), self.cfg.n)
