"""A response that makes sympy run away (`\\boxed{9^{9^{9}}}`: minutes holding the GIL) costs its
own sample only (value 0, a timeout error) within the configured timeout, in the reward actor
during training and in a real `rewardflow serve-reward` process, whose /healthz keeps answering
meanwhile (rewards/isolation.py: `math_correct` runs in a worker process the timeout kills)."""
import threading
import time

import httpx
import numpy as np
import pytest

from actors.reward import RewardActor
from cluster.recipe import load_recipe
from tests.helpers import RIGHT, SERVER_AUTH, free_port, make_rollouts, start_reward_server, stop_reward_server
from tests.helpers import wait_healthy

pytestmark = pytest.mark.cluster

TIMEOUT_S = 2
RUNAWAY = {"prompt": "What is 1?", "response": "\\boxed{9^{9^{9}}}", "answer": "1"}


@pytest.fixture
def server(tmp_path):
    port, log = free_port(), tmp_path / "server.log"
    proc = start_reward_server(port, log, f"timeout_s={TIMEOUT_S}")
    try:
        wait_healthy(proc, port, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_reward_server(proc)


def test_serve_reward_times_out_a_runaway_sample_and_stays_healthy(server):
    score = f"{server}/v1/score"
    # The first request starts the scoring worker; the runaway one then only costs its timeout.
    assert httpx.post(score, headers=SERVER_AUTH, json={"samples": [RIGHT]}, timeout=60).json()["values"] == [1.0]
    reply = {}

    def send():
        started = time.monotonic()
        reply["resp"] = httpx.post(score, headers=SERVER_AUTH, json={"samples": [RUNAWAY, RIGHT]}, timeout=60)
        reply["elapsed"] = time.monotonic() - started

    sender = threading.Thread(target=send)
    sender.start()
    health = []
    while sender.is_alive() and len(health) < 50:
        started = time.monotonic()
        status = httpx.get(f"{server}/healthz", timeout=1).status_code  # raises past 1 s
        health.append((status, time.monotonic() - started))
        time.sleep(0.2)
    sender.join(timeout=30)
    assert len(health) >= 5 and all(status == 200 and took < 1 for status, took in health), health
    assert reply["resp"].json() == {"values": [0.0, 1.0], "errors": [f"timeout after {TIMEOUT_S}s", None]}
    assert reply["elapsed"] < TIMEOUT_S + 5


def test_reward_actor_times_out_a_runaway_response_and_scores_the_rest():
    cfg = load_recipe("recipes/grpo_arith.yaml", ["rewards=[{name: math_correct}]"])
    texts = ["2 + 2 = 4", RUNAWAY["response"], "It is 5", "\\boxed{4}"]
    rollouts = make_rollouts([0, 0, 1, 1], prompt_ids=[np.array([1])] * 4, response_ids=[np.array([5])] * 4,
                             rollout_logprobs=[np.zeros(1)] * 4, response_texts=texts,
                             prompt_texts=["2 + 2?", "1?", "2 + 2?", "2 + 2?"], answers=["4", "1", "4", "4"])
    actor = RewardActor(cfg.rewards, timeout_s=TIMEOUT_S)
    for score, term in ((actor.score, "math_correct"), (actor.accuracy, "accuracy")):  # training, eval/accuracy
        score(make_rollouts([0], response_texts=["4"], answers=["4"]))  # the worker is up
        started = time.monotonic()
        out = score(rollouts)
        # the timeout, a restart and three normal samples
        assert time.monotonic() - started < TIMEOUT_S + 5
        assert out.terms[term].tolist() == [1.0, 0.0, 0.0, 1.0]
        assert out.errors == [None, f"{term}: timeout after {TIMEOUT_S}s", None, None]
