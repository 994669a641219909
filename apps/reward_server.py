"""`rewardflow serve-reward`: one registered reward served over HTTP.

    REWARDFLOW_REWARD_TOKEN=... rewardflow serve-reward math_correct --port 8765 args.extract=math_verify
    rewardflow serve-reward serve.yaml --token-file ~/.config/rewardflow/token   # a mapping of ServeConfig keys

Every /v1 route needs `Authorization: Bearer <token>` (401 without one, 403 with a wrong one);
/healthz does not. The token comes from --token-file (a file only its owner can read) or
$REWARDFLOW_REWARD_TOKEN; --token still works but shows the token in the process list. The server
binds 127.0.0.1 unless --host says otherwise and refuses to serve without a token unless --no-auth
is given, which only a loopback host accepts.

Bad requests get a 4xx whose `detail` says what is wrong: malformed JSON 400, a body that does not
fit the schema 422, a body over `max_body_bytes` or a batch over `max_batch` 413, a scalar route
on a pairwise reward (or the reverse) 400. Samples are scored one at a time through
`IsolatedRunner`: a reward that raises or runs past `timeout_s` costs that sample (value 0, error
recorded). Samples not started within `request_timeout_s` of the request are not scored either.
Batches run one at a time, so the hosted reward need not be thread-safe.

Slow or abusive clients are handled by `apps/http_guard.py` (deadlines for headers and body,
a header size cap, one log line for a client that leaves, 503 instead of a 500 or a traceback).
The wire schema and the client reward (`remote`) are in rewards/remote.py.
"""
from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, SerializeAsAny
from pydantic import model_validator

from apps.http_guard import RequestGuard, parse_body, protocol_for
from core.config import ConfigError, Section, load_yaml, parse_overrides, set_dotted, validate
from rewards.base import PairwiseReward, Reward, Sample
from rewards.isolation import IsolatedRunner
from rewards.registry import REWARDS, reward_validators
from rewards.remote import TOKEN_ENV, BatchValues, PreferRequest, RewardInfo, ScoreRequest, WireTaxonomy
from rewards.remote import from_wire



class ServeConfig(Section):
    reward: str
    args: SerializeAsAny[BaseModel] | None = Field(None, validate_default=True)
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    auth: bool = True
    timeout_s: float = Field(10.0, gt=0)
    request_timeout_s: float = Field(60.0, gt=0)
    max_batch: int = Field(256, ge=1)
    max_body_bytes: int = Field(1 << 20, ge=1)
    request_read_timeout_s: float = Field(10.0, gt=0)
    max_header_bytes: int = Field(16 << 10, ge=1024)

    _known, _args = reward_validators("reward")

    @model_validator(mode="after")
    def _no_open_service(self):
        if not self.auth and not is_loopback(self.host):
            raise ValueError(f"serving without a token is allowed on a loopback host only (host {self.host})")
        return self


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RewardService:
    """What the routes call: batch checks, isolation, the request deadline, one batch at a time."""

    def __init__(self, name: str, reward: Reward, cfg: ServeConfig):
        self.name, self.reward, self.cfg = name, reward, cfg
        self.pairwise = isinstance(reward, PairwiseReward)
        self._runner = IsolatedRunner(cfg.timeout_s)
        self._lock = threading.Lock()

    def info(self) -> RewardInfo:
        return RewardInfo(reward=self.name, summary=self.reward.summary, pairwise=self.pairwise,
                          taxonomy=WireTaxonomy(**dataclasses.asdict(self.reward.taxonomy)),
                          max_batch=self.cfg.max_batch)

    def check(self, n: int, pairwise: bool) -> None:
        """Raises HTTPException for a batch this service will not score."""
        if pairwise != self.pairwise:
            kind, route = ("pairwise", "/v1/prefer") if self.pairwise else ("scalar", "/v1/score")
            raise HTTPException(400, f"reward {self.name!r} is a {kind} reward: use POST {route}")
        if n > self.cfg.max_batch:
            raise HTTPException(413, f"batch of {n} exceeds max_batch={self.cfg.max_batch}")

    def score(self, samples: list[Sample], started: float) -> BatchValues:
        return self._run(lambda sample: self._runner.call(self.reward, sample), samples, started)

    def prefer(self, pairs: list[tuple[Sample, Sample]], started: float) -> BatchValues:
        return self._run(self._prefer_one, pairs, started)

    def _prefer_one(self, pair: tuple[Sample, Sample]) -> tuple[float, str | None]:
        """P(a ≻ b) through the runner (a worker process for rewards that isolate one)."""
        p, err = self._runner.run(self.reward.prefer, *pair)
        if err is None and not 0.0 <= p <= 1.0:
            return 0.0, f"ValueError: preference {p} is not a probability in [0, 1]"
        return p, err

    def _run(self, scorer: Any, items: list, started: float) -> BatchValues:
        deadline = started + self.cfg.request_timeout_s
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return self._unscored(len(items), "server busy")
        try:
            results = [self._one(scorer, item, deadline) for item in items]
        finally:
            self._lock.release()
        return BatchValues(values=[v for v, _ in results], errors=[e for _, e in results])

    def _one(self, scorer: Any, item: Any, deadline: float) -> tuple[float, str | None]:
        """`scorer(item)` -> (value, error), unless the request's deadline has passed."""
        if time.monotonic() >= deadline:
            return 0.0, f"not scored: request_timeout_s={self.cfg.request_timeout_s:g} passed"
        return scorer(item)

    def _unscored(self, n: int, why: str) -> BatchValues:
        error = f"not scored: {why} past request_timeout_s={self.cfg.request_timeout_s:g}"
        return BatchValues(values=[0.0] * n, errors=[error] * n)


