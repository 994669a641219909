"""Every registered algorithm's recipe (`recipes/<name>_arith.yaml`) runs 2 steps end to end on
real Ray + vLLM + DeepSpeed with the tiny model (GRPO's runs are in test_e2e.py)."""
import math

import pytest

from cluster.recipe import load_recipe
from learners.algos.registry import ALGORITHMS

pytestmark = pytest.mark.cluster

# recipe -> metrics only that algorithm produces (besides the ones every run logs)
METRICS = {
    "ppo_arith": ("loss/value", "train/value_clip_frac", "train/returns", "timing/critic"),
    "rloo_arith": ("train/clip_frac",),
    "reinforce_pp_arith": ("train/clip_frac",),
    "online_dpo_arith": ("train/reward_margin", "train/pref_accuracy", "train/decided_pair_frac"),
    "online_ipo_arith": ("train/reward_margin", "train/kl"),
    "ipo_md_arith": ("train/reward_margin", "train/kl"),
    "nash_md_arith": ("train/win_rate_vs_mixture", "train/kl", "train/mixture_coef"),
    "self_rewarding_arith": ("judge/parse_rate", "judge/pairs", "train/reward_margin"),
}
# recipe -> (extra overrides, final-step metrics they determine)
EXTRA = {"nash_md_arith": (["algo.mixture_decay=1.0"], {"train/mixture_coef": 0.25}),  # 0.5 / (1 + 1·1)
         # A random tiny model judges only when its answers are held to the score format.
         "self_rewarding_arith": (["algo.samples_per_prompt=3", "algo.judge={k: 2, max_new_tokens: 16, constrained: true}"],
                                  {"judge/parse_rate": 1.0})}


def algo_overrides(model_path: str, out_dir) -> list[str]:
    return [
        f"model.path={model_path}", f"train.output_dir={out_dir}",
        "train.steps=2", "train.prompts_per_step=4", "algo.lr=1e-3",
        "rollout.max_new_tokens=8", "train.eval_max_new_tokens=4", "task.arithmetic.eval_size=4",
        "learner.micro_batch_size=4", "train.save_final=false",
        # A rule the random tiny model meets about half the time, so samples get different rewards.
        "rewards=[{name: answer_format, args: {pattern: '^\\s'}}]",
        "logging.wandb_mode=disabled", "logging.progress_bar=false",
    ]


@pytest.mark.parametrize("recipe", sorted(f"{name}_arith" for name in ALGORITHMS if name != "grpo"))
def test_recipe_runs_two_steps(recipe, tiny_model_path, tmp_path):
    from cluster.launch import train

    extra, expected = EXTRA.get(recipe, ([], {}))
    cfg = load_recipe(f"recipes/{recipe}.yaml", algo_overrides(tiny_model_path, tmp_path) + extra)
    summary = train(cfg)

    assert summary["steps"] == 2
    start, end = summary["rollout_checksums"]["start"], summary["rollout_checksums"]["end"]
    assert start != end, "rollout weights did not change after sync"
    metrics = summary["final_metrics"]
    for key in ("reward/total", "loss/policy", "train/entropy", "rollout/response_len", "timing/update",
                "timing/weight_sync", *METRICS.get(recipe, ())):
        assert math.isfinite(metrics[key]), key
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    for key, value in expected.items():
        assert metrics[key] == value, key


@pytest.fixture(scope="module")
def tiny_reward_model() -> str:
    from core.models import build_tiny_reward_model, cache_dir

    return str(build_tiny_reward_model(cache_dir() / "tiny-reward-model-test"))


@pytest.mark.parametrize("recipe,reward", [("ppo_arith", "reward_model"), ("online_dpo_arith", "reward_model_preference")])
def test_reward_model_drives_ppo_and_ranks_online_dpo_pairs(recipe, reward, tiny_model_path, tiny_reward_model, tmp_path):
    """PPO on the scalar reward model; online DPO ranks its pairs by the reward model's σ(r − r′)."""
    from cluster.launch import train

    overrides = [o for o in algo_overrides(tiny_model_path, tmp_path) if not o.startswith("rewards=")]
    cfg = load_recipe(f"recipes/{recipe}.yaml", overrides + [f"rewards=[{{name: {reward}, args: {{path: {tiny_reward_model}}}}}]",
                                                             "reward.timeout_s=60"])
    summary = train(cfg)

    m = summary["final_metrics"]
    assert m["reward/errors"] == 0
    if reward == "reward_model":
        assert m["reward/reward_model"] != 0 and math.isfinite(m["loss/value"])
    else:
        # σ(r − r′) of two different responses is never exactly ½: every pair is ranked.
        assert m["train/decided_pair_frac"] == 1.0 and math.isfinite(m["train/reward_margin"])
