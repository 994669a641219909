"""The loss (and its gradient) summed over 2 simulated data-parallel ranks equals the global loss."""
import pytest
import torch
from torch.testing import assert_close

from core.protocol import TrainBatch
from learners.algos.grpo import GRPO, GRPOConfig


def _batch(b=6, r=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([5, 3, 1, 4, 2, 5])[:b]
    mask = (torch.arange(r)[None] < lengths[:, None]).float()
    batch = TrainBatch(
        input_ids=torch.zeros(b, 2 + r, dtype=torch.long),
        attention_mask=torch.ones(b, 2 + r, dtype=torch.long),
        response_mask=mask,
        rollout_logprobs=-torch.rand(b, r, generator=g),
        advantages=torch.randn(b, generator=g),
        ref_logprobs=-torch.rand(b, r, generator=g),
    )
    logprobs = (batch.rollout_logprobs + 0.3 * torch.randn(b, r, generator=g)).requires_grad_()
    return batch, logprobs


@pytest.mark.parametrize("loss_agg", ["token_mean", "seq_mean", "constant"])
def test_two_ranks_sum_to_global_loss_and_gradient(loss_agg):
    algo = GRPO(GRPOConfig(loss_agg=loss_agg, kl_coef=0.1, clip_eps=0.1))
    batch, logprobs = _batch()
    norm = algo.normaliser(batch, max_new_tokens=5)

    global_loss, _ = algo.loss(batch, logprobs, norm)
    (global_grad,) = torch.autograd.grad(global_loss, logprobs)

    shard_losses, shard_grads = [], []
    for rank in range(2):
        shard = batch.shard(rank, 2)
        lp = logprobs.detach()[rank * 3:(rank + 1) * 3].clone().requires_grad_()
        loss, _ = algo.loss(shard, lp, norm)
        shard_losses.append(loss)
        shard_grads.append(torch.autograd.grad(loss, lp)[0])
    assert_close(sum(shard_losses), global_loss)
    assert_close(torch.cat(shard_grads), global_grad)


def test_micro_batches_also_sum_to_the_shard_loss():
    algo = GRPO(GRPOConfig(loss_agg="token_mean"))
    batch, logprobs = _batch()
    norm = algo.normaliser(batch, 5)
    whole, _ = algo.loss(batch, logprobs, norm)
    parts = batch.split(4)
    assert [len(p) for p in parts] == [1, 2, 1, 2]  # bounds ⌊6·k/4⌋ = 0, 1, 3, 4, 6
    offsets = [0, 1, 3, 4, 6]
    total = sum(algo.loss(p, logprobs[a:b], norm)[0] for p, a, b in zip(parts, offsets, offsets[1:]))
    assert_close(total, whole)