def bearer_auth(token: str | None):
    """A FastAPI dependency: 401 without a bearer token, 403 with a wrong one; no-op if token is None."""

    def check(request: Request) -> None:
        if token is None:
            return
        header = request.headers.get("authorization")
        if not header:
            raise HTTPException(401, "missing bearer token (Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": "Bearer"})
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise HTTPException(401, "malformed Authorization header; expected 'Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})
        if not secrets.compare_digest(given.strip().encode(), token.encode()):
            raise HTTPException(403, "wrong bearer token")

    return check


# -- slow, oversized and vanishing clients ---------------------------------------------------

def build_app(service: RewardService, token: str | None) -> FastAPI:
    app = FastAPI(title=f"rewardflow reward {service.name}", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(RequestGuard, read_timeout_s=service.cfg.request_read_timeout_s,
                       max_header_bytes=service.cfg.max_header_bytes)
    auth = [Depends(bearer_auth(token))]
    limit = service.cfg.max_body_bytes

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/info", dependencies=auth)
    def info() -> RewardInfo:
        return service.info()

    @app.post("/v1/score", dependencies=auth)
    async def score(request: Request) -> BatchValues:
        body: ScoreRequest = await parse_body(request, ScoreRequest, limit)
        service.check(len(body.samples), pairwise=False)
        samples = [from_wire(s) for s in body.samples]
        return await run_in_threadpool(service.score, samples, time.monotonic())

    @app.post("/v1/prefer", dependencies=auth)
    async def prefer(request: Request) -> BatchValues:
        body: PreferRequest = await parse_body(request, PreferRequest, limit)
        service.check(len(body.pairs), pairwise=True)
        pairs = [(from_wire(p.a), from_wire(p.b)) for p in body.pairs]
        return await run_in_threadpool(service.prefer, pairs, time.monotonic())

    return app


def load_serve_config(target: str, overrides: list[str] = (), **flags: Any) -> ServeConfig:
    """`target` is a registered reward name or a YAML file of ServeConfig keys; then key=value
    overrides, then the non-None `flags`. Raises ConfigError naming the key."""
    tree = load_yaml(target, "serve-reward config") if target.endswith((".yaml", ".yml")) else {"reward": target}
    for key, value in parse_overrides(list(overrides)):
        set_dotted(tree, key, value)
    tree.update({k: v for k, v in flags.items() if v is not None})
    return validate(ServeConfig, tree)


def build_served_app(cfg: ServeConfig, token: str | None) -> FastAPI:
    if cfg.auth and not token:
        raise ConfigError(f"serve-reward: no token; set {TOKEN_ENV} or pass --token-file "
                          "(or --no-auth, loopback hosts only)")
    reward = REWARDS[cfg.reward](cfg.args)
    return build_app(RewardService(cfg.reward, reward, cfg), token if cfg.auth else None)


def uvicorn_settings(cfg: ServeConfig, log_level: str) -> dict[str, Any]:
    return {"host": cfg.host, "port": cfg.port, "http": protocol_for(cfg.request_read_timeout_s, cfg.max_header_bytes), "access_log": False,
            "h11_max_incomplete_event_size": cfg.max_header_bytes, "log_level": log_level}


def serve(cfg: ServeConfig, token: str | None) -> None:
    """Builds the reward and serves it until interrupted."""
    import uvicorn

    app = build_served_app(cfg, token)
    print(f"rewardflow: serving reward {cfg.reward!r} on http://{cfg.host}:{cfg.port} "
          f"(auth: {'bearer token' if cfg.auth else 'none'})", flush=True)
    uvicorn.run(app, **uvicorn_settings(cfg, "info"))


def serve_in_thread(app: FastAPI, cfg: ServeConfig, log_level: str = "warning", timeout_s: float = 30) -> str:
    """Serves `app` with `cfg`'s address and limits from uvicorn in a daemon thread of this
    process; returns its base URL. For examples and tests; `port=0` picks a free port."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, **uvicorn_settings(cfg, log_level)))
    thread = threading.Thread(target=server.run, daemon=True, name=f"reward-server-{cfg.reward}")
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"reward server for {cfg.reward!r} on {cfg.host}:{cfg.port} did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://{cfg.host}:{port}"


def start_thread_server(cfg: ServeConfig, token: str | None, timeout_s: float = 30) -> str:
    """`serve_in_thread` for the reward `cfg` names."""
    return serve_in_thread(build_served_app(cfg, token), cfg, timeout_s=timeout_s)


@functools.cache
def example_server_url() -> str:
    """`math_correct` without a token on a free 127.0.0.1 port, one per process (`Remote.example_config`)."""
    return start_thread_server(load_serve_config("math_correct", port=0, auth=False), None)


def read_token(token: str | None, token_file: str | None) -> str | None:
    """The bearer token: from --token-file, else --token (with a warning), else $REWARDFLOW_REWARD_TOKEN.
    A token file must exist, hold one word, and not be readable or writable by every user."""
    if token and token_file:
        raise ConfigError("serve-reward: pass --token-file or --token, not both")
    if token:
        print(f"rewardflow: warning: --token is visible in the process list; use --token-file or {TOKEN_ENV}",
              file=sys.stderr, flush=True)
        return token
    if token_file is None:
        return os.environ.get(TOKEN_ENV) or None
    path = Path(token_file)
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except FileNotFoundError:
        raise ConfigError(f"serve-reward: --token-file {path}: no such file") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"serve-reward: --token-file {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    if mode & 0o006:
        raise ConfigError(f"serve-reward: --token-file {path} is open to every user (mode {mode & 0o777:o}); "
                          "chmod 600 it")
    if not text:
        raise ConfigError(f"serve-reward: --token-file {path} is empty")
    if len(text.split()) != 1:
        raise ConfigError(f"serve-reward: --token-file {path} holds more than one word; a token has no spaces")
    return text


def serve_from_cli(target: str, overrides: list[str], host: str | None, port: int | None,
                   token: str | None, token_file: str | None, no_auth: bool) -> int:
    cfg = load_serve_config(target, overrides, host=host, port=port, auth=False if no_auth else None)
    serve(cfg, read_token(token, token_file))
    return 0
