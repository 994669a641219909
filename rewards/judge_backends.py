"""Where a judge's answers come from: `complete(prompts, regex=None) -> list[str]`, one per prompt.

Each prompt is sent as one user message of a chat, so the judge model's chat template applies.
With `regex`, the answer is decoded under that pattern (vLLM structured outputs): in-process for
`local`, as the `structured_outputs` request field for `endpoint` (vLLM servers; other servers
reject or ignore it).

- `endpoint`: any OpenAI-compatible server through the `openai` client (`vllm serve`, a hosted
  API), chat completions at temperature 0 by default, several requests in flight at once.
- `local`: a vLLM engine inside the reward actor's own process (`actors/judge_engine.py`, which
  this module imports only when that backend is built: rewards/ imports no vLLM).
"""
from __future__ import annotations

import concurrent.futures as cf
import os
from typing import Annotated, Literal, Protocol, Union

from pydantic import BaseModel, ConfigDict, Field


class JudgeBackend(Protocol):
    def complete(self, prompts: list[str], regex: str | None = None) -> list[str]: ...


class _GenerationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0)


class EndpointJudgeConfig(_GenerationConfig):
    kind: Literal["endpoint"] = "endpoint"
    base_url: str  # e.g. http://127.0.0.1:8000/v1
    model: str  # the served model name
    # Environment variable holding the API key; null for servers without auth (plain `vllm serve`).
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(2, ge=0)
    max_concurrency: int = Field(8, ge=1)


class LocalJudgeConfig(_GenerationConfig):
    kind: Literal["local"] = "local"
    model_path: str = "default"  # a local HF model dir; "default" is the embedded SmolLM2-135M-Instruct
    max_model_len: int = Field(2048, ge=16)
    kv_cache_gib: float = Field(1.0, gt=0)
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1)
    dtype: str = "auto"
    seed: int = 0


JudgeBackendConfig = Annotated[Union[EndpointJudgeConfig, LocalJudgeConfig], Field(discriminator="kind")]


class EndpointBackend:
    """Chat completions against an OpenAI-compatible server, one request per prompt."""

    def __init__(self, cfg: EndpointJudgeConfig):
        from openai import OpenAI

        self.cfg = cfg
        self.client = OpenAI(base_url=cfg.base_url, api_key=_api_key(cfg.api_key_env),
                             timeout=cfg.timeout_s, max_retries=cfg.max_retries)
        self._pool = cf.ThreadPoolExecutor(max_workers=cfg.max_concurrency, thread_name_prefix="judge")

    def _one(self, prompt: str, regex: str | None) -> str:
        response = self.client.chat.completions.create(
            model=self.cfg.model, messages=[{"role": "user", "content": prompt}],
            max_tokens=self.cfg.max_tokens, temperature=self.cfg.temperature,
            extra_body={"structured_outputs": {"regex": regex}} if regex else None,
        )
        return response.choices[0].message.content or ""

    def complete(self, prompts: list[str], regex: str | None = None) -> list[str]:
        return list(self._pool.map(lambda p: self._one(p, regex), prompts))


def _api_key(env: str | None) -> str:
    if env is None:
        return "EMPTY"  # the client insists on a key; servers without auth ignore it
    key = os.environ.get(env)
    if not key:
        raise RuntimeError(f"judge backend: environment variable {env} (api_key_env) is not set; "
                           "use api_key_env: null for a server without auth")
    return key


def build_backend(cfg: EndpointJudgeConfig | LocalJudgeConfig) -> JudgeBackend:
    if isinstance(cfg, EndpointJudgeConfig):
        return EndpointBackend(cfg)
    from actors.judge_engine import LocalJudgeEngine

    return LocalJudgeEngine(cfg)
