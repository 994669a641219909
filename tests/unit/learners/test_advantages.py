"""Advantage estimators of learners/advantages.py, computed by hand (arithmetic in the comments):
group baselines (GRPO), KL-penalised token rewards, GAE, whitening and returns-to-go."""
import math

import pytest
import torch
from torch.testing import assert_close

from learners.advantages import discounted_returns, gae, group_normalized_advantages, kl_penalized_token_rewards, whiten

# ---------------------------------------------------------------- group baselines


def test_group_advantages_std():
    # group 0: r = [1, 0, 0, 1]; mean .5; Σ(r-mean)² = 1; sample var 1/3; std .57735
    #   A = ±.5 / .57735 = ±.866025
    # group 1: r = [1, 1, 1, 0]; mean .75; Σ(r-mean)² = 3·.0625 + .5625 = .75; var .25; std .5
    #   A = [.25, .25, .25, -.75] / .5 = [.5, .5, .5, -1.5]
    r = torch.tensor([1.0, 0, 0, 1, 1, 1, 1, 0])
    g = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    a = group_normalized_advantages(r, g, scale="std", eps=0.0)
    s = 0.5 / math.sqrt(1 / 3)
    assert_close(a, torch.tensor([s, -s, -s, s, 0.5, 0.5, 0.5, -1.5]))


def test_group_advantages_none_is_dr_grpo():
    r = torch.tensor([1.0, 0, 0, 1, 1, 1, 1, 0])
    g = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    a = group_normalized_advantages(r, g, scale="none")
    assert_close(a, torch.tensor([0.5, -0.5, -0.5, 0.5, 0.25, 0.25, 0.25, -0.75]))


def test_group_advantages_interleaved_ids_and_singleton():
    # ids need not be contiguous; a one-sample group has no baseline spread -> 0
    r = torch.tensor([2.0, 5.0, 4.0, 7.0])
    g = torch.tensor([3, 9, 3, 1])
    # group 3: [2, 4] mean 3, sample std √2 -> [-1/√2, 1/√2]; group 9: [5] -> 0; group 1: [7] -> 0
    a = group_normalized_advantages(r, g, eps=0.0)
    h = 1 / math.sqrt(2)
    assert_close(a, torch.tensor([-h, 0.0, h, 0.0]))


def test_group_advantages_rejects_unknown_scale():
    with pytest.raises(ValueError, match="scale"):
        group_normalized_advantages(torch.zeros(2), torch.zeros(2, dtype=torch.long), scale="max")


# ---------------------------------------------------------------- token rewards


def test_kl_penalized_token_rewards():
    scores = torch.tensor([2.0, -1.0, 5.0])
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0], [0, 0, 0]])
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, 9.0], [-1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-2.0, -0.5, 0.0], [0.0, 0.0, 0.0]])
    # row 0: logp - ref = [.5, -1, 0] -> -.1·: [-.05, .1, 0]; score 2 on t = 2
    # row 1: logp - ref = [1, -.5, pad] -> [-.1, .05, 0];     score -1 on t = 1 -> -.95
    # row 2: empty mask -> all 0 (its score 5 goes nowhere)
    r = kl_penalized_token_rewards(scores, logprobs, ref, mask, kl_coef=0.1)
    assert_close(r, torch.tensor([[-0.05, 0.1, 2.0], [-0.1, -0.95, 0.0], [0.0, 0.0, 0.0]]))


@pytest.mark.parametrize("ref_is_none,kl_coef", [(True, 0.1), (False, 0.0)])
def test_kl_penalized_token_rewards_without_kl_is_score_on_last_token(ref_is_none, kl_coef):
    scores = torch.tensor([2.0, -1.0])
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0]])
    logprobs = torch.full((2, 3), -1.0)
    ref = None if ref_is_none else torch.zeros(2, 3)
    r = kl_penalized_token_rewards(scores, logprobs, ref, mask, kl_coef=kl_coef)
    assert_close(r, torch.tensor([[0.0, 0.0, 2.0], [0.0, -1.0, 0.0]]))


# ---------------------------------------------------------------- GAE


