"""ReMax: the greedy response's reward as the baseline, by hand."""
import numpy as np
import torch
from torch.testing import assert_close

from learners.algos.remax import ReMax, ReMaxConfig, greedy_baseline_advantages
from learners.losses import Normaliser
from tests.helpers import make_rollouts, make_scores, make_tensors


def test_greedy_baseline_advantages():
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.5, 0.0, 0.25])
    group_ids = torch.tensor([0, 0, 0, 1, 1, 1])
    greedy = torch.tensor([False, False, True, False, False, True])
    # group 0: baseline 1 -> [1 - 1, 0 - 1]; group 1: baseline .25 -> [.5 - .25, 0 - .25]; greedy rows 0
    assert_close(greedy_baseline_advantages(rewards, group_ids, greedy), torch.tensor([0.0, -1.0, 0.0, 0.25, -0.25, 0.0]))


def test_prepare_drops_the_greedy_rows_and_the_loss_is_reinforce():
    # 2 prompts x (2 samples + 1 greedy), laid out as the rollout actor returns them
    n = 6
    greedy = np.array([False, False, True, False, False, True])
    rollouts = make_rollouts([0, 0, 0, 1, 1, 1], prompt_ids=[np.zeros(1)] * n, response_ids=[np.zeros(2)] * n,
                             rollout_logprobs=[np.zeros(2)] * n, greedy=greedy)
    tensors = make_tensors([[1.0, 1.0], [1.0, 0.0]] * 3)
    scores = make_scores([1.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    algo = ReMax(ReMaxConfig(samples_per_prompt=2))
    assert algo.needs().greedy_sample and algo.train_rows(2) == 4
    batch, metrics = algo.prepare(rollouts, scores, tensors)
    # rows 0, 1, 3, 4 trained; A = [1 - 0, 0 - 0, 0 - 1, 0 - 1]
    assert batch.input_ids[:, 0].tolist() == [0, 3, 9, 12]
    assert_close(batch.advantages, torch.tensor([1.0, 0.0, -1.0, -1.0]))
    assert metrics == {"train/greedy_reward": 0.5, "train/beats_greedy_frac": 0.25}
    # on-policy (ρ = 1): per-token loss −A; masks [[1, 1], [1, 0], [1, 1], [1, 0]] -> 6 tokens
    # token mean: (−1 −1  +0  +1 +1  +1) / 6 = 1/6
    loss, _ = algo.loss(batch, torch.zeros(4, 2), Normaliser(num_tokens=6, num_seqs=4, constant=2.0))
    assert_close(loss, torch.tensor(1 / 6))
