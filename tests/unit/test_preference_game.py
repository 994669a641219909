"""Online IPO and Nash-MD on a small non-transitive preference game reach the regularised Nash equilibrium.

The game: K = 3 fixed responses, a softmax policy π_θ over them (θ = 3 logits), a reference μ
and a preference matrix P (P[i, j] = P(i ≻ j)) that is rock-paper-scissors with unequal margins.
The β-regularised game (Munos et al. 2023) is

    max_π min_π'  f(π, π') = P(π ≻ π') - β·KL(π‖μ) + β·KL(π'‖μ),     P(π ≻ π') = πᵀ P π'

and its unique (symmetric) Nash equilibrium solves π*(y) ∝ μ(y)·exp(P(y ≻ π*)/β). We solve that
fixed point here with a damped best-response iteration (no learning code involved) and check it
is the saddle point; the algorithms then only ever see samples, and our losses with autograd.

Mapping of the IPO coefficient: with pairs y, y' ~ π and the label drawn from P(y ≻ y'), the
expected semi-gradient of (h - 1/(2τ))² wrt log π(z) is 4π(z)·[ρ(z) - E_π ρ - (P(z ≻ π) - ½)/τ]
with ρ = log π/μ (Calandriello et al. 2024, online IPO), so the stationary point is π ∝ μ·exp(P(·≻π)/τ):
τ (our `beta` of `preference_loss(kind="ipo")`) equals the KL coefficient β of the game.

Nash-MD's policy gradient with opponent y' ~ π^{1-α}·μ^α has stationary point
π ∝ μ·exp(P(· ≻ π_mix)/β), which is π* only when α = 0: with a fixed α = .5 (TRL's default) it
converges to its own fixed point π_α (TV(π_α, π*) = .157 here). Munos et al.'s Nash-MD ties α to
the step size (α = η·β) and converges as η → 0; the last test decays α with the learning rate.

Tolerance: total variation < .02 for every sampled run. Wrong answers are far: TV(μ, π*) = .21,
TV(π_α=.5, π*) = .16, and the equilibrium for τ = 2β is .09 away. With the settings below
(1,000 SGD steps on the 3 logits; batches of 256 pairs for IPO, 1,024 samples for Nash-MD), the
largest error over seeds 0-19 was .005 (IPO), .007 (Nash-MD, fixed α) and .009 (Nash-MD,
decaying α), so .02 is > 2x the worst case. Constant-step SGD iterates keep fluctuating (noise,
not cycling: the expected-gradient dynamics converge in the last iterate, see the mean-field
tests), so the constant-step runs are judged on the average of the second half of their
iterates; the decaying-step run on its last one.

The last section plays a 2-response game through `OnlineIPO` itself: soft preference labels
reach the IPO optimum of P, hard labels the same point whatever P is.
"""
import dataclasses

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from learners.algos.online_dpo import OnlineIPO, OnlineIPOConfig
from learners.losses import nash_md_loss, preference_loss
from learners.mixture import geometric_mixture_logprobs
from tests.helpers import make_rollouts, make_scores, make_tensors

F64 = torch.float64
# 0 ≻ 1 with .8, 1 ≻ 2 with .7, 2 ≻ 0 with .9: a cycle with unequal margins
P = 0.5 + torch.tensor([[0.0, 0.3, -0.4], [-0.3, 0.0, 0.2], [0.4, -0.2, 0.0]], dtype=F64)
MU = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
LOG_MU = MU.log()
BETA = 0.1
K = 3
TOL = 0.02


