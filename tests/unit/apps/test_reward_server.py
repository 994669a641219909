"""Reward service (apps/reward_server.py): the FastAPI app in-process (TestClient), then a real
`rewardflow serve-reward` subprocess on a free 127.0.0.1 port (the `reward_server` fixture) and the
in-process example server. The `remote` client reward against them: tests/unit/rewards/test_remote.py."""
import json
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from apps.cli import main
from apps.reward_server import RewardService, build_app, example_server_url, load_serve_config
from core.config import ConfigError
from rewards.base import Basis, Expression, Format, Granularity, PairwiseReward, Reward, Sample, Taxonomy
from rewards.math_correct import MathCorrect
from rewards.remote import TOKEN_ENV, Remote, RemoteConfig
from tests.helpers import RIGHT, WRONG
from tests.helpers import SERVER_AUTH as AUTH
from tests.helpers import SERVER_TOKEN as TOKEN


class _Hangs(Reward):
    taxonomy = Taxonomy(Basis.RULE, Format.SCALAR, Expression.EXPLICIT, Granularity.SEQUENCE)

    def __init__(self, release: threading.Event):
        super().__init__(None)
        self.release = release

    def score(self, sample):
        self.release.wait(10)
        return 1.0


class _Raises(Reward):
    taxonomy = _Hangs.taxonomy

    def score(self, sample):
        raise RuntimeError("boom")


class _Longer(PairwiseReward):
    """P(a ≻ b) = 1 if a is longer, 0 if shorter, 2 (not a probability) on a tie."""

    taxonomy = Taxonomy(Basis.MODEL, Format.PAIRWISE, Expression.EXPLICIT, Granularity.SEQUENCE)

    def prefer(self, a, b):
        if a.response == b.response:
            return 2.0
        return 1.0 if len(a.response) > len(b.response) else 0.0


def _client(reward: Reward | None = None, token: str | None = TOKEN, **settings) -> TestClient:
    cfg = load_serve_config("math_correct", [f"{k}={v}" for k, v in settings.items()])
    reward = reward or MathCorrect(cfg.args)
    return TestClient(build_app(RewardService("math_correct", reward, cfg), token))


def test_score_values_and_info():
    client = _client()
    resp = client.post("/v1/score", headers=AUTH, json={"samples": [RIGHT, WRONG]})
    assert resp.status_code == 200
    assert resp.json() == {"values": [1.0, 0.0], "errors": [None, None]}
    info = client.get("/v1/info", headers=AUTH).json()
    assert info["taxonomy"] == {"basis": "rule", "format": "scalar", "expression": "explicit", "granularity": "sequence"}
    assert (info["reward"], info["pairwise"], info["max_batch"]) == ("math_correct", False, 256)


@pytest.mark.parametrize("headers,status,detail", [
    ({}, 401, "missing bearer token (Authorization: Bearer <token>)"),
    ({"Authorization": f"Basic {TOKEN}"}, 401, "malformed Authorization header; expected 'Bearer <token>'"),
    ({"Authorization": "Bearer wrong"}, 403, "wrong bearer token"),
])
@pytest.mark.parametrize("method,path", [("POST", "/v1/score"), ("POST", "/v1/prefer"), ("GET", "/v1/info")])
def test_auth_failures(headers, status, detail, method, path):
    resp = _client().request(method, path, headers=headers, json={"samples": [RIGHT]})
    assert (resp.status_code, resp.json()) == (status, {"detail": detail})


def test_health_needs_no_token_and_no_auth_mode_needs_none():
    assert _client().get("/healthz").json() == {"status": "ok"}
    assert _client(token=None).post("/v1/score", json={"samples": [RIGHT]}).json()["values"] == [1.0]


@pytest.mark.parametrize("body,status,detail", [
    (b"{bad", 400, "malformed JSON: Invalid JSON: key must be a string at line 1 column 2"),
    (b"", 400, "malformed JSON: Invalid JSON: EOF while parsing a value at line 1 column 0"),
    (b'{"samples": [{"prompt": "q"}]}', 422, "samples.0.response: Field required"),
    (b'{"samples": [{"prompt": "q", "response": "r", "num_tokens": -1}]}', 422,
     "samples.0.num_tokens: Input should be greater than or equal to 0"),
    (b'{"samples": [], "extra": 1}', 422, "extra: Extra inputs are not permitted"),
    (b"[1, 2]", 422, "body: Input should be an object"),
])
def test_malformed_requests_get_4xx_with_a_message(body, status, detail):
    resp = _client().post("/v1/score", headers=AUTH, content=body)
    assert (resp.status_code, resp.json()) == (status, {"detail": detail})


def test_body_size_limit_is_exact_and_streamed_bodies_are_counted():
    body = json.dumps({"samples": [RIGHT]}).encode()
    assert _client(max_body_bytes=len(body)).post("/v1/score", headers=AUTH, content=body).status_code == 200
    resp = _client(max_body_bytes=len(body) - 1).post("/v1/score", headers=AUTH, content=body)
    assert (resp.status_code, resp.json()["detail"]) == (413, f"request body of {len(body)} bytes exceeds max_body_bytes={len(body) - 1}")
    # A chunked body declares no length: refused once 1000 bytes have arrived.
    chunks = (b" " * 100 for _ in range(20))
    resp = _client(max_body_bytes=1000).post("/v1/score", headers=AUTH, content=chunks)
    assert (resp.status_code, resp.json()["detail"]) == (413, "request body exceeds max_body_bytes=1000")


