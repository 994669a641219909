"""Client reward for a reward hosted by `rewardflow serve-reward` (apps/reward_server.py).

The wire format of that service lives here too, so the server and this client share one schema:

    POST /v1/score   {samples: [{prompt, response, answer, num_tokens}]} -> {values, errors}
    POST /v1/prefer  {pairs: [{a: sample, b: sample}]}                   -> {values, errors}
    GET  /v1/info    -> {reward, summary, taxonomy, pairwise, max_batch}

`errors[i]` is null when sample i was scored; otherwise `values[i]` is 0 and the error says why
(the hosted reward raised or timed out). Connection errors and 5xx answers are retried with
exponential backoff; a 4xx answer is the caller's mistake and is raised at once.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rewards.base import Basis, Expression, Format, Granularity, Reward, RewardConfig, Sample, Taxonomy

log = logging.getLogger(__name__)

TOKEN_ENV = "REWARDFLOW_REWARD_TOKEN"


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WireSample(Wire):
    prompt: str
    response: str
    answer: str = ""
    num_tokens: int = Field(0, ge=0)


class WirePair(Wire):
    a: WireSample
    b: WireSample


class ScoreRequest(Wire):
    samples: list[WireSample]


class PreferRequest(Wire):
    pairs: list[WirePair]


class BatchValues(Wire):
    """One value per sample (or pair); `errors[i]` is None when item i was scored."""

    values: list[float]
    errors: list[str | None]


class WireTaxonomy(Wire):
    basis: Basis
    format: Format
    expression: Expression
    granularity: Granularity


class RewardInfo(Wire):
    reward: str
    summary: str
    taxonomy: WireTaxonomy
    pairwise: bool
    max_batch: int


class RemoteRewardError(RuntimeError):
    """The service refused the request (4xx) or stayed unreachable through every retry."""


class RemoteConfig(RewardConfig):
    """`url` of the service; the bearer token is read from the environment variable `token_env`.

    A call takes at most about (retries + 1)·timeout_s + the backoffs; keep that under the reward
    role's timeout_s (10 s by default), which otherwise cuts the call off first.
    """

    url: str
    token_env: str = TOKEN_ENV
    timeout_s: float = Field(2.0, gt=0)
    retries: int = Field(2, ge=0)
    backoff_s: float = Field(0.25, ge=0)
    max_backoff_s: float = Field(2.0, ge=0)

    @field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https:// (got {url!r})")
        return url.rstrip("/")


def to_wire(sample: Sample) -> dict[str, Any]:
    return dataclasses.asdict(sample)


def from_wire(sample: WireSample) -> Sample:
    return Sample(sample.prompt, sample.response, sample.answer, sample.num_tokens)


class Remote(Reward):
    """A reward scored by a `rewardflow serve-reward` process; its taxonomy is the hosted reward's.

    Building one calls `GET /v1/info` (with retries), so the service must be up by then.
    """

    Config = RemoteConfig
    summary = "a reward hosted by `rewardflow serve-reward`, called over HTTP with retries"
    heavy_example = True

    @classmethod
    def example_config(cls) -> RemoteConfig:
        """There is no example without a running service: the contract test starts one
        (`rewardflow serve-reward` in a thread) and builds this reward against it."""
        raise NotImplementedError("remote: an example needs a running `rewardflow serve-reward`")

    def __init__(self, cfg: RemoteConfig):
        import httpx  # only a remote reward needs an HTTP client

        super().__init__(cfg)
        token = os.environ.get(cfg.token_env)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=cfg.url, headers=headers, timeout=cfg.timeout_s)
        self.info = RewardInfo.model_validate(self._request("GET", "/v1/info"))
        self.taxonomy = Taxonomy(**self.info.taxonomy.model_dump())

    def score(self, sample: Sample) -> float:
        return _single(self.score_batch([sample]))

    def prefer(self, a: Sample, b: Sample) -> float:
        """P(a ≻ b), from a hosted `PairwiseReward`."""
        return _single(self.prefer_batch([(a, b)]))

    def score_batch(self, samples: list[Sample]) -> BatchValues:
        """Scores samples in requests of at most the service's `max_batch` samples each."""
        items = [to_wire(s) for s in samples]
        return self._batched("/v1/score", "samples", items)

    def prefer_batch(self, pairs: list[tuple[Sample, Sample]]) -> BatchValues:
        items = [{"a": to_wire(a), "b": to_wire(b)} for a, b in pairs]
        return self._batched("/v1/prefer", "pairs", items)

    def _batched(self, path: str, key: str, items: list[dict]) -> BatchValues:
        values: list[float] = []
        errors: list[str | None] = []
        step = self.info.max_batch
        for i in range(0, len(items), step):
            part = BatchValues.model_validate(self._request("POST", path, {key: items[i:i + step]}))
            values += part.values
            errors += part.errors
        return BatchValues(values=values, errors=errors)

    def _request(self, method: str, path: str, body: dict | None = None) -> Any:
        import httpx

        cfg = self.cfg
        for attempt in range(cfg.retries + 1):
            try:
                resp = self._client.request(method, path, json=body)
            except httpx.TransportError as e:
                failure = f"{type(e).__name__}: {e}"
            else:
                if resp.status_code < 400:
                    return resp.json()
                failure = f"HTTP {resp.status_code}: {_detail(resp)}"
                if resp.status_code < 500:
                    raise RemoteRewardError(f"{cfg.url}{path}: {failure}")
            if attempt < cfg.retries:
                delay = min(cfg.backoff_s * 2**attempt, cfg.max_backoff_s)
                log.warning("remote reward %s%s: %s; retry %d/%d in %.2fs",
                            cfg.url, path, failure, attempt + 1, cfg.retries, delay)
                time.sleep(delay)
        raise RemoteRewardError(f"{cfg.url}{path}: failed after {cfg.retries + 1} attempts; last: {failure}")

    def close(self) -> None:
        self._client.close()


def _single(batch: BatchValues) -> float:
    if batch.errors[0] is not None:
        raise RemoteRewardError(batch.errors[0])
    return batch.values[0]


def _detail(resp) -> str:
    """The `detail` of an error answer (an httpx.Response), as text."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return detail if isinstance(detail, str) else str(detail)
