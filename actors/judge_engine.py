"""The `local` judge backend: a vLLM engine inside the reward actor's own process.

Built on the first `complete` call, not at construction, so a recipe whose judge is never asked
starts no engine. Engine start takes tens of seconds (DESIGN.md §8): the reward role's
`timeout_s` must cover it, or the first samples are recorded as timeouts while it starts.
"""
from __future__ import annotations

import threading

from actors.rollout import configure_vllm_env
from learners.models import resolve_model_path
from rewards.judge_backends import LocalJudgeConfig


class LocalJudgeEngine:
    def __init__(self, cfg: LocalJudgeConfig):
        self.cfg = cfg
        self.llm = None
        # vLLM's LLM is not thread-safe; the reward actor may call from a fresh thread after a timeout.
        self._lock = threading.Lock()

    def _build(self):
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
