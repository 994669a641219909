"""prepare / loss of each algorithm on a hand-computed case (arithmetic in the comments)."""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from core.protocol import Rollouts, RolloutTensors, Scores, pair_rows
from learners.algos.nash_md import NashMD, NashMDConfig
from learners.algos.online_dpo import OnlineDPO, OnlineDPOConfig, OnlineIPO, OnlineIPOConfig
from learners.algos.ppo import PPO, PPOConfig
from learners.algos.reinforce_pp import ReinforcePP, ReinforcePPConfig
from learners.algos.registry import ALGORITHMS


def _rollouts(group_ids: list[int]) -> Rollouts:
    n = len(group_ids)
    empty = [np.zeros(0)] * n
    return Rollouts(prompt_ids=empty, response_ids=empty, rollout_logprobs=empty, response_texts=[""] * n,
                    finish_reasons=["stop"] * n, group_ids=np.array(group_ids), policy_versions=np.zeros(n, int),
                    prompt_texts=[""] * n, answers=[""] * n)


def _tensors(mask: list[list[float]], **extra) -> RolloutTensors:
    m = torch.tensor(mask)
    b, t = m.shape
    extra.setdefault("rollout_logprobs", torch.zeros(b, t))
    return RolloutTensors(input_ids=torch.arange(b * (t + 1)).reshape(b, t + 1),
                          attention_mask=torch.ones(b, t + 1, dtype=torch.long), response_mask=m, **extra)


def _scores(values: list[float]) -> Scores:
    return Scores(values=np.array(values, dtype=float), terms={}, errors=[None] * len(values))


def test_ppo_prepare_gae_and_critic_loss():
    algo = PPO(PPOConfig(gamma=1.0, lam=1.0, whiten_advantages=False, value_clip=0.2))
    tensors = _tensors([[1, 1, 0]], values=torch.tensor([[0.5, 0.2, 9.0]]))
    batch, _ = algo.prepare(_rollouts([0]), _scores([1.0]), tensors)
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
    tensors = _tensors([[1, 1]], values=torch.zeros(1, 2), ref_logprobs=torch.tensor([[-1.0, -2.0]]),
                       rollout_logprobs=torch.tensor([[-0.5, -1.0]]))
    batch, _ = algo.prepare(_rollouts([0]), _scores([2.0]), tensors)
    # r = -0.5·(lp - ref) = [-0.25, -0.5], + score 2 on the last token -> [-0.25, 1.5]; V = 0, γ = λ = 1
    # A1 = 1.5, A0 = -0.25 + 1.5 = 1.25
    assert_close(batch.advantages, torch.tensor([[1.25, 1.5]]))


def test_reinforce_pp_whitened_returns_to_go():
    algo = ReinforcePP(ReinforcePPConfig(samples_per_prompt=1))
    batch, _ = algo.prepare(_rollouts([0, 1]), _scores([1.0, 0.0]), _tensors([[1, 1], [1, 0]]))
    # returns-to-go [[1, 1], [0, pad]]; valid values 1, 1, 0: mean 2/3,
    # var = ((1/3)² + (1/3)² + (2/3)²) / (3 - 1) = 1/3, std = 0.57735
    # (1 - 2/3) / 0.57735 = 0.57735;  (0 - 2/3) / 0.57735 = -1.15470
    assert_close(batch.advantages, torch.tensor([[0.57735, 0.57735], [-1.15470, 0.0]]), atol=1e-5, rtol=0)


def test_online_dpo_orders_pairs_and_weights_out_ties():
    algo = OnlineDPO(OnlineDPOConfig(beta=0.5))
    tensors = _tensors([[1, 1]] * 4)
    batch, metrics = algo.prepare(_rollouts([0, 0, 1, 1]), _scores([0.0, 1.0, 1.0, 1.0]), tensors)
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


def test_pair_rows_rejects_groups_that_are_not_pairs():
    assert pair_rows(np.array([1, 0, 0, 1])).tolist() == [[1, 2], [0, 3]]
    with pytest.raises(ValueError, match="exactly 2 samples per prompt"):
        pair_rows(np.array([0, 0, 0, 1]))


def test_nash_md_trains_on_policy_samples_with_their_preference():
    algo = NashMD(NashMDConfig(beta=0.1))
    tensors = _tensors([[1, 1]] * 4)
    batch, metrics = algo.prepare(_rollouts([0, 0, 1, 1]), _scores([1.0, 0.0, 0.0, 0.0]), tensors)
    # rows 0 and 2 are the policy samples; P = 1 (policy sample correct, mixture wrong), ½ (tie)
    assert batch.input_ids[:, 0].tolist() == [0, 6]
    assert batch.extras.preference.tolist() == [1.0, 0.5]
    assert metrics["train/win_rate_vs_mixture"] == 0.75
    batch = replace(batch, ref_logprobs=torch.tensor([[-1.5, -1.5], [-0.5, -0.5]]))
    logprobs = torch.tensor([[-1.0, -1.0], [-0.5, -0.5]])
    loss, _ = algo.loss(batch, logprobs, algo.normaliser(batch, 2))
    # row 0: -(1 - ½)·(-2) + 0.1·(-2 - -3)·(-2) = 1 - 0.2 = 0.8;  row 1: 0 + 0.1·0·(-1) = 0;  mean 0.4
    assert_close(loss, torch.tensor(0.4))


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_algorithm_builds_from_its_default_config(name):
    algo = ALGORITHMS[name](ALGORITHMS[name].Config())
    needs = algo.needs()
    assert needs.samples_per_prompt >= 1
    assert algo.train_rows(3) % algo.rows_per_unit == 0


def test_truncated_importance_sampling_uses_learner_old_logprobs_and_caps_the_weight():
    from learners.algos.grpo import GRPO, GRPOConfig
    from core.protocol import TrainBatch

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


def test_nash_md_mixture_weight_decays_with_the_step():
    fixed = NashMD(NashMDConfig(mixture_coef=0.5))
    assert [fixed.mixture_coef(t) for t in (0, 1, 7)] == [0.5, 0.5, 0.5]
    decayed = NashMD(NashMDConfig(mixture_coef=0.5, mixture_decay=1.0))
    assert [decayed.mixture_coef(t) for t in (0, 1, 3)] == [0.5, 0.25, 0.125]  # 0.5 / (1 + t)
