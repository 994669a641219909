"""Per-response sampling seeds (`SamplingSpec.response_seed`, `cluster.groups.RolloutGroup.submit`):
a function of the step's seed and the response's place in the step's batch, whatever the chunks."""
from dataclasses import replace
from types import SimpleNamespace

import numpy as np

from core.protocol import Prompts, SamplingSpec


def _seeds(spec: SamplingSpec, prompts: int) -> list[int]:
    """The seed of every response of a request of `prompts` prompts, in the actor's order."""
    return [spec.response_seed(j) for j in range(prompts * spec.n)]


def test_a_chunk_gets_the_seeds_its_responses_have_in_the_whole_batch():
    spec = SamplingSpec(n=3, max_new_tokens=8, seed=1234)
    whole = _seeds(spec, 5)
    chunks = [replace(spec, first_prompt=lo) for lo in (0, 2, 4)]
    assert _seeds(chunks[0], 2) + _seeds(chunks[1], 2) + _seeds(chunks[2], 1) == whole
    assert len(set(whole)) == len(whole)  # one seed per response
    # another step's seed, the continuation of an interrupted response, the mixture sampler's
    # stream: each a seed of its own
    assert not set(whole) & set(_seeds(replace(spec, seed=1235), 5))
    assert spec.response_seed(4, attempt=2) not in whole and spec.response_seed(0, stream=1) not in whole
    assert SamplingSpec(n=3, max_new_tokens=8).response_seed(0) is None  # no step seed: the engine's own


def test_the_rollout_group_tells_each_chunk_where_it_starts():
    from cluster.groups import RolloutGroup

    sent = []
    actor = SimpleNamespace(generate=SimpleNamespace(remote=lambda prompts, spec, v: sent.append((prompts, spec))))
    pool = SimpleNamespace(live=lambda: [0, 1], submit=lambda call, size=1: call(actor))
    prompts = Prompts(ids=[f"p{i}" for i in range(5)], texts=[""] * 5, token_ids=[np.array([i]) for i in range(5)],
                      answers=[""] * 5)
    spec = SamplingSpec(n=2, max_new_tokens=4, seed=7)
    RolloutGroup.submit(SimpleNamespace(pool=pool), prompts, spec, chunk_prompts=2)
    assert [(list(p.ids), s.first_prompt) for p, s in sent] == [(["p0", "p1"], 0), (["p2", "p3"], 2), (["p4"], 4)]
    assert [x for p, s in sent for x in _seeds(s, len(p))] == _seeds(spec, 5)
