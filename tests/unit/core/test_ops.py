"""Pure tensor ops of core/ops.py."""
import math

import torch
from torch.testing import assert_close

from core.ops import entropy_from_logits, masked_mean, split_bounds, token_logprobs


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


def test_shard_covers_every_item_once():
    assert split_bounds(5, 2) == [0, 2, 5]  # ranks get [0, 1] and [2, 3, 4]
    assert split_bounds(1, 2) == [0, 0, 1]  # rank 0 gets nothing, rank 1 the one pair
