"""SFT loss mask, batching and token-mean cross-entropy (learners/sft.py), computed by hand."""
import math

import numpy as np
import torch
from torch.testing import assert_close

from learners.losses import Normaliser
from learners.sft import SFTBatch, collate, example_tokens, prompt_response_tokens, sft_loss, token_nll

LN3 = math.log(3.0)


def test_prompt_tokens_are_context_response_tokens_are_targets():
    ex = prompt_response_tokens([5, 6, 7], [8, 9, 2])
    assert ex.input_ids.tolist() == [5, 6, 7, 8, 9, 2]
    assert ex.loss_mask.tolist() == [0, 0, 0, 1, 1, 1]
    assert ex.input_ids.dtype == np.int64 and ex.num_targets == 3


def test_multi_turn_only_assistant_segments_are_targets_and_nothing_predicts_token_0():
    # system+user | assistant 1 + EOS | user | assistant 2 + EOS
    ex = example_tokens([([1, 2, 3], False), ([10, 2], True), ([4, 5], False), ([11, 12, 2], True)])
    assert ex.input_ids.tolist() == [1, 2, 3, 10, 2, 4, 5, 11, 12, 2]
    assert ex.loss_mask.tolist() == [0, 0, 0, 1, 1, 0, 0, 1, 1, 1]
    # a target segment at the very start: its first token has no prediction
    assert example_tokens([([4, 5], True)]).loss_mask.tolist() == [0, 1]


def test_collate_right_pads_and_masks_padding():
    batch = collate([prompt_response_tokens([5, 6], [7]), prompt_response_tokens([5], [8, 9, 2])], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7, 0], [5, 8, 9, 2]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert batch.loss_mask.tolist() == [[0, 0, 1, 0], [0, 1, 1, 1]]


def test_split_cuts_rows_and_trims_all_padding_columns():
    batch = collate([prompt_response_tokens([5], [6]), prompt_response_tokens([5], [6, 7, 8]),
                     prompt_response_tokens([5], [6, 7])], pad_id=0)
    first, second = batch.split(2)  # bounds ⌊3·k/2⌋ = 0, 1, 3
    assert first.input_ids.tolist() == [[5, 6]]  # 4 columns -> 2: the rest is padding in this row
    assert second.input_ids.tolist() == [[5, 6, 7, 8], [5, 6, 7, 0]]
    assert second.loss_mask.tolist() == [[0, 1, 1, 1], [0, 1, 1, 0]]


def _hand_batch():
    """Two rows, L = 3, V = 2. Row 0: prompt [0, 1], response [1]; row 1: prompt [1], response
    [0], one pad (id 0). Position t predicts token t + 1."""
    batch = SFTBatch(input_ids=torch.tensor([[0, 1, 1], [1, 0, 0]]),
                     attention_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]),
                     loss_mask=torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))
    # logits [ln 3, 0]: p = [3/4, 1/4]; logits [0, 0]: p = [1/2, 1/2]
    logits = torch.tensor([[[0.0, 0.0], [LN3, 0.0], [0.0, 0.0]],
                           [[LN3, 0.0], [0.0, 0.0], [0.0, 0.0]]], requires_grad=True)
    return batch, logits


def test_token_nll_hand_computed():
    batch, logits = _hand_batch()
    # row 0: pos 0 predicts 1 under [1/2, 1/2] -> ln 2; pos 1 predicts 1 under [3/4, 1/4] -> ln 4
    # row 1: pos 0 predicts 0 under [3/4, 1/4] -> ln 4/3; pos 1 predicts the pad 0 -> ln 2
    expected = torch.tensor([[math.log(2), math.log(4)], [math.log(4 / 3), math.log(2)]])
    assert_close(token_nll(logits, batch.input_ids), expected)


def test_loss_is_the_token_mean_over_response_tokens_and_only_they_get_gradient():
    batch, logits = _hand_batch()
    loss = sft_loss(logits, batch.input_ids, batch.loss_mask, Normaliser(num_tokens=2, num_seqs=2))
    # targets: row 0 token 2 (nll ln 4 = 1.386294), row 1 token 1 (nll ln 4/3 = 0.287682); N = 2
    assert_close(loss, torch.tensor((math.log(4) + math.log(4 / 3)) / 2))  # 0.836988
    loss.backward()
    # d nll / d z = (softmax(z) - onehot(y)) / N at the two target predictions; exactly 0 where the
    # predicted token is prompt (row 0 pos 0) or padding (row 1 pos 1), and at the last position
    expected = torch.tensor([[[0.0, 0.0], [0.375, -0.375], [0.0, 0.0]],
                             [[-0.125, 0.125], [0.0, 0.0], [0.0, 0.0]]])
    assert_close(logits.grad, expected)
    assert logits.grad[0, 0].abs().sum() == 0 and logits.grad[1, 1].abs().sum() == 0


def test_two_ranks_and_micro_batches_sum_to_the_global_loss_and_gradient():
    g = torch.Generator().manual_seed(0)
    examples = [prompt_response_tokens(list(range(1, p + 1)), list(range(10, 10 + r)))
                for p, r in [(3, 1), (1, 4), (2, 2), (4, 3), (1, 1), (2, 5)]]
    batch = collate(examples, pad_id=0)
    logits = torch.randn(*batch.input_ids.shape, 16, generator=g, requires_grad=True)
    norm = Normaliser(num_tokens=sum(e.num_targets for e in examples), num_seqs=len(examples))
    whole = sft_loss(logits, batch.input_ids, batch.loss_mask, norm)
    (whole_grad,) = torch.autograd.grad(whole, logits)

    # 2 ranks of 3 rows, rank 1 in 2 micro-batches (bounds 0, 1, 3 of its rows)
    pieces = [(0, 3), (3, 4), (4, 6)]
    losses = [sft_loss(logits[a:b], batch.input_ids[a:b], batch.loss_mask[a:b], norm) for a, b in pieces]
    assert_close(sum(losses), whole)
    assert_close(torch.autograd.grad(sum(losses), logits)[0], whole_grad)
    # the per-shard token mean (each shard over its own count) would not sum to it
    own = [sft_loss(logits[a:b], batch.input_ids[a:b], batch.loss_mask[a:b],
                    Normaliser(int(batch.loss_mask[a:b].sum()), b - a)) for a, b in pieces]
    assert not torch.isclose(sum(own) / len(own), whole)


def test_on_a_real_model_only_positions_predicting_response_tokens_get_gradient():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, head_dim=16))
    examples = [prompt_response_tokens([1, 5, 6, 7], [8, 9, 2]), prompt_response_tokens([1, 4], [10, 11, 12, 13, 2])]
    batch = collate(examples, pad_id=0)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    logits.retain_grad()
    sft_loss(logits, batch.input_ids, batch.loss_mask, Normaliser(num_tokens=8, num_seqs=2)).backward()
    grad = logits.grad.abs().sum(-1)  # [B, L]: position t predicts token t + 1
    # row 0 (length 7): positions 3, 4, 5 predict 8, 9, EOS; row 1 (length 7): positions 1..5
    predicts_response = torch.tensor([[0, 0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    assert (grad[~predicts_response] == 0).all() and (grad[predicts_response] > 0).all()