def test_batch_limit():
    client = _client(max_batch=2)
    assert client.post("/v1/score", headers=AUTH, json={"samples": [RIGHT, WRONG]}).status_code == 200
    resp = client.post("/v1/score", headers=AUTH, json={"samples": [RIGHT, WRONG, RIGHT]})
    assert (resp.status_code, resp.json()) == (413, {"detail": "batch of 3 exceeds max_batch=2"})


def test_raising_and_hanging_rewards_cost_only_their_sample():
    resp = _client(_Raises(None)).post("/v1/score", headers=AUTH, json={"samples": [RIGHT]})
    assert (resp.status_code, resp.json()) == (200, {"values": [0.0], "errors": ["RuntimeError: boom"]})
    release = threading.Event()
    try:
        resp = _client(_Hangs(release), timeout_s=0.2).post("/v1/score", headers=AUTH, json={"samples": [RIGHT]})
        assert (resp.status_code, resp.json()) == (200, {"values": [0.0], "errors": ["timeout after 0.2s"]})
        # Sample 0 starts at once and times out at 0.5 s, past the 0.25 s request budget: sample 1 never starts.
        client = _client(_Hangs(release), timeout_s=0.5, request_timeout_s=0.25)
        resp = client.post("/v1/score", headers=AUTH, json={"samples": [RIGHT, RIGHT]})
        assert resp.json() == {"values": [0.0, 0.0],
                               "errors": ["timeout after 0.5s", "not scored: request_timeout_s=0.25 passed"]}
    finally:
        release.set()


def test_a_batch_waiting_past_its_request_timeout_is_not_scored():
    cfg = load_serve_config("math_correct", ["timeout_s=0.5", "request_timeout_s=0.2"])
    release = threading.Event()
    service = RewardService("hangs", _Hangs(release), cfg)
    first = threading.Thread(target=service.score, args=([Sample(**RIGHT)], time.monotonic()))
    try:
        first.start()
        time.sleep(0.05)
        # The first batch holds the service for 0.5 s; this one gives up waiting after 0.2 s.
        assert service.score([Sample(**RIGHT)] * 2, time.monotonic()).errors == \
            ["not scored: server busy past request_timeout_s=0.2"] * 2
    finally:
        release.set()
        first.join()


def test_pairwise_route_and_route_mismatch():
    short, long_ = {"prompt": "q", "response": "ab"}, {"prompt": "q", "response": "abc"}
    client = _client(_Longer(None))
    pairs = [{"a": long_, "b": short}, {"a": short, "b": long_}, {"a": short, "b": short}]
    assert client.post("/v1/prefer", headers=AUTH, json={"pairs": pairs}).json() == {
        "values": [1.0, 0.0, 0.0], "errors": [None, None, "ValueError: preference 2.0 is not a probability in [0, 1]"]}
    resp = client.post("/v1/score", headers=AUTH, json={"samples": [short]})
    assert (resp.status_code, resp.json()) == (400, {"detail": "reward 'math_correct' is a pairwise reward: use POST /v1/prefer"})
    resp = _client().post("/v1/prefer", headers=AUTH, json={"pairs": pairs})
    assert (resp.status_code, resp.json()) == (400, {"detail": "reward 'math_correct' is a scalar reward: use POST /v1/score"})


def test_start_up_errors_are_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert main(["serve-reward", "nope"]) == 2
    assert capsys.readouterr().err.startswith("rewardflow: error: reward: unknown reward 'nope'; known: answer_format,")
    assert main(["serve-reward", "math_correct", "args.extract=regex"]) == 2
    assert "args.extract: Input should be 'final_answer' or 'math_verify'" in capsys.readouterr().err
    assert main(["serve-reward", "math_correct", "--port", "1"]) == 2
    assert capsys.readouterr().err == (f"rewardflow: error: serve-reward: no token; set {TOKEN_ENV} or pass --token-file "
                                       "(or --no-auth, loopback hosts only)\n")
    with pytest.raises(ConfigError, match="without a token is allowed on a loopback host only"):
        load_serve_config("math_correct", host="0.0.0.0", auth=False)
    recipe = tmp_path / "serve.yaml"
    recipe.write_text("reward: math_correct\nargs: {extract: math_verify}\nmax_batch: 8\n")
    cfg = load_serve_config(str(recipe), ["timeout_s=2"], port=9999)
    assert (cfg.args.extract, cfg.max_batch, cfg.timeout_s, cfg.port, cfg.host) == ("math_verify", 8, 2.0, 9999, "127.0.0.1")


# --- real servers ---------------------------------------------------------------------------


def test_real_server_refuses_oversize_and_malformed_bodies(reward_server):
    resp = httpx.post(f"{reward_server}/v1/score", headers=AUTH, content=b"x" * (2 << 20))
    assert (resp.status_code, resp.json()) == (413, {"detail": f"request body of {2 << 20} bytes exceeds max_body_bytes={1 << 20}"})
    resp = httpx.post(f"{reward_server}/v1/score", headers=AUTH, content=b'{"samples": [')
    assert (resp.status_code, resp.json()["detail"]) == (400, "malformed JSON: Invalid JSON: EOF while parsing a list at line 1 column 13")
    assert httpx.get(f"{reward_server}/healthz").json() == {"status": "ok"}


def test_example_server_serves_math_correct_from_a_thread():
    url = example_server_url()
    assert example_server_url() == url  # one example server per process
    reward = Remote(RemoteConfig(url=url))
    assert reward.info.reward == "math_correct" and reward.taxonomy == MathCorrect.taxonomy
    assert reward.score_batch([Sample(**RIGHT), Sample(**WRONG)]).values == [1.0, 0.0]
