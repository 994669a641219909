"""`rewardflow train-rm` recipes: they load, and bad keys give one line (apps/train_rm.py)."""
import pytest

from apps.train_rm import load_rm_config
from core.config import ConfigError


@pytest.mark.parametrize("overrides,message", [
    (["lr_rate=1"], "lr_rate: unknown key"),
    (["lr=0"], "lr: Input should be greater than 0 (got 0)"),
    (["data.train_path=p.jsonl"], "data: set exactly one of data.train_path and data.arithmetic"),
    (["learner.num_workers=2", "batch_size=1"], "batch_size: 1 pairs cannot feed 2 ranks"),
    (["data.arithmetic.task.digits=9"], "data.arithmetic.task.digits: Input should be less than or equal to 6 (got 9)"),
    (["data.arithmetic.sampled.n=0"], "data.arithmetic.sampled.n: Input should be greater than or equal to 1 (got 0)"),
])
def test_train_rm_config_errors_are_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_rm_config("recipes/rm_arith.yaml", overrides)
    assert str(err.value) == message


def test_rm_recipe_loads():
    cfg = load_rm_config("recipes/rm_arith.yaml")
    assert cfg.data.arithmetic is not None and cfg.model.path == "default"
    second = load_rm_config("recipes/rm_arith_sampled.yaml")
    assert second.model.path == "runs/rm_arith/final" and second.data.arithmetic.sampled.policy == "default"
