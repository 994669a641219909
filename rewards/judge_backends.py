"""Where a judge's answers come from: `complete(prompts, regex=None) -> list[str]`, one per prompt.

Each prompt is sent as one user message of a chat, so the judge model's chat template applies.
With `regex`, the answer is decoded under that pattern (vLLM structured outputs): in-process for
`local`, as the `structured_outputs` request field for `endpoint` (vLLM servers; other servers
reject or ignore it).

- `endpoint`: any OpenAI-compatible server through the `openai` client (`vllm serve`, a hosted
  API), chat completions at temperature 0 by default, several requests in flight at once.
- `local`: a vLLM engine inside the reward actor's own process (`LocalJudgeEngine`), built on the
  first `complete` call; vLLM is imported only then, so a recipe without a local judge never
  loads it. Engine start takes tens of seconds (DESIGN.md §8): the reward role's `timeout_s`
  must cover it, or the first samples are recorded as timeouts while it starts.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import threading
from typing import Annotated, Literal, Protocol, Union

from pydantic import Field

from core.config import Section


class JudgeBackend(Protocol):
    def complete(self, prompts: list[str], regex: str | None = None) -> list[str]: ...

    def close(self) -> None: ...


class _GenerationConfig(Section):
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

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()


def _api_key(env: str | None) -> str:
    if env is None:
        return "EMPTY"  # the client insists on a key; servers without auth ignore it
    key = os.environ.get(env)
    if not key:
        raise RuntimeError(f"judge backend: environment variable {env} (api_key_env) is not set; "
                           "use api_key_env: null for a server without auth")
    return key


def build_backend(cfg: EndpointJudgeConfig | LocalJudgeConfig) -> JudgeBackend:
    return EndpointBackend(cfg) if isinstance(cfg, EndpointJudgeConfig) else LocalJudgeEngine(cfg)


class LocalJudgeEngine:
    def __init__(self, cfg: LocalJudgeConfig):
        self.cfg = cfg
        self.llm = None
        # vLLM's LLM is not thread-safe; the reward actor may call from a fresh thread after a timeout.
        self._lock = threading.Lock()

    def _build(self):
        from core.models import configure_vllm_env, resolve_model_path

        configure_vllm_env(self.cfg.kv_cache_gib)
        from vllm import LLM

        return LLM(model=resolve_model_path(self.cfg.model_path, "judge.model_path"), dtype=self.cfg.dtype,
                   max_model_len=self.cfg.max_model_len, seed=self.cfg.seed, enforce_eager=True,
                   gpu_memory_utilization=self.cfg.gpu_memory_utilization)

    def _params(self, regex: str | None):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        return SamplingParams(max_tokens=self.cfg.max_tokens, temperature=self.cfg.temperature,
                              structured_outputs=StructuredOutputsParams(regex=regex) if regex else None)

    def complete(self, prompts: list[str], regex: str | None = None) -> list[str]:
        with self._lock:
            if self.llm is None:
                self.llm = self._build()
            outputs = self.llm.chat([[{"role": "user", "content": p}] for p in prompts], self._params(regex),
                                    use_tqdm=False)
        return [out.outputs[0].text for out in outputs]

    def close(self) -> None:
        """Shut the engine down in this process, its process groups with it, so that another
        engine (or another user of torch.distributed) can start here; the next `complete` builds
        a new one."""
        with self._lock:
            llm, self.llm = self.llm, None
            if llm is not None:
                llm.llm_engine.engine_core.shutdown()
