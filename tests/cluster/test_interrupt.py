"""`rollout.interrupt` on real Ray + vLLM, tiny model: a weight load lands in the middle of a long
generation; the responses in progress keep their tokens and go on under the new weights."""
import time

import numpy as np
import pytest
import ray
import torch

from actors.rollout import PROBE_IDS
from cluster.recipe import load_recipe
from core.models import load_policy
from core.protocol import Prompts, SamplingSpec
from core.wire import to_wire
from learners.engine import probe_logprob_sum
from tests.cluster.test_e2e import tiny_overrides

pytestmark = pytest.mark.cluster


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    yield
    ray.shutdown()


def response_logprobs(model, prompt: np.ndarray, response: np.ndarray) -> np.ndarray:
    """log p(response[t] | prompt, response[:t]) under `model`, at temperature 1, [T]."""
    ids = torch.tensor([[*prompt.tolist(), *response.tolist()]])
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits[0, len(prompt) - 1:-1]
    return torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(response)[:, None])[:, 0].numpy()


def test_a_weight_load_mid_generation_continues_every_response_under_the_new_weights(local_ray, tiny_model_path,
                                                                                     tmp_path):
    from cluster.groups import RolloutGroup

    cfg = load_recipe("recipes/grpo_arith.yaml", [*tiny_overrides(tiny_model_path, tmp_path), "train.max_staleness=1",
                                                  "rollout.interrupt=true", "rollout.max_new_tokens=48"])
    rollouts = RolloutGroup.for_recipe(cfg, tiny_model_path)
    old, new = load_policy(tiny_model_path).eval(), load_policy(tiny_model_path).eval()
    noise = torch.Generator().manual_seed(0)
    with torch.no_grad():  # new weights far from the old ones (the tiny model's are ~N(0, 0.02))
        for p in new.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=noise))
    bucket = ray.put(to_wire([(name, p.detach()) for name, p in new.named_parameters()]))
    prompts = Prompts(ids=[f"p{i}" for i in range(16)], texts=[f"p{i}" for i in range(16)],
                      token_ids=[np.array([5 + i, 7, 9]) for i in range(16)], answers=["0"] * 16)
    spec = SamplingSpec(n=2, max_new_tokens=48, temperature=1.0)  # a random model seldom samples EOS: long
    actor = rollouts.actors[0]

    def tokens_out() -> int:  # asked in the control group, so while the actor generates
        return ray.get(actor.__ray_call__.options(concurrency_group="control").remote(lambda self: self.tokens_out))

    try:
        before = rollouts.generate(prompts, spec)
        assert all((v == 0).all() for v in before.token_versions)
        start = tokens_out()
        pending = rollouts.submit(prompts, spec)
        deadline = time.monotonic() + 120
        while tokens_out() < start + 32 * 8:  # every response has ~8 tokens, of at most 48
            assert time.monotonic() < deadline, "the generation made no progress"
            time.sleep(0.01)
        rollouts.start_load_weights([bucket], version=1)
        out = pending.result()
        rollouts.finish_load_weights()

        # Nothing lost: every prompt's two responses, within the token budget across the pause.
        assert out.group_ids.tolist() == np.repeat(np.arange(16), 2).tolist()
        assert all(len(r) == 48 for r, f in zip(out.response_ids, out.finish_reasons) if f == "length")
        assert all(len(r) <= 48 and len(r) == len(lp) == len(v)
                   for r, lp, v in zip(out.response_ids, out.rollout_logprobs, out.token_versions))
        for version, tokens in zip(out.policy_versions, out.token_versions):
            assert version == tokens.min() and (np.diff(tokens) >= 0).all() and set(tokens) <= {0, 1}
        mixed = [i for i, v in enumerate(out.token_versions) if v[0] == 0 and v[-1] == 1]
        assert len(mixed) >= 16, f"{len(mixed)} of 32 responses hold both versions"
        # Each token's kept logprob is that of the weights that sampled it, the prefix included:
        # tokens after the load come from the new weights over prompt + kept tokens.
        for i in mixed[:4]:
            v, lp = out.token_versions[i], out.rollout_logprobs[i]
            under_old = response_logprobs(old, out.prompt_ids[i], out.response_ids[i])
            under_new = response_logprobs(new, out.prompt_ids[i], out.response_ids[i])
            np.testing.assert_allclose(lp[v == 0], under_old[v == 0], atol=2e-3)
            np.testing.assert_allclose(lp[v == 1], under_new[v == 1], atol=2e-3)
            assert np.abs(lp[v == 1] - under_old[v == 1]).max() > 0.1  # the two weights do differ there
        assert rollouts.checksums()[0] == pytest.approx(probe_logprob_sum(new, PROBE_IDS), rel=1e-4)
    finally:
        rollouts.stop()


def test_the_asynchronous_loop_trains_with_interruptible_rollouts(tiny_model_path, tmp_path):
    """Three steps, max_staleness 1, rollout.interrupt: the weight loads overtake requests in the
    rollout actor's control group, yet every token trains at most one version old."""
    from cluster.launch import train

    cfg = load_recipe("recipes/grpo_arith.yaml", [*tiny_overrides(tiny_model_path, tmp_path), "train.steps=3",
                                                  "train.max_staleness=1", "rollout.interrupt=true",
                                                  "rollout.max_new_tokens=48", "train.save_final=false"])
    summary = train(cfg)
    metrics = summary["final_metrics"]
    assert summary["steps"] == 3 and summary["weight_sync"] != "shared_memory"
    assert metrics["async/staleness"] <= 1 and 0 <= metrics["async/token_staleness"] <= metrics["async/staleness"]
    assert 0 <= metrics["async/interrupted_frac"] <= 1
    start, end = summary["rollout_checksums"]["start"], summary["rollout_checksums"]["end"]
    assert start[0] != end[0]
