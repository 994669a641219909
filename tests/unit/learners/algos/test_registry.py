"""The algorithm registry (learners/algos/registry.py): every entry builds from its default config.
(tests/unit/test_algorithm_contract.py checks each one further, from its recipe.)"""
import pytest

from learners.algos.registry import ALGORITHMS


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_algorithm_builds_from_its_default_config(name):
    algo = ALGORITHMS[name](ALGORITHMS[name].Config())
    needs = algo.needs()
    assert needs.samples_per_prompt >= 1
    assert algo.train_rows(3) % algo.rows_per_unit == 0
