"""The weighted-combination recipe (correctness + format + overlong) trains end to end."""
import math

import pytest

from cluster.recipe import load_recipe
from tests.cluster.test_algorithms import algo_overrides

pytestmark = pytest.mark.cluster


def test_weighted_combination_recipe_runs_and_logs_each_term(tiny_model_path, tmp_path):
    from cluster.launch import train

    overrides = [o for o in algo_overrides(tiny_model_path, tmp_path) if not o.startswith("rewards=")]
    # The tiny model's 8-token responses fall in the overlong ramp (4 < L <= 8) or past it.
    cfg = load_recipe("recipes/grpo_arith_combined.yaml", overrides + [
        "algo.group_size=4", "rewards.2.args={max_tokens: 8, cache_tokens: 4}"])
    summary = train(cfg)

    m = summary["final_metrics"]
    terms = {"math_correct": 1.0, "answer_format": 0.1, "overlong": 1.0}
    for name in terms:
        assert math.isfinite(m[f"reward/{name}"]), name
    assert m["reward/overlong"] < 0  # every random 8-token response is penalised
    # Weighted sum is linear, so the batch means combine with the same weights.
    assert m["reward/total"] == pytest.approx(sum(w * m[f"reward/{n}"] for n, w in terms.items()), abs=1e-9)
    assert m["reward/errors"] == 0


def test_implicit_reward_term_gives_reinforce_pp_dense_token_rewards(tiny_model_path, tmp_path):
    """`implicit` as the only term: the reward actor runs π and π_ref over the sampled ids; the
    sequence value is the sum of the per-token values REINFORCE++ trains on."""
    from cluster.launch import train
    from core.models import build_tiny_model, cache_dir

    ref = build_tiny_model(cache_dir() / "tiny-llama-test-seed1", seed=1)
    overrides = [o for o in algo_overrides(tiny_model_path, tmp_path) if not o.startswith("rewards=")]
    cfg = load_recipe("recipes/reinforce_pp_arith.yaml", overrides + [
        f"rewards=[{{name: implicit, args: {{model: {tiny_model_path}, reference: {ref}, beta: 1.0}}}}]",
        "reward.timeout_s=60"])
    summary = train(cfg)

    m = summary["final_metrics"]
    assert m["reward/errors"] == 0
    assert math.isfinite(m["reward/implicit"]) and m["reward/implicit"] != 0
    assert m["reward/total"] == pytest.approx(m["reward/implicit"], abs=1e-9)  # weight 1, no normalisation
    assert math.isfinite(m["loss/policy"])
