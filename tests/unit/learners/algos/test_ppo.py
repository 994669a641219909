"""PPO (learners/algos/ppo.py): GAE advantages against the critic, the KL penalty in the reward, and
the clipped value loss, by hand (arithmetic in the comments)."""
import torch
from torch.testing import assert_close

from learners.algos.ppo import PPO, PPOConfig
from tests.helpers import make_rollouts, make_scores, make_tensors


def test_ppo_prepare_gae_and_critic_loss():
    algo = PPO(PPOConfig(gamma=1.0, lam=1.0, whiten_advantages=False, value_clip=0.2))
    tensors = make_tensors([[1, 1, 0]], values=torch.tensor([[0.5, 0.2, 9.0]]))
    batch, _ = algo.prepare(make_rollouts([0]), make_scores([1.0]), tensors)
    # token rewards [0, 1, 0] (score on the last valid token); V = [0.5, 0.2, (pad)]
    # t=1: δ = 1 + 0 - 0.2 = 0.8 -> A1 = 0.8;  t=0: δ = 0 + 0.2 - 0.5 = -0.3 -> A0 = -0.3 + 0.8 = 0.5
    assert_close(batch.advantages, torch.tensor([[0.5, 0.8, 0.0]]))
    assert_close(batch.extras.returns, torch.tensor([[1.0, 1.0, 0.0]]))  # A + V
    assert_close(batch.extras.old_values, torch.tensor([[0.5, 0.2, 0.0]]))

    values = torch.tensor([[0.9, 1.5, 0.0]])
    loss, metrics = algo.critic_loss(batch, values, algo.normaliser(batch, 3))
    # V_clip = [0.7, 0.4]; unclipped (V-R)² = [0.01, 0.25]; clipped (V_clip-R)² = [0.09, 0.36]
    # ½·max = [0.045, 0.18]; token mean over 2 tokens = 0.1125; both take the clipped term
    assert_close(loss, torch.tensor(0.1125))
    assert_close(metrics["train/value_clip_frac"], torch.tensor(1.0))


def test_ppo_kl_in_reward_uses_rollout_and_reference_logprobs():
    algo = PPO(PPOConfig(gamma=1.0, lam=1.0, whiten_advantages=False, kl_coef=0.5))
    tensors = make_tensors([[1, 1]], values=torch.zeros(1, 2), ref_logprobs=torch.tensor([[-1.0, -2.0]]),
                       rollout_logprobs=torch.tensor([[-0.5, -1.0]]))
    batch, _ = algo.prepare(make_rollouts([0]), make_scores([2.0]), tensors)
    # r = -0.5·(lp - ref) = [-0.25, -0.5], + score 2 on the last token -> [-0.25, 1.5]; V = 0, γ = λ = 1
    # A1 = 1.5, A0 = -0.25 + 1.5 = 1.25
    assert_close(batch.advantages, torch.tensor([[1.25, 1.5]]))
