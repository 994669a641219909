"""Rewards registered by name, with their taxonomy (rewards/registry.py)."""
from rewards.base import Basis, Expression, Format, Granularity
from rewards.implicit import Implicit
from rewards.registry import REWARDS
from rewards.reward_model import RewardModelPreference, RewardModelScore
from rewards.steps import StepArith


def test_registry_and_taxonomy():
    assert REWARDS["reward_model"] is RewardModelScore
    assert REWARDS["reward_model_preference"] is RewardModelPreference
    assert (RewardModelScore.taxonomy.basis, RewardModelScore.taxonomy.format) == (Basis.MODEL, Format.SCALAR)
    assert RewardModelPreference.taxonomy.format == Format.PAIRWISE


def test_registered_with_taxonomy():
    assert REWARDS["step_arith"] is StepArith and REWARDS["implicit"] is Implicit
    tax = StepArith.taxonomy
    assert (tax.basis, tax.format, tax.expression, tax.granularity) == (
        Basis.RULE, Format.SCALAR, Expression.EXPLICIT, Granularity.STEP)