def test_gae_hand_computed():
    # γ = .9, λ = .8, γλ = .72
    # row 0, mask [1, 1, 0]; the padded reward 7 and value 9 must be ignored:
    #   t=1: δ = 1 + .9·0 - .2 = .8                        A = .8
    #   t=0: δ = 0 + .9·.2 - .5 = -.32                     A = -.32 + .72·.8 = .256
    #   R = A + V = [.756, 1.0, 0]
    # row 1, full mask, r = [1, 0, 2], V = [1, 1, 1]:
    #   t=2: δ = 2 - 1 = 1                                 A = 1
    #   t=1: δ = 0 + .9 - 1 = -.1                          A = -.1 + .72·1 = .62
    #   t=0: δ = 1 + .9 - 1 = .9                           A = .9 + .72·.62 = 1.3464
    #   R = [2.3464, 1.62, 2.0]
    rewards = torch.tensor([[0.0, 1.0, 7.0], [1.0, 0.0, 2.0]])
    values = torch.tensor([[0.5, 0.2, 9.0], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[1.0, 1, 0], [1, 1, 1]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    assert_close(adv, torch.tensor([[0.256, 0.8, 0.0], [1.3464, 0.62, 1.0]]))
    assert_close(ret, torch.tensor([[0.756, 1.0, 0.0], [2.3464, 1.62, 2.0]]))


def test_gae_limits_td0_and_monte_carlo():
    rewards = torch.tensor([[1.0, 0.0, 2.0]])
    values = torch.tensor([[0.5, 1.0, 1.5]])
    mask = torch.ones(1, 3)
    # λ = 0: A_t = δ_t = r_t + γV_{t+1} - V_t, γ = .5: [1 + .5 - .5, 0 + .75 - 1, 2 - 1.5]
    adv, _ = gae(rewards, values, mask, gamma=0.5, lam=0.0)
    assert_close(adv, torch.tensor([[1.0, -0.25, 0.5]]))
    # λ = γ = 1: A_t = Σ_{s≥t} r_s - V_t = [3 - .5, 2 - 1, 2 - 1.5]; returns = rewards-to-go
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert_close(adv, torch.tensor([[2.5, 1.0, 0.5]]))
    assert_close(ret, torch.tensor([[3.0, 2.0, 2.0]]))


def _gae_reference(rewards, values, mask, gamma, lam):
    """Per row, per valid token: the textbook sum A_t = Σ_{l≥0} (γλ)^l δ_{t+l} over the episode."""
    adv = torch.zeros_like(rewards)
    for b in range(rewards.shape[0]):
        n = int(mask[b].sum())
        v = [float(values[b, t]) for t in range(n)] + [0.0]
        deltas = [float(rewards[b, t]) + gamma * v[t + 1] - v[t] for t in range(n)]
        for t in range(n):
            adv[b, t] = sum((gamma * lam) ** (s - t) * deltas[s] for s in range(t, n))
    return adv, (adv + values) * mask


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_gae_matches_double_loop_reference_with_ragged_masks(seed):
    g = torch.Generator().manual_seed(seed)
    B, T = 6, 9
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    lengths[0] = T  # at least one full row; others may be empty
    mask = (torch.arange(T) < lengths.unsqueeze(-1)).float()
    rewards = torch.randn(B, T, generator=g, dtype=torch.float64)
    values = torch.randn(B, T, generator=g, dtype=torch.float64)
    gamma = 0.5 + 0.5 * torch.rand(1, generator=g).item()
    lam = torch.rand(1, generator=g).item()
    adv, ret = gae(rewards, values, mask.double(), gamma=gamma, lam=lam)
    ref_adv, ref_ret = _gae_reference(rewards, values, mask.double(), gamma, lam)
    assert_close(adv, ref_adv)
    assert_close(ret, ref_ret)
    assert (adv[mask == 0] == 0).all() and (ret[mask == 0] == 0).all()


# ---------------------------------------------------------------- whitening, returns-to-go


def test_whiten_masked_stats():
    # valid tokens 1, 2, 3, 4: mean 2.5, deviations ±1.5, ±.5, Σ dev² = 5,
    # Bessel var 5/3, std 1.2909944 -> [-1.161895, -.387298, .387298, 1.161895]
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 99.0, 99.0]])
    mask = torch.tensor([[1.0, 1, 1], [1, 0, 0]])
    w = whiten(values, mask, eps=0.0)
    assert_close(w, torch.tensor([[-1.161895, -0.387298, 0.387298], [1.161895, 0.0, 0.0]]))
    valid = w[mask.bool()]
    assert_close(valid.mean(), torch.tensor(0.0))
    assert_close(valid.var(), torch.tensor(1.0))


def test_whiten_keep_mean():
    # the same scaling, mean 2.5 added back: [1.338105, 2.112702, 2.887298, 3.661895]
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 99.0, 99.0]])
    mask = torch.tensor([[1.0, 1, 1], [1, 0, 0]])
    w = whiten(values, mask, shift_mean=False, eps=0.0)
    assert_close(w, torch.tensor([[1.338105, 2.112702, 2.887298], [3.661895, 0.0, 0.0]]))


def test_whiten_single_token_is_zero_not_nan():
    w = whiten(torch.tensor([[3.0, 5.0]]), torch.tensor([[1.0, 0.0]]))
    assert_close(w, torch.zeros(1, 2))


def test_discounted_returns():
    # γ = .5; row 0: G2 = 2, G1 = 0 + .5·2 = 1, G0 = 1 + .5·1 = 1.5
    #         row 1 (mask [1, 1, 0], padded reward 9 ignored): G1 = 1, G0 = 3 + .5 = 3.5
    rewards = torch.tensor([[1.0, 0.0, 2.0], [3.0, 1.0, 9.0]])
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0]])
    assert_close(discounted_returns(rewards, mask, gamma=0.5), torch.tensor([[1.5, 1.0, 2.0], [3.5, 1.0, 0.0]]))


def test_reinforce_pp_advantages_compose():
    # REINFORCE++: score 1 on the last token, KL penalty .1·(logp - ref), γ = 1
    # token rewards [-.1·1, -.1·(-1), 1 - .1·0] = [-.1, .1, 1] -> returns-to-go [1, 1.1, 1]
    # whitened over the 3 tokens: mean 1.0333, deviations [-.0333, .0667, -.0333], Σdev² = .00667,
    # var .00333, std .057735 -> [-.57735, 1.1547, -.57735]
    f64 = dict(dtype=torch.float64)
    mask = torch.ones(1, 3, **f64)
    logprobs, ref = torch.tensor([[0.0, -1.0, -1.0]], **f64), torch.tensor([[-1.0, 0.0, -1.0]], **f64)
    rewards = kl_penalized_token_rewards(torch.tensor([1.0], **f64), logprobs, ref, mask, 0.1)
    adv = whiten(discounted_returns(rewards, mask, gamma=1.0), mask, eps=0.0)
    s = 1 / math.sqrt(3)  # .57735
    assert_close(adv, torch.tensor([[-s, 2 * s, -s]], **f64))
