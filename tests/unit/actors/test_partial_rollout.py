"""Partial rollouts (actors/partial_rollout.py): the tokens, logprobs and versions a response keeps
across a weight load, the request that continues it, and the rows it becomes."""
import numpy as np
import pytest

from actors.partial_rollout import PartialSample, rollouts_from_samples
from core.protocol import Prompts, Rollouts
from tests.helpers import make_rollouts

PROMPTS = Prompts(ids=["a", "b"], texts=["A?", "B?"], token_ids=[np.array([7, 8]), np.array([9])], answers=["1", "2"])


def decode(ids):
    return "<" + ",".join(map(str, ids)) + ">"


def test_an_interrupted_sample_continues_from_its_kept_tokens_for_the_rest_of_its_budget():
    s = PartialSample(PROMPTS.token_ids[0], 0)
    assert s.next_request(5) == ([7, 8], 5)
    s.extend([11, 12], [-0.5, -1.0], version=3, text="xy")  # two engine steps under version 3, then a load
    assert s.next_request(5) == ([7, 8, 11, 12], 3)  # prompt + kept tokens; 5 - 2 tokens left
    s.extend([13], [-2.0], version=4, text="z")  # the continued request, under version 4
    s.finish("stop", version=4)
    assert s.finished and (s.token_ids, s.logprobs, s.versions, s.requests) == ([11, 12, 13], [-0.5, -1.0, -2.0], [3, 3, 4], 2)
    # two requests: the text is decoded from every token, not joined from each request's own text
    assert rollouts_from_samples([s], PROMPTS, decode).response_texts == ["<11,12,13>"]


def test_extend_rejects_tokens_without_their_logprobs():
    with pytest.raises(ValueError, match="2 tokens but 1 logprobs"):
        PartialSample(np.array([1]), 0).extend([1, 2], [-0.1], version=0)


def test_rows_carry_every_token_version_and_the_oldest_as_the_row_version():
    mixed, fresh, empty = PartialSample(np.array([7, 8]), 0), PartialSample(np.array([9]), 1), PartialSample(np.array([9]), 1)
    mixed.extend([11, 12], [-0.5, -1.0], 3)
    mixed.extend([13], [-2.0], 4)
    mixed.finish("length", 4)
    fresh.next_request(4)
    fresh.extend([21], [-0.25], 4, text="one request")
    fresh.finish("stop", 4)
    empty.finish("stop", 5)  # no token: its version is the one it ended under
    r = rollouts_from_samples([mixed, fresh, empty], PROMPTS, decode)
    assert r.response_texts[1] == "one request"  # one request: the engine's own text
    assert r.policy_versions.tolist() == [3, 4, 5]
    assert [v.tolist() for v in r.token_versions] == [[3, 3, 4], [4], []]
    # the behaviour logprobs of both versions, in token order, as the learner's correction reads them
    np.testing.assert_array_equal(r.rollout_logprobs[0], np.array([-0.5, -1.0, -2.0], dtype=np.float32))
    assert r.response_ids[0].tolist() == [11, 12, 13] and r.group_ids.tolist() == [0, 1, 1]
    assert r.prompt_ids[1].tolist() == [9] and r.answers == ["1", "2", "2"] and r.finish_reasons == ["length", "stop", "stop"]


def test_unfinished_samples_are_not_rows():
    with pytest.raises(ValueError, match="not finished"):
        rollouts_from_samples([PartialSample(np.array([1]), 0)], PROMPTS, decode)


def test_token_versions_survive_select_and_concat_and_default_to_the_row_version():
    s = PartialSample(np.array([7, 8]), 0)
    s.extend([11, 12], [-0.5, -1.0], 3)
    s.extend([13], [-2.0], 4)
    s.finish("stop", 4)
    with_versions = rollouts_from_samples([s], PROMPTS, decode)
    without = make_rollouts([0], response_ids=[np.array([5, 6])], policy_versions=[2])  # e.g. an older producer
    joined = Rollouts.concat([without, with_versions], [0, 1])
    assert [v.tolist() for v in joined.token_versions] == [[2, 2], [3, 3, 4]]
    assert [v.tolist() for v in joined.select([1]).token_versions] == [[3, 3, 4]]
    assert Rollouts.concat([without, without], [0, 1]).token_versions is None
    assert [v.tolist() for v in without.versions_per_token()] == [[2, 2]]
