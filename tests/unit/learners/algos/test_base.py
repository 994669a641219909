"""What algorithms share (learners/algos/base.py): token-level rewards for the token-level estimators
and truncated importance sampling in the clipped policy loss."""
import numpy as np
import torch
from torch.testing import assert_close

from core.protocol import RolloutTensors, Scores, TrainBatch
from learners.algos.base import token_level_rewards
from learners.algos.grpo import GRPO, GRPOConfig


def test_ppo_token_level_rewards_use_step_tokens_and_the_kl_penalty():
    scores = Scores(values=np.array([2.0]), terms={}, errors=[None], token_rewards=[np.array([1.0, 0.0, 1.0])])
    tensors = RolloutTensors(input_ids=torch.zeros(1, 5, dtype=torch.long),
                             attention_mask=torch.ones(1, 5, dtype=torch.long),
                             response_mask=torch.tensor([[1.0, 1.0, 1.0, 0.0]]),
                             rollout_logprobs=torch.tensor([[-1.0, -1.0, -1.0, 0.0]]),
                             ref_logprobs=torch.tensor([[-2.0, -1.0, -1.0, 0.0]]))
    # tokens [1, 0, 1, 0]; rest = 2 - 2 = 0 on the last valid token; KL 0.5·(lp - ref) = [0.5, 0, 0]
    assert_close(token_level_rewards(scores, tensors, 0.5), torch.tensor([[0.5, 0.0, 1.0, 0.0]]))


def test_truncated_importance_sampling_uses_learner_old_logprobs_and_caps_the_weight():
    algo = GRPO(GRPOConfig(tis_cap=2.0, clip_eps=0.2))
    assert algo.needs().old_logprobs
    lp = torch.log(torch.tensor([[0.5, 0.5]]))
    batch = TrainBatch(input_ids=torch.zeros(1, 3, dtype=torch.long), attention_mask=torch.ones(1, 3, dtype=torch.long),
                       response_mask=torch.ones(1, 2), rollout_logprobs=torch.log(torch.tensor([[0.1, 0.4]])),
                       advantages=torch.tensor([1.0]), old_logprobs=lp.clone())
    loss, m = algo.loss(batch, lp, algo.normaliser(batch, 2))
    # ρ = π/π_old = 1 on both tokens -> surrogate -1·A = -1 each
    # w = min(π_old/π_rollout, 2) = [min(5, 2), min(1.25, 2)] = [2, 1.25]; token mean of -w = -1.625
    assert_close(loss, torch.tensor(-1.625))
    assert_close(m["train/tis_weight"], torch.tensor(1.625))
