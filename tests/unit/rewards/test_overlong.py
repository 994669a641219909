"""DAPO's overlong soft punishment (rewards/overlong.py)."""
import pytest

from rewards.base import Sample
from rewards.overlong import Overlong, OverlongConfig


@pytest.mark.parametrize("tokens,expected", [
    (10, 0.0),     # L <= 48: no penalty
    (48, 0.0),
    (52, -0.25),   # (48 - 52) / 16
    (64, -1.0),    # (48 - 64) / 16
    (65, -1.0),    # beyond L_max
])
def test_overlong_soft_punishment(tokens, expected):
    r = Overlong(OverlongConfig(max_tokens=64, cache_tokens=16))
    assert r.score(Sample("q", "x", num_tokens=tokens)) == expected


def test_overlong_config_rejects_cache_above_max():
    with pytest.raises(Exception, match="cache_tokens must not exceed max_tokens"):
        OverlongConfig(max_tokens=8, cache_tokens=16)
