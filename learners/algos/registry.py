"""Algorithm registry: name -> class (its `Config` is the recipe's `algo` section)."""
from learners.algos.base import Algorithm
from learners.algos.grpo import GRPO
from learners.algos.rloo import RLOO

ALGORITHMS: dict[str, type[Algorithm]] = {
    "grpo": GRPO,
    "rloo": RLOO,
}


def build_algorithm(cfg) -> Algorithm:
    return ALGORITHMS[cfg.name](cfg)
