"""Reward registry: name -> class, imported on first use. A recipe's `rewards:` list names entries
of this table; `rewardflow rewards list` prints it with each reward's taxonomy."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationInfo, field_validator

from core.registry import LazyRegistry

REWARDS = LazyRegistry("reward", {
    "math_correct": "rewards.math_correct:MathCorrect",
    "answer_format": "rewards.answer_format:AnswerFormat",
    "overlong": "rewards.overlong:Overlong",
    "exact_match": "rewards.exact_match:ExactMatch",
    "regex_match": "rewards.regex_match:RegexMatch",
    "length_penalty": "rewards.length_penalty:LengthPenalty",
    "repetition": "rewards.repetition:Repetition",
    "reward_model": "rewards.reward_model:RewardModelScore",
    "reward_model_preference": "rewards.reward_model:RewardModelPreference",
    "step_arith": "rewards.steps:StepArith",
    "implicit": "rewards.implicit:Implicit",
    "remote": "rewards.remote:Remote",
    "judge_score": "rewards.judge:JudgeScore",
    "judge_pairwise": "rewards.judge:JudgePairwise",
    "human_rating": "rewards.human_rating:HumanRating",
})


def known_reward(name: str) -> str:
    """`name` if registered; else ValueError listing the registered names (pydantic validators)."""
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; known: {REWARDS.known()}")
    return name


def reward_args(name: str | None, args: Any):
    """A reward's `args` validated by its own config class (None: the defaults)."""
    if name is None or name not in REWARDS or isinstance(args, BaseModel):
        return args
    return REWARDS[name].Config(**(args or {}))


def reward_validators(name_field: str):
    """Validators of a config that names a registered reward in `name_field` and holds its
    `args`: `_known, _args = reward_validators("name")` in the class body."""
    def args(value: Any, info: ValidationInfo):
        return reward_args(info.data.get(name_field), value)

    return field_validator(name_field)(known_reward), field_validator("args", mode="before")(args)
