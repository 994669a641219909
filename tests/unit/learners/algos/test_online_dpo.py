"""Online DPO / IPO (learners/algos/online_dpo.py): pairs ordered chosen-first, ties weighted out, and
the DPO / IPO losses by hand."""
import math
from dataclasses import replace

import torch
from torch.testing import assert_close

from learners.algos.online_dpo import OnlineDPO, OnlineDPOConfig, OnlineIPO, OnlineIPOConfig
from tests.helpers import make_rollouts, make_scores, make_tensors


def test_online_dpo_orders_pairs_and_weights_out_ties():
    algo = OnlineDPO(OnlineDPOConfig(beta=0.5))
    tensors = make_tensors([[1, 1]] * 4)
    batch, metrics = algo.prepare(make_rollouts([0, 0, 1, 1]), make_scores([0.0, 1.0, 1.0, 1.0]), tensors)
    # pair 0: the second sample wins -> rows (1, 0); pair 1 is a tie -> kept with weight 0
    assert batch.input_ids[:, 0].tolist() == [3, 0, 6, 9]
    assert batch.extras.pair_weight.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert metrics["train/decided_pair_frac"] == 0.5
    norm = algo.normaliser(batch, 2)
    assert norm.num_seqs == 1

    batch = replace(batch, ref_logprobs=torch.tensor([[-1.0, -1.0], [-1.0, -1.0], [0.0, 0.0], [0.0, 0.0]]))
    logprobs = torch.tensor([[-0.5, -0.5], [-1.5, -1.5], [-3.0, 0.0], [0.0, 0.0]])
    loss, m = algo.loss(batch, logprobs, norm)
    # h = (-1 - -2) - (-3 - -2) = 2;  β·h = 1;  dpo: -log σ(1) = log(1 + e^-1) = 0.31326
    assert_close(loss, torch.tensor(math.log1p(math.exp(-1.0))))
    assert_close(m["train/reward_margin"], torch.tensor(1.0))
    ipo = OnlineIPO(OnlineIPOConfig(beta=0.5))
    # ipo: (h - 1/(2β))² = (2 - 1)² = 1
    assert_close(ipo.loss(batch, logprobs, norm)[0], torch.tensor(1.0))
