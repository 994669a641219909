"""Reward registry: name -> class. A recipe's `rewards:` list names entries of this table."""
from rewards.answer_format import AnswerFormat
from rewards.base import Reward
from rewards.exact_match import ExactMatch
from rewards.implicit import Implicit
from rewards.judge import JudgePairwise, JudgeScore
from rewards.length_penalty import LengthPenalty
from rewards.math_correct import MathCorrect
from rewards.overlong import Overlong
from rewards.regex_match import RegexMatch
from rewards.remote import Remote
from rewards.repetition import Repetition
from rewards.reward_model import RewardModelPreference, RewardModelScore
from rewards.human_rating import HumanRating
from rewards.steps import StepArith

REWARDS: dict[str, type[Reward]] = {
    "math_correct": MathCorrect,
    "answer_format": AnswerFormat,
    "overlong": Overlong,
    "exact_match": ExactMatch,
    "regex_match": RegexMatch,
    "length_penalty": LengthPenalty,
    "repetition": Repetition,
    "reward_model": RewardModelScore,
    "reward_model_preference": RewardModelPreference,
    "step_arith": StepArith,
    "implicit": Implicit,
    "remote": Remote,
    "judge_score": JudgeScore,
    "judge_pairwise": JudgePairwise,
    "human_rating": HumanRating,
}
