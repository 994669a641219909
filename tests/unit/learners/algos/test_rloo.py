"""RLOO (learners/algos/rloo.py): the leave-one-out baseline, by hand."""
import torch
from torch.testing import assert_close

from learners.algos.rloo import leave_one_out_advantages


def test_leave_one_out_baseline_by_hand():
    # group 0: r = [1, 0, 0, 1]: baselines (0+0+1)/3 = 1/3 for r=1, (1+0+1)/3 = 2/3 for r=0
    #   A = [2/3, -2/3, -2/3, 2/3]  (= 4/3 · (r - .5))
    # group 1: r = [3, 5]: A = [3 - 5, 5 - 3] = [-2, 2];  group 2: [7] alone -> 0
    r = torch.tensor([1.0, 0, 0, 1, 3, 5, 7])
    g = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    assert_close(leave_one_out_advantages(r, g), torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3, -2.0, 2.0, 0.0]))
