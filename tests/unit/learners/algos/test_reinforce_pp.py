"""REINFORCE++ (learners/algos/reinforce_pp.py): whitened returns-to-go, by hand."""
import torch
from torch.testing import assert_close

from learners.algos.reinforce_pp import ReinforcePP, ReinforcePPConfig
from tests.helpers import make_rollouts, make_scores, make_tensors


def test_reinforce_pp_whitened_returns_to_go():
    algo = ReinforcePP(ReinforcePPConfig(samples_per_prompt=1))
    batch, _ = algo.prepare(make_rollouts([0, 1]), make_scores([1.0, 0.0]), make_tensors([[1, 1], [1, 0]]))
    # returns-to-go [[1, 1], [0, pad]]; valid values 1, 1, 0: mean 2/3,
    # var = ((1/3)² + (1/3)² + (2/3)²) / (3 - 1) = 1/3, std = 0.57735
    # (1 - 2/3) / 0.57735 = 0.57735;  (0 - 2/3) / 0.57735 = -1.15470
    assert_close(batch.advantages, torch.tensor([[0.57735, 0.57735], [-1.15470, 0.0]]), atol=1e-5, rtol=0)
