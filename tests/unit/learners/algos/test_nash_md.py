"""Nash-MD (learners/algos/nash_md.py): trains on the policy samples with their preference, and its
mixture weight schedule."""
from dataclasses import replace

import torch
from torch.testing import assert_close

from learners.algos.nash_md import NashMD, NashMDConfig
from tests.helpers import make_rollouts, make_scores, make_tensors


def test_nash_md_trains_on_policy_samples_with_their_preference():
    algo = NashMD(NashMDConfig(beta=0.1))
    tensors = make_tensors([[1, 1]] * 4)
    batch, metrics = algo.prepare(make_rollouts([0, 0, 1, 1]), make_scores([1.0, 0.0, 0.0, 0.0]), tensors)
    # rows 0 and 2 are the policy samples; P = 1 (policy sample correct, mixture wrong), ½ (tie)
    assert batch.input_ids[:, 0].tolist() == [0, 6]
    assert batch.extras.preference.tolist() == [1.0, 0.5]
    assert metrics["train/win_rate_vs_mixture"] == 0.75
    batch = replace(batch, ref_logprobs=torch.tensor([[-1.5, -1.5], [-0.5, -0.5]]))
    logprobs = torch.tensor([[-1.0, -1.0], [-0.5, -0.5]])
    loss, _ = algo.loss(batch, logprobs, algo.normaliser(batch, 2))
    # row 0: -(1 - ½)·(-2) + 0.1·(-2 - -3)·(-2) = 1 - 0.2 = 0.8;  row 1: 0 + 0.1·0·(-1) = 0;  mean 0.4
    assert_close(loss, torch.tensor(0.4))


def test_nash_md_mixture_weight_decays_with_the_step():
    fixed = NashMD(NashMDConfig(mixture_coef=0.5))
    assert [fixed.mixture_coef(t) for t in (0, 1, 7)] == [0.5, 0.5, 0.5]
    decayed = NashMD(NashMDConfig(mixture_coef=0.5, mixture_decay=1.0))
    assert [decayed.mixture_coef(t) for t in (0, 1, 3)] == [0.5, 0.25, 0.125]  # 0.5 / (1 + t)
