"""The `remote` client reward (rewards/remote.py) against real `rewardflow serve-reward` subprocesses:
round trip, batching by the server's max_batch, no retry on 4xx, retries with backoff while the
server is down or restarting."""
import logging
import re

import pytest

from rewards.base import Sample
from rewards.math_correct import MathCorrect
from rewards.remote import Remote, RemoteConfig, RemoteRewardError
from tests.helpers import RIGHT, WRONG, free_port, start_reward_server, stop_reward_server, wait_healthy
from tests.helpers import SERVER_TOKEN as TOKEN


def _remote(url: str, **cfg) -> Remote:
    return Remote(RemoteConfig(url=url, token_env="RF_TEST_TOKEN", **cfg))


def test_remote_reward_round_trip(reward_server, monkeypatch, caplog):
    monkeypatch.setenv("RF_TEST_TOKEN", TOKEN)
    reward = _remote(reward_server)
    assert reward.taxonomy == MathCorrect.taxonomy
    assert reward.score(Sample(**RIGHT)) == 1.0
    # 5 samples go out as two requests (max_batch=3); the unparseable answer costs sample 4 only.
    samples = [Sample(**RIGHT), Sample(**WRONG), Sample("q", "1/2", "0.5"), Sample("q", "7", "7"), Sample("q", "1", "")]
    batch = reward.score_batch(samples)
    assert batch.values == [1.0, 0.0, 1.0, 1.0, 0.0]
    assert batch.errors == [None] * 4 + ["ValueError: reference answer '' does not parse"]
    with pytest.raises(RemoteRewardError, match="reference answer '' does not parse"):
        reward.score(Sample("q", "1", ""))
    with pytest.raises(RemoteRewardError, match=r"/v1/prefer: HTTP 400: reward 'math_correct' is a scalar reward"):
        reward.prefer(Sample(**RIGHT), Sample(**WRONG))
    assert not [r for r in caplog.records if "retry" in r.getMessage()]


def test_remote_reward_does_not_retry_4xx(reward_server, monkeypatch, caplog):
    monkeypatch.setenv("RF_TEST_TOKEN", "wrong")
    with pytest.raises(RemoteRewardError, match=r"/v1/info: HTTP 403: wrong bearer token"):
        _remote(reward_server, retries=3, backoff_s=5.0)
    assert not [r for r in caplog.records if "retry" in r.getMessage()]


def test_remote_reward_gives_up_after_its_retries(caplog):
    url = f"http://127.0.0.1:{free_port()}"
    with caplog.at_level(logging.WARNING, logger="rewards.remote"):
        with pytest.raises(RemoteRewardError, match=r"/v1/info: failed after 3 attempts; last: ConnectError"):
            _remote(url, retries=2, backoff_s=0.01)
    assert [r.getMessage().split("; ")[1] for r in caplog.records] == ["retry 1/2 in 0.01s", "retry 2/2 in 0.02s"]


def test_remote_reward_retries_while_the_server_restarts(monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("RF_TEST_TOKEN", TOKEN)
    port, log = free_port(), tmp_path / "server.log"
    proc = start_reward_server(port, log)
    try:
        wait_healthy(proc, port, log)
        reward = _remote(f"http://127.0.0.1:{port}", retries=100, backoff_s=0.1, max_backoff_s=0.2)
        stop_reward_server(proc)
        proc = start_reward_server(port, log)
        with caplog.at_level(logging.WARNING, logger="rewards.remote"):
            assert reward.score(Sample(**RIGHT)) == 1.0
    finally:
        stop_reward_server(proc)
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    # Refused while the port is closed; a connection the starting server drops reads as a
    # protocol or read error (seen on a loaded machine). Each is retried, and the score arrives.
    assert retries and all(re.search(r"/v1/score: (ConnectError|ReadError|RemoteProtocolError)", m) for m in retries), retries
