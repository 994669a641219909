"""Losses of learners/losses.py, computed by hand (arithmetic in the comments): the clipped
surrogate, KL estimator and aggregation (GRPO), importance corrections, value loss, DPO / IPO and
Nash-MD."""
import math

import pytest
import torch
from torch.testing import assert_close

from learners.losses import (
    Normaliser,
    aggregate,
    clipped_surrogate,
    clipped_value_loss,
    importance_weights,
    kl_k3,
    nash_md_loss,
    preference_loss,
    preference_margin,
    sequence_logprobs,
)

# ---------------------------------------------------------------- clipped surrogate, KL, aggregation


def test_clipped_surrogate_positive_and_negative_advantage():
    # ρ = [.5, 1, 1.5] (old logprobs 0), clip to [.8, 1.2]
    logp = torch.log(torch.tensor([[0.5, 1.0, 1.5]]))
    old = torch.zeros(1, 3)
    # A = +1: min(ρ, clip ρ) = [.5, 1, 1.2]; clipped term taken only at ρ = 1.5
    loss, clipped = clipped_surrogate(logp, old, torch.tensor([1.0]), 0.2, 0.2)
    assert_close(loss, torch.tensor([[-0.5, -1.0, -1.2]]))
    assert_close(clipped, torch.tensor([[0.0, 0.0, 1.0]]))
    # A = -1: min(-ρ, -clip ρ) = [-.8, -1, -1.5]; clipped term taken only at ρ = .5
    loss, clipped = clipped_surrogate(logp, old, torch.tensor([-1.0]), 0.2, 0.2)
    assert_close(loss, torch.tensor([[0.8, 1.0, 1.5]]))
    assert_close(clipped, torch.tensor([[1.0, 0.0, 0.0]]))


def test_clipped_surrogate_asymmetric_clip_higher():
    # DAPO clip-higher: ε_low .2, ε_high .28 -> ρ = 1.5, A = 1 is capped at 1.28
    logp = torch.log(torch.tensor([[1.5]]))
    loss, _ = clipped_surrogate(logp, torch.zeros(1, 1), torch.tensor([1.0]), 0.2, 0.28)
    assert_close(loss, torch.tensor([[-1.28]]))


def test_kl_k3():
    # d = ref - logp; k3 = e^d - d - 1
    # d = ln 2: 2 - .693147 - 1 = .306853;  d = -ln 2: .5 + .693147 - 1 = .193147;  d = 0: 0
    logp = torch.zeros(1, 3)
    ref = torch.tensor([[math.log(2.0), -math.log(2.0), 0.0]])
    assert_close(kl_k3(logp, ref), torch.tensor([[2 - math.log(2) - 1, 0.5 + math.log(2) - 1, 0.0]]))


@pytest.mark.parametrize("mode,expected", [
    ("token_mean", 2.5),   # (1 + 2 + 3 + 4) / 4 tokens
    ("seq_mean", 3.0),     # (mean(1,2,3) = 2  +  4) / 2 sequences
    ("constant", 1.25),    # (1 + 2 + 3 + 4) / (2 sequences · C = 4)
])
def test_aggregate_modes(mode, expected):
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    out = aggregate(values, mask, mode, Normaliser(num_tokens=4, num_seqs=2, constant=4.0))
    assert_close(out, torch.tensor(expected))


def test_aggregate_rejects_unknown_mode():
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(torch.zeros(1, 1), torch.ones(1, 1), "sum", Normaliser(1, 1))


# ---------------------------------------------------------------- importance corrections

# r = π_old/π_rollout:  row 0 [.2/.8, .5/.5, .4/.1] = [.25, 1, 4];  row 1 [.6/.4, .6/.2] = [1.5, 3]
# and a padding position whose logprobs are garbage (r would be e^55): masked, it counts as r = 1.
IS_OLD = torch.log(torch.tensor([[0.2, 0.5, 0.4], [0.6, 0.6, 1.0]])) + torch.tensor([[0.0, 0, 0], [0, 0, 5.0]])
IS_ROLLOUT = torch.log(torch.tensor([[0.8, 0.5, 0.1], [0.4, 0.2, 1.0]])) + torch.tensor([[0.0, 0, 0], [0, 0, -50.0]])
IS_MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
IS_NORM = Normaliser(num_tokens=5, num_seqs=2)


