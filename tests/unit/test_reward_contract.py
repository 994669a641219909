"""Contract of every registered reward, parametrised over the registry.

Each reward builds from its `example_config()`, scores a small batch (a pairwise reward through
`prefer`), rejects unknown config
keys, reports its four taxonomy tags, and has its row in docs/rewards.md. Rewards whose example
needs a model or a server (`heavy_example = True`) are marked `cluster`: deselected by
`-m "not cluster"`, still run by `make test`.
"""
import math
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import ValidationError

from rewards.base import Basis, Expression, Format, Granularity, PairwiseReward, Sample, Taxonomy
from rewards.catalog import reward_row
from rewards.registry import REWARDS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "rewards.md"
BATCH = [
    Sample("What is 1 + 1?", "2", "2", num_tokens=1),
    Sample("What is 2 + 3?", "2 + 3 = 6. The answer is 6.", "5", num_tokens=12),
    Sample("What is 3 * 3?", "", "9", num_tokens=0),
]


def _registry():
    return [pytest.param(name, id=name, marks=[pytest.mark.cluster] if cls.heavy_example else [])
            for name, cls in REWARDS.items()]


def _remote_example():
    from apps.reward_server import example_server_url
    from rewards.remote import RemoteConfig

    return RemoteConfig(url=example_server_url())


# Rewards whose example needs a service that the test starts itself.
SERVICE_EXAMPLES = {"remote": _remote_example}


def _example(name: str):
    cls = REWARDS[name]
    try:
        cfg = SERVICE_EXAMPLES[name]() if name in SERVICE_EXAMPLES else cls.example_config()
    except ValidationError as e:
        first = e.errors()[0]
        pytest.fail(f"{name}: {cls.__name__}.example_config() does not validate ({'.'.join(map(str, first['loc']))}: "
                    f"{first['msg']}); override it to provide a small working config (rewards/base.py)")
    assert isinstance(cfg, cls.Config), f"{name}: example_config() gave a {type(cfg).__name__}"
    return cfg


# Module scope: a heavy example (a model, a server) is built once per reward.
@pytest.fixture(scope="module", params=_registry())
def name(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def reward(name):
    built = REWARDS[name](_example(name))
    yield built
    if hasattr(built, "close"):  # an in-process engine leaves the process to the next one
        built.close()


def test_config_is_frozen_and_rejects_unknown_keys(name):
    cls = REWARDS[name]
    assert cls.Config.model_config.get("frozen") is True
    with pytest.raises(ValidationError, match="no_such_knob"):
        cls.Config(**dict(_example(name)), no_such_knob=1)


def test_reports_its_four_taxonomy_tags(name, reward):
    t = reward.taxonomy
    assert isinstance(t, Taxonomy)
    assert (type(t.basis), type(t.format), type(t.expression), type(t.granularity)) == \
        (Basis, Format, Expression, Granularity)
    if isinstance(reward, PairwiseReward):
        assert t.format == Format.PAIRWISE
    assert reward.summary and "\n" not in reward.summary


def test_scores_a_batch(name, reward):
    if isinstance(reward, PairwiseReward):
        values = [reward.prefer(s, replace(s, response="I do not know.")) for s in BATCH]
        assert all(0.0 <= v <= 1.0 for v in values), values
    else:
        values = [reward.score(s) for s in BATCH]
        assert all(isinstance(v, float) for v in values), values
    assert all(math.isfinite(v) for v in values), values


def test_has_its_row_in_the_docs_table(name):
    row = "| " + " | ".join(reward_row(name, REWARDS[name])) + " |"
    assert row in DOCS.read_text().splitlines(), f"docs/rewards.md lacks {row!r}: `rewardflow rewards list --markdown`"