def tv(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * (p - q).abs().sum().item()


def kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return (p * (p.log() - q.log())).sum()


def mixture(pi: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.softmax((1 - alpha) * pi.log() + alpha * LOG_MU, -1)


def best_response(opponent: torch.Tensor, beta: float = BETA) -> torch.Tensor:
    """argmax_π P(π ≻ π') - β·KL(π‖μ) = softmax(log μ + P π'/β) (Gibbs variational principle)."""
    return torch.softmax(LOG_MU + P @ opponent / beta, -1)


def solve_fixed_point(alpha: float = 0.0, beta: float = BETA) -> torch.Tensor:
    """π = BR(π^{1-α}·μ^α) by damped iteration π ← .9·π + .1·BR; α = 0 gives the Nash equilibrium."""
    pi = torch.full((K,), 1.0 / K, dtype=F64)
    for _ in range(1000):
        pi = 0.9 * pi + 0.1 * best_response(mixture(pi, alpha), beta)
    residual = (best_response(mixture(pi, alpha), beta) - pi).abs().max().item()
    assert residual < 1e-14, residual
    return pi


NASH = solve_fixed_point()
NASH_MD_ALPHA = 0.5
NASH_MD_POINT = solve_fixed_point(NASH_MD_ALPHA)


def f(pi: torch.Tensor, opponent: torch.Tensor) -> torch.Tensor:
    return pi @ P @ opponent - BETA * kl(pi, MU) + BETA * kl(opponent, MU)


def test_game_is_a_non_transitive_preference():
    assert_close(P + P.T, torch.ones(K, K, dtype=F64))
    assert P[0, 1] > 0.5 and P[1, 2] > 0.5 and P[2, 0] > 0.5


def test_nash_equilibrium_is_the_saddle_point():
    # best responses of both players to π* are π* (the min player's is the same by P + Pᵀ = 1)
    assert_close(best_response(NASH), NASH, rtol=0, atol=1e-13)
    # duality gap, both sides in closed form:
    #   max_π f(π, π*)  =  β·log Σ μ·exp(Pπ*/β)  + β·KL(π*‖μ)
    #   min_π' f(π*, π') = -β·log Σ μ·exp(-Pᵀπ*/β) - β·KL(π*‖μ)
    upper = BETA * torch.logsumexp(LOG_MU + P @ NASH / BETA, 0) + BETA * kl(NASH, MU)
    lower = -BETA * torch.logsumexp(LOG_MU - P.T @ NASH / BETA, 0) - BETA * kl(NASH, MU)
    assert abs(upper.item() - lower.item()) < 1e-12
    assert_close(f(NASH, NASH), torch.tensor(0.5, dtype=F64))  # πᵀPπ = ½ when P + Pᵀ = 1
    # and by brute force: no random deviation of either player gains
    others = torch.distributions.Dirichlet(torch.ones(K, dtype=F64)).sample((500,))
    value = f(NASH, NASH).item()
    assert max(f(o, NASH).item() for o in others) <= value + 1e-12
    assert min(f(NASH, o).item() for o in others) >= value - 1e-12
    # the equilibrium is neither the reference nor uniform
    assert tv(NASH, MU) > 0.2 and tv(NASH, torch.full((K,), 1.0 / K, dtype=F64)) > 0.05


# ---------------------------------------------------------------- online IPO

PAIRS = torch.cartesian_prod(torch.arange(K), torch.arange(K))


def online_ipo_expected_loss(theta: torch.Tensor, tau: float = BETA) -> torch.Tensor:
    """E_{y, y' ~ sg(π)} E_{label ~ P(y ≻ y')} IPO loss, summed exactly over the K² ordered pairs."""
    logp = torch.log_softmax(theta, -1)
    y, y2 = PAIRS[:, 0], PAIRS[:, 1]
    weight = (logp.exp()[y] * logp.exp()[y2]).detach()
    y_wins = preference_loss(logp[y], logp[y2], LOG_MU[y], LOG_MU[y2], tau, "ipo")
    y2_wins = preference_loss(logp[y2], logp[y], LOG_MU[y2], LOG_MU[y], tau, "ipo")
    return (weight * (P[y, y2] * y_wins + P[y2, y] * y2_wins)).sum()


def grad_at(loss_fn, pi: torch.Tensor, *args) -> torch.Tensor:
    theta = pi.log().clone().requires_grad_(True)
    loss_fn(theta, *args).backward()
    return theta.grad


def test_online_ipo_expected_gradient_vanishes_exactly_at_nash_with_tau_equal_beta():
    assert grad_at(online_ipo_expected_loss, NASH).abs().max() < 1e-12
    # a different τ has another stationary point: the gradient at π* is far from 0
    assert grad_at(online_ipo_expected_loss, NASH, 2 * BETA).abs().max() > 0.1
    assert grad_at(online_ipo_expected_loss, NASH, BETA / 2).abs().max() > 0.1


def gradient_descent(loss_fn, steps: int, lr: float, *args) -> torch.Tensor:
    theta = torch.zeros(K, dtype=F64, requires_grad=True)
    for _ in range(steps):
        theta.grad = None
        loss_fn(theta, *args).backward()
        with torch.no_grad():
            theta -= lr * theta.grad
    return torch.softmax(theta.detach(), -1)


def test_online_ipo_mean_field_last_iterate_converges_to_nash():
    # exact expected loss, from uniform; TV(uniform, π*) = .06; 1,000 steps reach 1e-15 (600: 1e-9)
    assert tv(gradient_descent(online_ipo_expected_loss, 1000, 0.1), NASH) < 1e-9


def sgd_step(theta: torch.Tensor, loss: torch.Tensor, lr: float) -> None:
    theta.grad = None
    loss.backward()
    with torch.no_grad():
        theta -= lr * theta.grad


def run_online_ipo(seed: int, steps: int = 1000, batch: int = 256, lr: float = 0.1) -> torch.Tensor:
    """Self-play online IPO: y, y' ~ π, label ~ Bernoulli(P(y ≻ y')); averaged second-half iterate."""
    gen = torch.Generator().manual_seed(seed)
    theta = torch.zeros(K, dtype=F64, requires_grad=True)
    average = torch.zeros(K, dtype=F64)
    for step in range(steps):
        logp = torch.log_softmax(theta, -1)
        y = torch.multinomial(logp.exp().detach(), batch, replacement=True, generator=gen)
        y2 = torch.multinomial(logp.exp().detach(), batch, replacement=True, generator=gen)
        y_wins = torch.rand(batch, generator=gen, dtype=F64) < P[y, y2]
        chosen, rejected = torch.where(y_wins, y, y2), torch.where(y_wins, y2, y)
        loss = preference_loss(logp[chosen], logp[rejected], LOG_MU[chosen], LOG_MU[rejected], BETA, "ipo")
        sgd_step(theta, loss.mean(), lr)
        if step >= steps // 2:
            average += torch.softmax(theta.detach(), -1) / (steps - steps // 2)
    return average


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_online_ipo_self_play_converges_to_nash(seed):
    assert tv(run_online_ipo(seed), NASH) < TOL


# ---------------------------------------------------------------- Nash-MD


def nash_md_expected_loss(theta: torch.Tensor, alpha: float) -> torch.Tensor:
    """E_{y ~ sg(π)} nash_md_loss with the exact preference P(y ≻ π_mix) against the mixture."""
    logp = torch.log_softmax(theta, -1)
    opponent = geometric_mixture_logprobs(theta.detach(), LOG_MU, alpha).exp()
    return (logp.exp().detach() * nash_md_loss(logp, LOG_MU, P @ opponent, BETA)).sum()


def test_nash_md_expected_gradient_vanishes_at_its_mixture_fixed_point():
    assert grad_at(nash_md_expected_loss, NASH, 0.0).abs().max() < 1e-12
    assert grad_at(nash_md_expected_loss, NASH_MD_POINT, NASH_MD_ALPHA).abs().max() < 1e-12
    # with α > 0, π* itself is not stationary (the O(α) bias of a fixed mixture coefficient)
    assert grad_at(nash_md_expected_loss, NASH, NASH_MD_ALPHA).abs().max() > 5e-3
    assert tv(NASH_MD_POINT, NASH) > 0.15


def test_nash_md_mean_field_last_iterate_converges():
    # exact expected loss from uniform, lr 1: 1,000 steps reach 1e-15 for both α
    assert tv(gradient_descent(nash_md_expected_loss, 1000, 1.0, 0.0), NASH) < 1e-9
    assert tv(gradient_descent(nash_md_expected_loss, 1000, 1.0, NASH_MD_ALPHA), NASH_MD_POINT) < 1e-9


def run_nash_md(
    seed: int, alpha: float, decay_steps: float | None, steps: int = 1000, batch: int = 1024, lr: float = 2.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nash-MD: y ~ π, y' ~ π^{1-α_t}·μ^{α_t}, preference ~ Bernoulli(P(y ≻ y')).

    With `decay_steps`, lr_t = lr/(1 + t/decay_steps) and α_t = α·lr_t/lr (α ∝ step size, as in
    Munos et al.'s α = η·β); otherwise both are constant. Returns (last, second-half average).
    """
    gen = torch.Generator().manual_seed(seed)
    theta = torch.zeros(K, dtype=F64, requires_grad=True)
    average = torch.zeros(K, dtype=F64)
    for step in range(steps):
        scale = 1.0 / (1.0 + step / decay_steps) if decay_steps else 1.0
        logp = torch.log_softmax(theta, -1)
        opponent = geometric_mixture_logprobs(theta.detach(), LOG_MU, alpha * scale).exp()
        y = torch.multinomial(logp.exp().detach(), batch, replacement=True, generator=gen)
        y2 = torch.multinomial(opponent, batch, replacement=True, generator=gen)
        preference = (torch.rand(batch, generator=gen, dtype=F64) < P[y, y2]).to(F64)
        sgd_step(theta, nash_md_loss(logp[y], LOG_MU[y], preference, BETA).mean(), lr * scale)
        if step >= steps // 2:
            average += torch.softmax(theta.detach(), -1) / (steps - steps // 2)
    return torch.softmax(theta.detach(), -1), average


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nash_md_with_fixed_mixture_converges_to_its_fixed_point(seed):
    _, average = run_nash_md(seed, NASH_MD_ALPHA, decay_steps=None, lr=1.0)
    assert tv(average, NASH_MD_POINT) < TOL
    assert tv(average, NASH) > 0.1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nash_md_with_mixture_vanishing_with_the_step_converges_to_nash(seed):
    # lr 2 -> 2/51 and α .5 -> .01 over 1,000 steps (decay 20); judged on the last iterate
    last, _ = run_nash_md(seed, NASH_MD_ALPHA, decay_steps=20)
    assert tv(last, NASH) < TOL


# ---------------------------------------------------------------- soft vs hard preference labels
#
# A 2-response game: one pair (y1, y2) with P(y1 ≻ y2) = P, a softmax policy over the two and a
# reference μ2 = (.7, .3). Write h = (log π(y1) − log μ2(y1)) − (log π(y2) − log μ2(y2)) and a = 1/(2β).
# Soft labels train on  L(h) = P·(h − a)² + (1 − P)·(−h − a)²  (IPO, `labels: soft`):
#     L'(h) = 2P(h − a) + 2(1 − P)(h + a) = 2h − 2a(2P − 1) = 0   =>   h* = (2P − 1)·a = (2P − 1)/(2β)
# Hard labels make y1 the winner of every pair when P > ½:  L(h) = (h − a)²  =>  h = a = 1/(2β),
# whatever P is. β = .5, P = .6: soft h* = .2, hard h = 1 (for P = .4 the mirror images, −.2 and −1).
# Sampled labels (winner ~ Bernoulli(P)) have the soft loss as their expectation.

BETA2 = 0.5
LOG_MU2 = torch.tensor([0.7, 0.3], dtype=F64).log()


def _pair_game(p: float, labels: str, pairs: int, label_seed: int):
    algo = OnlineIPO(OnlineIPOConfig(beta=BETA2, labels=labels, label_seed=label_seed))
    tensors = make_tensors([[1]] * (2 * pairs))

    def prepare(version: int):
        rollouts = make_rollouts(np.repeat(np.arange(pairs), 2), policy_versions=np.full(2 * pairs, version))
        batch, _ = algo.prepare(rollouts, make_scores([0.0] * 2 * pairs, preferences=np.full(pairs, p)), tensors)
        # rows are (preferred, other) per pair: y1 first when P ≥ ½ (row i is response i % 2)
        rows = batch.input_ids[:, 0] // 2 % 2
        batch = dataclasses.replace(batch, ref_logprobs=LOG_MU2[rows][:, None])
        return batch, rows, algo.normaliser(batch, 1)

    return algo, prepare


def _h(theta: torch.Tensor) -> float:
    logp = torch.log_softmax(theta.detach(), -1)
    return ((logp[0] - LOG_MU2[0]) - (logp[1] - LOG_MU2[1])).item()


def run_pair_game(p: float, labels: str, pairs: int = 1, steps: int = 200, lr: float = 0.1,
                  label_seed: int = 0) -> float:
    """Gradient descent on θ through `OnlineIPO.prepare` / `loss`; h of the second-half average
    iterate (a fresh `prepare` every step, its policy version the step, for sampled labels)."""
    algo, prepare = _pair_game(p, labels, pairs, label_seed)
    theta = torch.zeros(2, dtype=F64, requires_grad=True)
    average = 0.0
    for step in range(steps):
        batch, rows, norm = prepare(step)
        logprobs = torch.log_softmax(theta, -1)[rows][:, None]
        sgd_step(theta, algo.loss(batch, logprobs, norm)[0], lr)
        if step >= steps // 2:
            average += _h(theta) / (steps - steps // 2)
    return average


@pytest.mark.parametrize("p,soft,hard", [(0.6, 0.2, 1.0), (0.4, -0.2, -1.0)])
def test_soft_labels_reach_the_ipo_optimum_of_p_and_hard_labels_do_not(p, soft, hard):
    # h = θ1 − θ2 + const, so one step moves h by −2·lr·L'(h) = −4·lr·(h − h*): h − h* shrinks by
    # .6 a step and is at machine precision long before the averaged second half of 200 steps
    assert_close(run_pair_game(p, "soft"), soft)
    assert_close(run_pair_game(p, "hard"), hard)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampled_labels_reach_the_soft_optimum_on_average(seed):
    # 64 pairs a step, label ~ Bernoulli(.6): the step's target 2q̄ − 1 has sd 2·√(.24/64) = .12, the
    # iterate (an EMA of weight .4) sd ≈ .06, its 500-step average ≈ .005; the largest error over
    # seeds 0-19 was .014, so .05 is > 3x the worst case, and the hard optimum is .8 away.
    h = run_pair_game(0.6, "sampled", pairs=64, steps=1000, label_seed=seed)
    assert abs(h - 0.2) < 0.05
