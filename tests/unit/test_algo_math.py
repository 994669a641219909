"""Hand-computed checks of the PPO / REINFORCE++ / online DPO-IPO / Nash-MD math (arithmetic in comments)."""
import math

import pytest
import torch
from torch.testing import assert_close

from learners.advantages import discounted_returns, gae, kl_penalized_token_rewards, whiten
from learners.losses import (
    clipped_value_loss,
    nash_md_loss,
    preference_loss,
    preference_margin,
    sequence_logprobs,
)
from learners.mixture import geometric_mixture_logprobs, sample_mixture_token

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


# ---------------------------------------------------------------- value loss, sequence logprobs


def test_clipped_value_loss():
    # ε = .2
    # t0: V 1, V_old .5, R 2: V_clip = .7; (1-2)² = 1, (.7-2)² = 1.69 -> ½·1.69 = .845, clipped
    # t1: V 2, V_old 2.5, R 4: V_clip = 2.3; (2-4)² = 4, (2.3-4)² = 2.89 -> ½·4 = 2, not clipped
    # t2: V 0, V_old 0, R -2: within the clip; ½·4 = 2
    values = torch.tensor([[1.0, 2.0, 0.0]], requires_grad=True)
    old = torch.tensor([[0.5, 2.5, 0.0]])
    returns = torch.tensor([[2.0, 4.0, -2.0]])
    loss, clipped = clipped_value_loss(values, old, returns, clip=0.2)
    assert_close(loss, torch.tensor([[0.845, 2.0, 2.0]]))
    assert_close(clipped, torch.tensor([[1.0, 0.0, 0.0]]))
    # where the clipped term is taken, V gets no gradient; elsewhere dL/dV = V - R
    loss.sum().backward()
    assert_close(values.grad, torch.tensor([[0.0, -2.0, 2.0]]))


def test_value_loss_without_clip():
    values = torch.tensor([[1.0, 2.0, 0.0]])
    loss, clipped = clipped_value_loss(values, torch.tensor([[0.5, 2.5, 0.0]]), torch.tensor([[2.0, 4.0, -2.0]]), None)
    assert_close(loss, torch.tensor([[0.5, 2.0, 2.0]]))  # ½·[1, 4, 4]
    assert_close(clipped, torch.zeros(1, 3))


def test_sequence_logprobs():
    # [-1 - 2 - 4, -.5 - 3 (pad -7 ignored)]
    lp = torch.tensor([[-1.0, -2.0, -4.0], [-0.5, -3.0, -7.0]])
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0]])
    assert_close(sequence_logprobs(lp, mask), torch.tensor([-7.0, -3.5]))


# ---------------------------------------------------------------- DPO / IPO

# pair 0: h = (-1 - (-2)) - (-3 - (-2.5)) = 1 - (-.5) = 1.5;  pair 1: h = 0
CHOSEN = torch.tensor([-1.0, -2.0])
REJECTED = torch.tensor([-3.0, -2.0])
REF_CHOSEN = torch.tensor([-2.0, -1.0])
REF_REJECTED = torch.tensor([-2.5, -1.0])


def test_dpo_loss_worked_example():
    # β = .1: βh = .15; -log σ(.15) = log(1 + e^{-.15}) = log(1.860708) = .620957; h = 0: log 2
    loss = preference_loss(CHOSEN, REJECTED, REF_CHOSEN, REF_REJECTED, beta=0.1, kind="dpo")
    assert_close(loss, torch.tensor([0.620957, math.log(2.0)]))
    assert_close(preference_margin(CHOSEN, REJECTED, REF_CHOSEN, REF_REJECTED, beta=0.1), torch.tensor([0.15, 0.0]))


def test_dpo_gradient_raises_chosen_lowers_rejected():
    # d/d log π(y_c) = -β·σ(-βh) = -.1·σ(-.15) = -.1·.462570 = -.046257; rejected: +.046257
    chosen = CHOSEN.clone().requires_grad_(True)
    rejected = REJECTED.clone().requires_grad_(True)
    preference_loss(chosen, rejected, REF_CHOSEN, REF_REJECTED, beta=0.1, kind="dpo")[0].backward()
    assert_close(chosen.grad, torch.tensor([-0.046257, 0.0]))
    assert_close(rejected.grad, torch.tensor([0.046257, 0.0]))


def test_ipo_loss_worked_example():
    # β = .1: target 1/(2β) = 5: (1.5 - 5)² = 12.25, (0 - 5)² = 25
    loss = preference_loss(CHOSEN, REJECTED, REF_CHOSEN, REF_REJECTED, beta=0.1, kind="ipo")
    assert_close(loss, torch.tensor([12.25, 25.0]))
    # β = .5: target 1: (1.5 - 1)² = .25, (0 - 1)² = 1
    loss = preference_loss(CHOSEN, REJECTED, REF_CHOSEN, REF_REJECTED, beta=0.5, kind="ipo")
    assert_close(loss, torch.tensor([0.25, 1.0]))


def test_preference_loss_rejects_unknown_kind_and_bad_beta():
    with pytest.raises(ValueError, match="dpo.*ipo"):
        preference_loss(CHOSEN, REJECTED, REF_CHOSEN, REF_REJECTED, beta=0.1, kind="kto")
    with pytest.raises(ValueError, match="beta"):
        preference_loss(CHOSEN, REJECTED, REF_CHOSEN, REF_REJECTED, beta=0.0, kind="ipo")


