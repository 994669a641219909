"""The unit tier cannot reach the default model (tests/unit/conftest.py): its fetchers raise and the
cache is an empty directory. Tests marked `cluster` run without that guard."""
import os

import pytest

import core.models

GUARDED = ("fetch_gguf", "ensure_tokenizer", "ensure_default_model")


@pytest.mark.parametrize("name", GUARDED)
def test_fetching_the_default_model_fails_loudly(name):
    with pytest.raises(RuntimeError, match="unit tests must not download the default model"):
        getattr(core.models, name)()


def test_nothing_reaches_the_default_model_indirectly(tmp_path):
    # the checkpoint tests leave their signing key there; no model file may appear
    assert [p.name for p in core.models.cache_dir().iterdir() if p.name != "checkpoint.key"] == []
    with pytest.raises(RuntimeError, match="unit tests must not download the default model"):
        core.models.resolve_model_path("default")
    with pytest.raises(RuntimeError, match="unit tests must not download the default model"):
        core.models.build_tiny_model(tmp_path / "tiny")  # no tokenizer given: the default model's


def test_the_tiny_fixtures_need_no_default_model(tiny_model_path, tokenizer):
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(tiny_model_path).vocab_size == len(tokenizer)
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|endoftext|>")


@pytest.mark.cluster
def test_cluster_marked_tests_run_without_the_guard(no_default_model):
    assert not no_default_model.on
    assert os.environ.get("REWARDFLOW_CACHE") == no_default_model.real_cache
