"""Rollout role: a vLLM engine inside the actor's own process.

`RolloutActor` is a plain class; `cluster.groups` turns it into a Ray actor with the role's
resources. In-process (VLLM_ENABLE_V1_MULTIPROCESSING=0) weight tensors reach the worker as a
plain call, so a reload is one pass of `reload_weights` over the weights streamed from the object
store.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np
import torch

from core.models import configure_vllm_env
from core.protocol import Prompts, Rollouts, SamplingSpec


# Fixed token ids for the functional weight checksum (any ids below the vocabulary size).
PROBE_IDS = [1 + 97 * i % 1000 for i in range(33)]


class WeightReloadExtension:
    """Mixed into vLLM's worker class (`worker_extension_cls`). Method names carry an `rf_`
    prefix so they never clash with the worker's own (`update_weights`, `reload_weights`, ...)."""

    def rf_reload(self, named_tensors) -> None:
        # The in-place reload warns about every layer without checkpoint tensors (rotary
        # embeddings, a tied LM head, handled below) at every sync.
        logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").setLevel(logging.ERROR)
        # CPU kernels repack linear weights at start-up, so `model.load_weights` is wrong after
        # it; the runner's in-place reload re-runs the loader's post-processing.
        self.model_runner.reload_weights(weights_iterator=iter(named_tensors))
        # A tied LM head gets no checkpoint tensor of its own, so the reload skips its
        # post-processing and the CPU backend keeps computing logits from its old packed copy
        # of the embedding. Re-pack it from the (shared, now updated) weight.
        model = self.model_runner.get_model()
        head = getattr(model, "lm_head", None)
        embed = getattr(getattr(model, "model", None), "embed_tokens", None)
        if head is not None and embed is not None and head.weight is embed.weight:
            head.quant_method.process_weights_after_loading(head)


