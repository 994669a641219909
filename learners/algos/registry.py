"""Algorithm registry: name -> class (its `Config` is the recipe's `algo` section)."""
from learners.algos.base import Algorithm
from learners.algos.grpo import GRPO
from learners.algos.nash_md import NashMD
from learners.algos.online_dpo import IPOMD, OnlineDPO, OnlineIPO
from learners.algos.ppo import PPO
from learners.algos.reinforce_pp import ReinforcePP
from learners.algos.rloo import RLOO

ALGORITHMS: dict[str, type[Algorithm]] = {
    "grpo": GRPO,
    "rloo": RLOO,
    "ppo": PPO,
    "reinforce_pp": ReinforcePP,
    "online_dpo": OnlineDPO,
    "online_ipo": OnlineIPO,
    "ipo_md": IPOMD,
    "nash_md": NashMD,
}


def build_algorithm(cfg) -> Algorithm:
    return ALGORITHMS[cfg.name](cfg)
