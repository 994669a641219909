"""The unit tier runs without network, pip or model files.

Its models and tokenizer are built in-process into pytest's temporary directory (the byte-level
BPE tokenizer of `core.models.build_tiny_tokenizer` and tiny random Llamas using it), and any
attempt to fetch the default model fails loudly: `REWARDFLOW_CACHE` points at an empty directory
and `core.models.fetch_gguf`, `ensure_tokenizer` and `ensure_default_model` raise.

Tests marked `cluster` here (the reward contract's heavy examples, which build the tiny model with
the default tokenizer through their `example_config()`) run without the guard, with the real
cache. The guard is switched per test in `pytest_runtest_setup`, before any fixture of the test is
set up, so that module-scoped fixtures built for a `cluster` test (a heavy reward) see the real
cache and those built for any other test see the guard.
"""
from __future__ import annotations

import functools
import os

import pytest

from tests.helpers import (free_port, offline_tiny_model, offline_tokenizer, start_reward_server,
                           stop_reward_server, wait_healthy)

DEFAULT_MODEL_FETCHERS = ("fetch_gguf", "ensure_tokenizer", "ensure_default_model")


class DefaultModelGuard:
    """While `on`: REWARDFLOW_CACHE is an empty directory and the default model's fetchers raise."""

    def __init__(self):
        self.on = True
        self.empty_cache: str | None = None  # set by the session fixture
        self.real_cache = os.environ.get("REWARDFLOW_CACHE")

    def switch(self, on: bool) -> None:
        self.on = on
        if self.empty_cache is None:
            return
        if on:
            os.environ["REWARDFLOW_CACHE"] = self.empty_cache
        elif self.real_cache is None:
            os.environ.pop("REWARDFLOW_CACHE", None)
        else:
            os.environ["REWARDFLOW_CACHE"] = self.real_cache

    def wrap(self, name: str, fetch):
        @functools.wraps(fetch)
        def guarded(*args, **kwargs):
            if self.on:
                raise RuntimeError(
                    f"unit tests must not download the default model (core.models.{name} was called): use the "
                    "tiny_model_path / tiny_tokenizer_path / tokenizer fixtures of tests/unit/conftest.py "
                    "(built in-process), or mark the test `cluster`")
            return fetch(*args, **kwargs)
        return guarded


GUARD = DefaultModelGuard()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    GUARD.switch(item.get_closest_marker("cluster") is None)


@pytest.fixture(scope="session", autouse=True)
def no_default_model(tmp_path_factory):
    import core.models

    GUARD.empty_cache = str(tmp_path_factory.mktemp("empty-rewardflow-cache"))
    with pytest.MonkeyPatch.context() as mp:
        for name in DEFAULT_MODEL_FETCHERS:
            mp.setattr(core.models, name, GUARD.wrap(name, getattr(core.models, name)))
        GUARD.switch(GUARD.on)
        yield GUARD
        GUARD.switch(False)
    GUARD.empty_cache = None


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tiny_tokenizer_path(tiny_root) -> str:
    """The in-process byte-level BPE tokenizer (ChatML template; eos <|im_end|>, pad <|endoftext|>)."""
    return str(offline_tokenizer(tiny_root))


@pytest.fixture(scope="session")
def tokenizer(tiny_tokenizer_path):
    from core.models import load_tokenizer

    return load_tokenizer(tiny_tokenizer_path)


@pytest.fixture(scope="session")
def tiny_model_path(tiny_root) -> str:
    """A tiny random Llama (seed 0) with the in-process tokenizer."""
    return str(offline_tiny_model(tiny_root, seed=0))


@pytest.fixture(scope="session")
def tiny_reference_model_path(tiny_root) -> str:
    """Another tiny Llama (seed 1) with the same tokenizer: a reference that differs from the policy."""
    return str(offline_tiny_model(tiny_root, seed=1))


@pytest.fixture(scope="session")
def reward_server(tmp_path_factory):
    """A real `rewardflow serve-reward math_correct` subprocess (max_batch=3) on a free loopback port."""
    port, log = free_port(), tmp_path_factory.mktemp("server") / "server.log"
    proc = start_reward_server(port, log, "max_batch=3")
    try:
        wait_healthy(proc, port, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_reward_server(proc)
