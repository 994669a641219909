"""Algorithm registry: name -> class (its `Config` is the recipe's `algo` section), imported on
first use. Adding an algorithm is one line here."""
from __future__ import annotations

from core.registry import LazyRegistry

ALGORITHMS = LazyRegistry("algorithm", {
    "grpo": "learners.algos.grpo:GRPO",
    "rloo": "learners.algos.rloo:RLOO",
    "remax": "learners.algos.remax:ReMax",
    "ppo": "learners.algos.ppo:PPO",
    "reinforce_pp": "learners.algos.reinforce_pp:ReinforcePP",
    "online_dpo": "learners.algos.online_dpo:OnlineDPO",
    "online_ipo": "learners.algos.online_dpo:OnlineIPO",
    "ipo_md": "learners.algos.online_dpo:IPOMD",
    "nash_md": "learners.algos.nash_md:NashMD",
    "self_rewarding": "learners.algos.self_rewarding:SelfRewarding",
})


def build_algorithm(cfg):
    """The algorithm named by an `algo` config section, built from it."""
    return ALGORITHMS[cfg.name](cfg)
