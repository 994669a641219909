"""Data contracts (core/protocol.py): padding layout, row selection, concatenation, pairs."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from core.protocol import Rollouts, RolloutTensors, pair_rows


def _rollouts():
    return Rollouts(
        prompt_ids=[np.array([5, 6, 7]), np.array([8])],
        response_ids=[np.array([1, 2]), np.array([3, 4, 9])],
        rollout_logprobs=[np.array([-0.5, -0.25]), np.array([-1.0, -2.0, -3.0])],
        response_texts=["a", "b"], finish_reasons=["stop", "length"],
        group_ids=np.array([0, 0]), policy_versions=np.array([2, 2]),
        prompt_texts=["p", "p"], answers=["1", "1"],
    )


def test_padding_layout_left_prompts_right_responses():
    t = RolloutTensors.from_rollouts(_rollouts(), pad_id=0)
    assert t.input_ids.tolist() == [[5, 6, 7, 1, 2, 0], [0, 0, 8, 3, 4, 9]]
    assert t.attention_mask.tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
    assert t.response_mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    torch.testing.assert_close(t.rollout_logprobs, torch.tensor([[-0.5, -0.25, 0.0], [-1.0, -2.0, -3.0]]))
    assert t.ref_logprobs is None and t.values is None
    # the forward phases add to a new object; the batch carries the reference logprobs along
    ref = torch.full((2, 3), -1.0)
    batch = replace(t, ref_logprobs=ref).batch(torch.tensor([0.5, -0.5]))
    assert batch.ref_logprobs is ref and t.ref_logprobs is None and batch.prompt_len == 3


def test_select_takes_rows_of_every_column():
    r = _rollouts()
    assert r.select([1]).response_texts == ["b"] and r.select([1]).policy_versions.tolist() == [2]
    assert r.select(slice(0, 1)).finish_reasons == ["stop"] and r.select([]).greedy is None
    flagged = replace(r, greedy=np.array([False, True]))
    assert flagged.select([1, 0]).greedy.tolist() == [True, False]
    assert Rollouts.concat([r, flagged], [0, 1]).greedy.tolist() == [False, False, False, True]


def test_concat_offsets_group_ids():
    r = _rollouts()
    joined = Rollouts.concat([r, r], [0, 1])
    assert joined.group_ids.tolist() == [0, 0, 1, 1]
    assert len(joined) == 4 and joined.response_texts == ["a", "b", "a", "b"]


def test_pair_rows_rejects_groups_that_are_not_pairs():
    assert pair_rows(np.array([1, 0, 0, 1])).tolist() == [[1, 2], [0, 3]]
    with pytest.raises(ValueError, match="exactly 2 samples per prompt"):
        pair_rows(np.array([0, 0, 0, 1]))
