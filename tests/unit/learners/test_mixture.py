"""The geometric policy/reference mixture of learners/mixture.py: analytic values and sampling."""
import pytest
import torch
from torch.testing import assert_close

from learners.mixture import geometric_mixture_logprobs, sample_mixture_token

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