def _is(mode):
    return importance_weights(IS_OLD, IS_ROLLOUT, IS_MASK, mode, cap=2.0, band=(0.5, 2.0), norm=IS_NORM)


def test_importance_weights_none_is_one_without_metrics():
    weights, metrics = _is("none")
    assert_close(weights, torch.ones(2, 3))
    assert metrics == {}


def test_importance_weights_tis_truncates_at_the_cap():
    # w = min(r, 2): [.25, 1, 2], [1.5, 2, (pad r = 1) 1]
    # truncated: r = 4 and r = 3 -> 2 of 5 tokens = .4;  token mean of w = (.25 + 1 + 2 + 1.5 + 2)/5 = 1.35
    weights, metrics = _is("tis")
    assert_close(weights, torch.tensor([[0.25, 1.0, 2.0], [1.5, 2.0, 1.0]]))
    assert_close(metrics["train/is_truncated_frac"], torch.tensor(0.4))
    assert_close(metrics["train/is_weight"], torch.tensor(1.35))
    assert set(metrics) == {"train/is_weight", "train/is_truncated_frac"}


def test_importance_weights_icepop_zeroes_tokens_outside_the_band():
    # band [.5, 2]: keep r = 1 and r = 1.5 (w = r); r = .25, 4, 3 -> 0; pad r = 1 -> 1
    # masked: 3 of 5 tokens = .6;  token mean of w = (1 + 1.5)/5 = .5
    weights, metrics = _is("icepop")
    assert_close(weights, torch.tensor([[0.0, 1.0, 0.0], [1.5, 0.0, 1.0]]))
    assert_close(metrics["train/is_masked_frac"], torch.tensor(0.6))
    assert_close(metrics["train/is_weight"], torch.tensor(0.5))
    assert set(metrics) == {"train/is_weight", "train/is_masked_frac"}


def test_importance_weights_seq_mask_tis_masks_by_geometric_mean_then_truncates():
    # geometric means: row 0 (.25·1·4)^(1/3) = 1 (kept); row 1 (1.5·3)^(1/2) = √4.5 = 2.121 > 2 (masked)
    # row 0: min(r, 2) = [.25, 1, 2]; row 1: 0 everywhere
    # sequences masked 1/2;  truncated: r = 4 in row 0 -> 1 of 5 tokens = .2 (row 1's r = 3 was masked)
    # token mean of w = (.25 + 1 + 2)/5 = .65
    weights, metrics = _is("seq_mask_tis")
    assert_close(weights, torch.tensor([[0.25, 1.0, 2.0], [0.0, 0.0, 0.0]]))
    assert_close(metrics["train/is_seq_masked_frac"], torch.tensor(0.5))
    assert_close(metrics["train/is_truncated_frac"], torch.tensor(0.2))
    assert_close(metrics["train/is_weight"], torch.tensor(0.65))
    assert set(metrics) == {"train/is_weight", "train/is_seq_masked_frac", "train/is_truncated_frac"}


def test_importance_weights_icepop_survives_an_infinite_ratio():
    # r = e^200 overflows to inf in float32: outside the band -> 0, not inf·0 = NaN
    weights, _ = importance_weights(torch.tensor([[0.0, 0.0]]), torch.tensor([[-200.0, 0.0]]), torch.ones(1, 2),
                                    "icepop", cap=2.0, band=(0.5, 2.0), norm=Normaliser(2, 1))
    assert_close(weights, torch.tensor([[0.0, 1.0]]))


def test_importance_weights_rejects_unknown_mode():
    with pytest.raises(ValueError, match="importance correction"):
        _is("clip")


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
