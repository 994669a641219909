import numpy as np
import torch

from cluster.protocol import Rollouts, rollouts_to_tensors


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
    t = rollouts_to_tensors(_rollouts(), pad_id=0)
    assert t["input_ids"].tolist() == [[5, 6, 7, 1, 2, 0], [0, 0, 8, 3, 4, 9]]
    assert t["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
    assert t["response_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    torch.testing.assert_close(t["rollout_logprobs"], torch.tensor([[-0.5, -0.25, 0.0], [-1.0, -2.0, -3.0]]))


def test_concat_offsets_group_ids():
    r = _rollouts()
    joined = Rollouts.concat([r, r], [0, 1])
    assert joined.group_ids.tolist() == [0, 0, 1, 1]
    assert len(joined) == 4 and joined.response_texts == ["a", "b", "a", "b"]
