"""Reward registry: name -> class. A recipe's `rewards:` list names entries of this table."""
from rewards.answer_format import AnswerFormat
from rewards.base import Reward
from rewards.math_correct import MathCorrect
from rewards.overlong import Overlong

REWARDS: dict[str, type[Reward]] = {
    "math_correct": MathCorrect,
    "answer_format": AnswerFormat,
    "overlong": Overlong,
}
