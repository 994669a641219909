"""Hand-computed checks of the GRPO math (arithmetic in the comments)."""
import math

import pytest
import torch
from torch.testing import assert_close

from learners.advantages import group_normalized_advantages
from learners.losses import Normaliser, aggregate, clipped_surrogate, kl_k3
from core.ops import entropy_from_logits, masked_mean, token_logprobs


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


def test_token_logprobs_matches_log_softmax_in_chunks():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 11)
    tokens = torch.randint(0, 11, (3, 4))
    expected = torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    assert_close(token_logprobs(logits, tokens, chunk_rows=1), expected)
    assert_close(token_logprobs(logits, tokens, chunk_rows=2), expected)


def test_entropy_uniform_and_onehot():
    # uniform over 4: H = ln 4; a near-one-hot distribution: H ≈ 0
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]]])
    assert_close(entropy_from_logits(logits), torch.tensor([[math.log(4), 0.0]]))


def test_masked_mean_empty_row_is_zero():
    v = torch.tensor([[2.0, 4.0], [5.0, 5.0]])
    m = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    assert_close(masked_mean(v, m, dim=-1), torch.tensor([3.0, 0.0]))
    assert_close(masked_mean(v, m), torch.tensor(3.0))
