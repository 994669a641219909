"""Reward base types and the taxonomy every reward is tagged with.

No Ray, vLLM or DeepSpeed here. A reward scores a list of `Sample`s and returns one float per
sample; the reward actor isolates each call (exceptions and timeouts cost only that sample).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class Basis(str, Enum):
    RULE = "rule"
    MODEL = "model"
    JUDGE = "judge/self"
    HUMAN = "human data"


class Format(str, Enum):
    SCALAR = "scalar"
    PAIRWISE = "pairwise"
    CRITIQUE = "critique"


class Expression(str, Enum):
    EXPLICIT = "explicit"
    IMPLICIT = "implicit"


class Granularity(str, Enum):
    SEQUENCE = "sequence"
    STEP = "step"
    TOKEN = "token"


@dataclass(frozen=True)
class Taxonomy:
    basis: Basis
    format: Format
    expression: Expression
    granularity: Granularity


@dataclass(frozen=True)
class Sample:
    prompt: str
    response: str
    answer: str = ""
    num_tokens: int = 0  # response length in tokens


class RewardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Reward:
    Config: ClassVar[type[RewardConfig]] = RewardConfig
    taxonomy: ClassVar[Taxonomy]
    summary: ClassVar[str] = ""

    def __init__(self, cfg: RewardConfig):
        self.cfg = cfg

    def score(self, sample: Sample) -> float:
        raise NotImplementedError