class RolloutActor:
    def __init__(self, model_path: str, max_model_len: int, kv_cache_gib: float = 1.0,
                 gpu_memory_utilization: float = 0.4, dtype: str = "float32", seed: int = 0,
                 reference_path: str | None = None):
        configure_vllm_env(kv_cache_gib)
        from vllm import LLM

        started = time.perf_counter()
        on_gpu = torch.cuda.is_available()
        self.llm = LLM(
            model=model_path, dtype=dtype if on_gpu or dtype == "float32" else "bfloat16",
            max_model_len=max_model_len, seed=seed, enforce_eager=True,
            # Logprobs after temperature, as the learner computes them (logits / T).
            logprobs_mode="processed_logprobs",
            gpu_memory_utilization=gpu_memory_utilization,
            worker_extension_cls=f"{__name__}.WeightReloadExtension",
        )
        # Mixture sampling (Nash-MD, IPO-MD) steps a transformers copy of the policy together with
        # the frozen reference; the copy follows every weight reload.
        self.mixer = None
        if reference_path is not None:
            from core.models import load_policy

            self.mixer = (load_policy(model_path, dtype).eval(), load_policy(reference_path, dtype).eval())
            self.generator = torch.Generator().manual_seed(seed)
        self.start_s = time.perf_counter() - started
        self.version = 0
        self.busy_s = 0.0  # seconds spent generating or reloading (benchmarks read it)

    def generate(self, prompts: Prompts, spec: SamplingSpec) -> Rollouts:
        """`spec.n` samples per prompt from the policy, each prompt's rows together; with
        `spec.mixture_coef` set, one from the policy then one from the geometric policy/reference
        mixture per prompt; with `spec.greedy_per_prompt`, each prompt's greedy response after
        its samples (flagged in `Rollouts.greedy`)."""
        started = time.perf_counter()
        n = len(prompts)
        if spec.mixture_coef is not None:
            both = Rollouts.concat([self._generate_policy(prompts, replace(spec, n=1)),
                                    self._generate_mixture(prompts, spec)], [0, 0])
            out = both.select(np.stack([np.arange(n), n + np.arange(n)], 1).reshape(-1).tolist())
        elif spec.greedy_per_prompt:
            sampled = self._generate_policy(prompts, spec)
            greedy = self._generate_policy(prompts, replace(spec, n=1, temperature=0.0))
            both = Rollouts.concat([sampled, greedy], [0, 0])
            order = np.concatenate([np.arange(n * spec.n).reshape(n, spec.n), n * spec.n + np.arange(n)[:, None]], 1)
            out = replace(both, greedy=np.arange(len(both)) >= n * spec.n).select(order.reshape(-1).tolist())
        else:
            out = self._generate_policy(prompts, spec)
        self.busy_s += time.perf_counter() - started
        return out

    def _generate_mixture(self, prompts: Prompts, spec: SamplingSpec) -> Rollouts:
        from learners.sampling import sample_geometric_mixture

        tok = self.llm.get_tokenizer()
        out = sample_geometric_mixture(
            *self.mixer, [ids.tolist() for ids in prompts.token_ids], spec.mixture_coef, spec.max_new_tokens,
            spec.temperature, {tok.eos_token_id}, tok.pad_token_id or tok.eos_token_id, self.generator)
        n = len(prompts)
        return Rollouts(
            prompt_ids=list(prompts.token_ids),
            response_ids=[np.asarray(t, dtype=np.int64) for t in out.token_ids],
            rollout_logprobs=[np.asarray(lp, dtype=np.float32) for lp in out.logprobs],
            response_texts=[tok.decode(t, skip_special_tokens=True) for t in out.token_ids],
            finish_reasons=out.finish_reasons, group_ids=np.arange(n, dtype=np.int64),
            policy_versions=np.full(n, self.version, dtype=np.int64),
            prompt_texts=list(prompts.texts), answers=list(prompts.answers),
        )

    def _generate_policy(self, prompts: Prompts, spec: SamplingSpec) -> Rollouts:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(
            n=spec.n, max_tokens=spec.max_new_tokens, temperature=spec.temperature,
            top_p=spec.top_p, seed=spec.seed, logprobs=0,
        )
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=ids.tolist()) for ids in prompts.token_ids],
            params, use_tqdm=False,
        )
        cols: dict[str, list] = {k: [] for k in ("prompt_ids", "response_ids", "rollout_logprobs",
                                                 "response_texts", "finish_reasons", "group_ids",
                                                 "prompt_texts", "answers")}
        for g, out in enumerate(outputs):
            for c in out.outputs:
                ids = list(c.token_ids)
                cols["prompt_ids"].append(prompts.token_ids[g])
                cols["response_ids"].append(np.asarray(ids, dtype=np.int64))
                cols["rollout_logprobs"].append(
                    np.asarray([lp[t].logprob for lp, t in zip(c.logprobs, ids)], dtype=np.float32))
                cols["response_texts"].append(c.text)
                cols["finish_reasons"].append(c.finish_reason or "length")
                cols["group_ids"].append(g)
                cols["prompt_texts"].append(prompts.texts[g])
                cols["answers"].append(prompts.answers[g])
        n = len(cols["response_ids"])
        return Rollouts(
            group_ids=np.asarray(cols.pop("group_ids"), dtype=np.int64),
            policy_versions=np.full(n, self.version, dtype=np.int64),
            **cols,
        )

    def load_weights(self, bucket_refs: list, version: int) -> float:
        """In-place reload of every weight from ObjectRefs of buckets in `cluster.weight_sync`
        wire form, in model order; returns seconds spent. One pass of vLLM's reload pulls the
        buckets as it goes (zero-copy views of the object store), so it starts on the first while
        later ones are still being exported."""
        import ray

        from core.wire import from_wire

        def named_tensors():
            for ref in bucket_refs:
                yield from from_wire(ray.get(ref))

        return self._reload(named_tensors(), version)

    def attach_shared_weights(self, descriptor: dict) -> None:
        """Map the learner's shared-memory parameters (read-only views, kept for every sync)."""
        from learners.shared_weights import map_shared

        self.shared_weights = map_shared(descriptor)

    def load_shared_weights(self, version: int) -> float:
        """In-place reload from the learner's parameters themselves (`attach_shared_weights`)."""
        return self._reload(iter(self.shared_weights), version)

    def _reload(self, named_tensors, version: int) -> float:
        started = time.perf_counter()
        received: list[tuple[str, torch.Tensor]] = []

        def passing():
            for item in named_tensors:
                received.append(item)
                yield item

        self.llm.collective_rpc("rf_reload", args=(passing(),))
        self.llm.reset_prefix_cache()
        if self.mixer is not None:
            self.mixer[0].load_state_dict(dict(received), strict=False)
        self.version = version
        self.busy_s += time.perf_counter() - started
        return time.perf_counter() - started

    def checksum(self, probe_ids: list[int] = PROBE_IDS) -> float:
        """Functional checksum of the weights in use: Σ log p(probe token | earlier probe tokens).

        A sum over parameters would miss most weights here: the CPU backend repacks linear layers
        into kernel-private buffers. Any learner can compute the same number (`probe_logprob_sum`).
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        out = self.llm.generate([TokensPrompt(prompt_token_ids=list(probe_ids))],
                                SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0), use_tqdm=False)
        return float(sum(lp[t].logprob for lp, t in zip(out[0].prompt_logprobs[1:], probe_ids[1:])))

    def ready(self) -> float:
        return self.start_s
