"""The reward server under slow, oversized, vanishing and broken clients (apps/reward_server.py):
a real `rewardflow serve-reward` subprocess on a free 127.0.0.1 port, talked to over raw sockets,
plus where the token comes from. All loops are bounded; loopback only."""
import logging
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from apps.cli import main
from apps.reward_server import RewardService, build_app, load_serve_config, serve_in_thread
from rewards.base import Reward
from rewards.math_correct import MathCorrect
from rewards.remote import TOKEN_ENV
from tests.helpers import RIGHT, SERVER_AUTH, SERVER_TOKEN, free_port, stop_reward_server, wait_healthy

READ_TIMEOUT_S = 1.0
MAX_HEADER = 4096


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """`serve-reward math_correct` with a 1 s read timeout and 4 KiB headers, its token from a
    file (none in the environment); yields (port, log path)."""
    root = tmp_path_factory.mktemp("guarded")
    token_file, log = root / "token", root / "server.log"
    token_file.write_text(SERVER_TOKEN + "\n")
    token_file.chmod(0o600)
    port = free_port()
    exe = Path(sys.executable).parent / "rewardflow"
    cmd = [str(exe), "serve-reward", "math_correct", "--port", str(port), "--token-file", str(token_file),
           f"request_read_timeout_s={READ_TIMEOUT_S}", f"max_header_bytes={MAX_HEADER}"]
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_healthy(proc, port, log)
        yield port, log
    finally:
        stop_reward_server(proc)


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT_S + 2)


def _until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes (the socket's timeout bounds each wait), and when."""
    started, out = time.monotonic(), b""
    with sock:
        while chunk := sock.recv(65536):
            out += chunk
    return out, time.monotonic() - started


def _healthy(port: int) -> bool:
    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200


def test_the_token_comes_from_a_file(guarded):
    port, _ = guarded
    url = f"http://127.0.0.1:{port}/v1/score"
    assert httpx.post(url, headers=SERVER_AUTH, json={"samples": [RIGHT]}).json()["values"] == [1.0]
    assert httpx.post(url, headers={"Authorization": "Bearer nope"}, json={"samples": [RIGHT]}).status_code == 403


def test_half_sent_headers_are_dropped_after_the_timeout_while_others_are_served(guarded):
    port, _ = guarded
    stalled = _connect(port)
    stalled.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Le")
    assert _healthy(port)  # another connection is served during the stall
    answer, waited = _until_closed(stalled)
    assert answer.startswith(b"HTTP/1.1 408 ") and answer.endswith(
        b'{"detail": "request headers not received within request_read_timeout_s=1"}')
    assert READ_TIMEOUT_S - 0.2 < waited < READ_TIMEOUT_S + 2
    # A connection that never sends a byte is closed too, without an answer.
    assert _until_closed(_connect(port))[0] == b""


def test_half_sent_body_gets_408_after_the_timeout_while_others_are_served(guarded):
    port, _ = guarded
    stalled = _connect(port)
    stalled.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + SERVER_TOKEN.encode()
                    + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"samples\": [")
    assert _healthy(port)
    answer, waited = _until_closed(stalled)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"connection: close" in answer
    assert answer.endswith(b'{"detail": "request body not received within request_read_timeout_s=1"}')
    assert waited < READ_TIMEOUT_S + 2


@pytest.mark.parametrize("request_bytes", [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2 * MAX_HEADER + b"\r\n\r\n",  # all of it at once
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2 * MAX_HEADER,  # and one that never ends
], ids=["whole", "unterminated"])
def test_oversized_headers_get_431(guarded, request_bytes):
    port, _ = guarded
    sock = _connect(port)
    sock.sendall(request_bytes)
    answer, _ = _until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert answer.endswith(b'{"detail": "request line and headers exceed max_header_bytes=4096"}')
    sock = _connect(port)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEADER - 200) + b"\r\n\r\n")
    assert sock.recv(100).startswith(b"HTTP/1.1 200 ")
    sock.close()


