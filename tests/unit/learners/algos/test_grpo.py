"""GRPO (learners/algos/grpo.py): group advantages and the loss with its KL term, by hand."""
import torch
from torch.testing import assert_close

from core.protocol import TrainBatch
from learners.algos.grpo import GRPO, GRPOConfig
from learners.losses import Normaliser
from tests.helpers import make_rollouts, make_scores, make_tensors


def test_prepare_builds_group_advantages_and_counts_flat_groups():
    rollouts, tensors = make_rollouts([0, 0, 1, 1]), make_tensors(torch.ones(4, 2))
    batch, metrics = GRPO(GRPOConfig(adv_scale="none")).prepare(rollouts, make_scores([1.0, 0, 1, 1]), tensors)
    # group 0: [1, 0] - .5 = [.5, -.5]; group 1: [1, 1] - 1 = [0, 0] (all solved: no signal)
    assert_close(batch.advantages, torch.tensor([0.5, -0.5, 0.0, 0.0]))
    assert metrics == {"train/solved_none_or_all_frac": 0.5}


def test_loss_with_kl_by_hand():
    # one sequence, two tokens, on-policy (ρ = 1), A = 2, kl_coef .5, ref logprob = logp + ln 2
    #   policy term per token: -min(1·2, 1·2) = -2;  k3 = 2 - ln 2 - 1 = .306853
    #   token_mean over 2 tokens: (-2 + .5·.306853) = -1.846574
    import math

    batch = TrainBatch(input_ids=torch.zeros(1, 3, dtype=torch.long), attention_mask=torch.ones(1, 3, dtype=torch.long),
                       response_mask=torch.ones(1, 2), rollout_logprobs=torch.tensor([[-1.0, -2.0]]),
                       advantages=torch.tensor([2.0]), ref_logprobs=torch.tensor([[-1.0, -2.0]]) + math.log(2))
    loss, metrics = GRPO(GRPOConfig(kl_coef=0.5)).loss(batch, torch.tensor([[-1.0, -2.0]]), Normaliser(2, 1))
    k3 = 2 - math.log(2) - 1
    assert_close(loss, torch.tensor(-2 + 0.5 * k3))
    assert_close(metrics["train/kl"], torch.tensor(k3))
    assert_close(metrics["loss/policy"], torch.tensor(-2.0))