# ---------------------------------------------------------------- Nash-MD


def test_nash_md_loss_value_and_gradient():
    # β = .1, log ratio ρ = logp - ref = [.5, -1]
    # value:  -(P - ½)·logp + β·ρ·logp
    #   row 0: -(.3)(-1) + .1·.5·(-1) = .3 - .05 = .25
    #   row 1: -(-.2)(-2) + .1·(-1)·(-2) = -.4 + .2 = -.2
    # gradient wrt logp, ρ held constant: -(P - ½) + β·ρ = [-.3 + .05, .2 - .1] = [-.25, .1]
    # (were ρ differentiated too, row 0 would get -.3 + .1·(2·(-1) - (-1.5)) = -.35)
    logps = torch.tensor([-1.0, -2.0], requires_grad=True)
    ref = torch.tensor([-1.5, -1.0])
    pref = torch.tensor([0.8, 0.3])
    loss = nash_md_loss(logps, ref, pref, beta=0.1)
    assert_close(loss, torch.tensor([0.25, -0.2]))
    loss.sum().backward()
    assert_close(logps.grad, torch.tensor([-0.25, 0.1]))


def test_nash_md_expected_kl_term_is_kl_gradient():
    # Σ_y π(y)·∇ℓ_KL(y) = ∇KL(π‖μ) for a softmax policy (score-function identity), P ≡ ½
    theta = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64, requires_grad=True)
    mu = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    logp = torch.log_softmax(theta, -1)
    surrogate = (logp.exp().detach() * nash_md_loss(logp, mu.log(), torch.full((3,), 0.5), beta=1.0)).sum()
    (grad,) = torch.autograd.grad(surrogate, theta)
    logp = torch.log_softmax(theta, -1)
    kl = (logp.exp() * (logp - mu.log())).sum()
    (expected,) = torch.autograd.grad(kl, theta)
    assert_close(grad, expected)


# ---------------------------------------------------------------- geometric mixture

PI = torch.tensor([0.5, 0.3, 0.2])
PI_REF = torch.tensor([0.2, 0.2, 0.6])
# β = .5: √(π·π_ref) = √[.1, .06, .12] = [.316228, .244949, .346410], Σ = .907587
MIX_HALF = torch.tensor([0.348427, 0.269890, 0.381683])


def test_geometric_mixture_logprobs_analytic():
    # logits may be shifted by any constant: the normalisation absorbs it
    out = geometric_mixture_logprobs(PI.log() + 3.0, PI_REF.log() - 1.0, beta=0.5)
    assert_close(out.exp(), MIX_HALF)
    # β = .25: π^.75·π_ref^.25 normalised, computed by hand from the formula
    unnorm = PI**0.75 * PI_REF**0.25
    assert_close(geometric_mixture_logprobs(PI.log(), PI_REF.log(), 0.25).exp(), unnorm / unnorm.sum())


def test_geometric_mixture_endpoints_and_batch_shape():
    assert_close(geometric_mixture_logprobs(PI.log(), PI_REF.log(), 0.0).exp(), PI)
    assert_close(geometric_mixture_logprobs(PI.log(), PI_REF.log(), 1.0).exp(), PI_REF)
    out = geometric_mixture_logprobs(PI.log().expand(2, 4, 3), PI_REF.log().expand(2, 4, 3), 0.5)
    assert out.shape == (2, 4, 3)
    assert_close(out.exp()[1, 3], MIX_HALF)


@pytest.mark.parametrize("beta", [-0.1, 1.1])
def test_geometric_mixture_rejects_coef_outside_unit_interval(beta):
    with pytest.raises(ValueError, match="mixture coefficient"):
        geometric_mixture_logprobs(PI.log(), PI_REF.log(), beta)


@pytest.mark.parametrize("temperature,expected", [
    (1.0, MIX_HALF),
    # T = .5 squares the mixture: π·π_ref = [.1, .06, .12] / .28 = [.357143, .214286, .428571]
    (0.5, torch.tensor([0.357143, 0.214286, 0.428571])),
])
def test_sample_mixture_token_frequencies(temperature, expected):
    # 40,000 draws: the std of a frequency is ≤ √(.25/40000) = .0025; atol .01 is 4σ
    n = 40_000
    gen = torch.Generator().manual_seed(0)
    tokens, logprobs = sample_mixture_token(PI.log().expand(n, 3), PI_REF.log().expand(n, 3), 0.5, temperature, gen)
    assert tokens.shape == (n,) and tokens.dtype == torch.int64
    assert_close(torch.bincount(tokens, minlength=3) / n, expected, rtol=0, atol=0.01)
    # each draw's logprob is log π_mix(token) at that temperature
    assert_close(logprobs, expected.log()[tokens], rtol=0, atol=1e-5)


def test_sample_mixture_token_greedy_and_reproducible():
    # T = 0: argmax of the mixture [.348, .270, .382] -> token 2
    logits, ref = PI.log().expand(4, 3), PI_REF.log().expand(4, 3)
    tokens, logprobs = sample_mixture_token(logits, ref, 0.5, 0.0)
    assert tokens.tolist() == [2, 2, 2, 2] and logprobs.tolist() == [0.0] * 4
    a, _ = sample_mixture_token(logits, ref, 0.5, 1.0, torch.Generator().manual_seed(7))
    b, _ = sample_mixture_token(logits, ref, 0.5, 1.0, torch.Generator().manual_seed(7))
    assert a.tolist() == b.tolist()