def test_a_client_disconnect_logs_one_line(guarded):
    port, log = guarded
    sock = _connect(port)
    local = f"127.0.0.1:{sock.getsockname()[1]}"
    sock.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + SERVER_TOKEN.encode()
                 + b"\r\nContent-Length: 100\r\n\r\n{\"sam")
    sock.close()
    line = f"serve-reward: client {local} disconnected before the answer (POST /v1/score)"
    deadline = time.monotonic() + 5
    while line not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # anything the server would log after it
    text = log.read_text()
    assert text.count(local) == 1 and line in text
    assert "Traceback" not in text and "Exception in ASGI" not in text
    assert _healthy(port)


# --- in-process -------------------------------------------------------------------------------


class _Slow(Reward):
    taxonomy = MathCorrect.taxonomy

    def score(self, sample):
        time.sleep(1.0)
        return 1.0


@contextmanager
def _server_log():
    """The messages of uvicorn's server logger (where the reward server logs) while inside."""
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("uvicorn.error")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_a_client_leaving_during_scoring_logs_one_line():
    cfg = load_serve_config("math_correct", port=0)
    url = serve_in_thread(build_app(RewardService("slow", _Slow(None), cfg), None), cfg, log_level="info")
    with _server_log() as lines:
        sock = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=5)
        body = b'{"samples": [{"prompt": "q", "response": "r"}]}'
        sock.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        local = sock.getsockname()[1]
        time.sleep(0.3)  # scoring has started
        sock.close()
        time.sleep(1.5)  # scoring ends; the answer has nowhere to go
    assert lines == [
        f"serve-reward: client 127.0.0.1:{local} disconnected before the answer (POST /v1/score)"]


class _Broken(RewardService):
    def score(self, samples, started):
        raise RuntimeError("a bug in the service\nwith a second line")


def test_an_unexpected_error_is_a_503_without_a_traceback():
    cfg = load_serve_config("math_correct")
    client = TestClient(build_app(_Broken("math_correct", MathCorrect(cfg.args), cfg), None))
    with _server_log() as lines:
        resp = client.post("/v1/score", json={"samples": [RIGHT]})
    assert (resp.status_code, resp.json()) == (503, {"detail": "reward server error (RuntimeError); see the server log"})
    assert lines == ["serve-reward: POST /v1/score failed: RuntimeError: a bug in the service; answered 503"]
    assert client.get("/healthz").status_code == 200


# --- where the token comes from --------------------------------------------------------------


@pytest.fixture
def served(monkeypatch):
    """Runs `main([...])` with `serve` replaced: the tokens it would have served with."""
    import apps.reward_server

    tokens: list[str | None] = []
    monkeypatch.setattr(apps.reward_server, "serve", lambda cfg, token: tokens.append(token))
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    return tokens


def _token_file(tmp_path, text: str, mode: int = 0o600) -> str:
    path = tmp_path / "token"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_the_token_comes_from_the_environment_a_file_or_a_visible_flag(served, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert main(["serve-reward", "math_correct"]) == 0
    assert main(["serve-reward", "math_correct", "--token-file", _token_file(tmp_path, "  from-file\n")]) == 0
    assert capsys.readouterr().err == ""
    assert main(["serve-reward", "math_correct", "--token", "from-flag"]) == 0
    assert served == ["from-env", "from-file", "from-flag"]
    assert capsys.readouterr().err == (f"rewardflow: warning: --token is visible in the process list; "
                                       f"use --token-file or {TOKEN_ENV}\n")


@pytest.mark.parametrize("make, message", [
    (lambda tmp: str(tmp / "absent"), "{path}: no such file"),
    (lambda tmp: _token_file(tmp, " \n"), "{path} is empty"),
    (lambda tmp: _token_file(tmp, "two words\n"), "{path} holds more than one word; a token has no spaces"),
    (lambda tmp: _token_file(tmp, "t0ken\n", 0o644), "{path} is open to every user (mode 644); chmod 600 it"),
])
def test_token_file_problems_are_one_line_and_exit_2(served, tmp_path, capsys, make, message):
    path = make(tmp_path)
    assert main(["serve-reward", "math_correct", "--token-file", path]) == 2
    assert capsys.readouterr().err == f"rewardflow: error: serve-reward: --token-file {message.format(path=path)}\n"
    assert served == []


def test_token_and_token_file_together_are_refused(served, tmp_path, capsys):
    assert main(["serve-reward", "math_correct", "--token", "a", "--token-file", _token_file(tmp_path, "b")]) == 2
    assert capsys.readouterr().err == "rewardflow: error: serve-reward: pass --token-file or --token, not both\n"
