"""Reward base types and the taxonomy every reward is tagged with.

No Ray, vLLM or DeepSpeed here. A reward scores a list of `Sample`s and returns one float per
sample; the reward actor isolates each call (exceptions and timeouts cost only that sample).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from core.config import Section


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


class RewardConfig(Section):
    """A reward's own `args` (frozen, unknown keys and non-finite numbers rejected)."""


class Reward:
    Config: ClassVar[type[RewardConfig]] = RewardConfig
    taxonomy: ClassVar[Taxonomy]
    summary: ClassVar[str] = ""
    # True when `example_config` needs a model or a server: its contract test is marked `cluster`.
    heavy_example: ClassVar[bool] = False
    # True: its calls run in a worker process that a timeout kills (code that can run away
    # holding the GIL, e.g. sympy; see rewards/isolation.py).
    isolate_process: ClassVar[bool] = False

    def __init__(self, cfg: RewardConfig):
        self.cfg = cfg

    @classmethod
    def example_config(cls) -> RewardConfig:
        """A small config the contract test builds this reward from (tests/unit/test_reward_contract.py).

        Override when the defaults cannot build (a required model path, a server URL): build or
        start what the example needs locally (a tiny model under the cache, a thread server).
        """
        return cls.Config()

    def score(self, sample: Sample) -> float:
        raise NotImplementedError


class PairwiseReward(Reward):
    """A preference source: P(a ≻ b | prompt) for two responses to the same prompt.

    Algorithms that train on pairs (online DPO / IPO, Nash-MD) ask for `prefer`; a pairwise
    reward has no pointwise `score`.
    """

    def prefer(self, a: Sample, b: Sample) -> float:
        """Probability in [0, 1] that `a` is preferred to `b` (0.5: no preference)."""
        raise NotImplementedError

    def score(self, sample: Sample) -> float:
        raise TypeError(f"{type(self).__name__} is a pairwise reward: it compares two responses (prefer), "
                        "it does not score one")
