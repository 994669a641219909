"""Rollout role: a vLLM engine inside the actor's own process.

`RolloutActor` is a plain class; `cluster.groups` turns it into a Ray actor with the role's
resources. In-process (VLLM_ENABLE_V1_MULTIPROCESSING=0) weight tensors reach the worker as a
plain call, so a reload is one pass of `reload_weights` over the weights streamed from the object
store.

With `rollout.interrupt`, weight loads run in the Ray actor's "control" concurrency group, in a
second thread beside the one that generates. Only one thread may use the engine at a time
(`_engine`): a load waits for the engine, and a generation in progress gives it up at its next
engine step, keeping every unfinished response's tokens, then goes on under the new weights
(actors/partial_rollout.py).
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import replace

import numpy as np
import torch

from actors.partial_rollout import PartialSample, rollouts_from_samples
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


class WeightsBehind(RuntimeError):
    """A request's weights (`min_version`) failed to load here: the driver repairs the weight sync
    (a receiver died mid-sync) and sends the request again (cluster/faults.py)."""


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
            # Per-request seeds (`SamplingSpec.response_seed`): the CPU runner cannot rewind a seeded
            # generator for the sample a partial (chunked) prefill discards, so prefills run whole.
            enable_chunked_prefill=on_gpu,
            # Prefix caching shares whole KV blocks only: in the CPU default's (128 tokens) a shorter
            # prompt is prefilled by each of its samples; in 32-token blocks (the smallest the CPU
            # attention takes) they share all of it but its last partial block.
            block_size=None if on_gpu else 32,
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
            self.generator = torch.Generator().manual_seed(seed)  # unless the request has a seed
        self.start_s = time.perf_counter() - started
        self.version = 0
        self.busy_s = 0.0  # seconds spent generating or reloading (benchmarks read it)
        self.tokens_out = 0  # response tokens sampled by the engine so far (tests read it)
        # The engine is not thread-safe: whoever uses it holds `_engine`. A weight load sets
        # `_load_waiting` first, so that a generation in progress gives the engine up between steps.
        self._engine = threading.Condition()
        self._load_waiting = threading.Event()
        self._newest_load = 0  # the newest version whose load has ended (loaded, or failed)
        self._paused_s = 0.0  # seconds the current generation has waited for weight loads
        self._request_ids = itertools.count()

    def generate(self, prompts: Prompts, spec: SamplingSpec, min_version: int = 0) -> Rollouts:
        """`spec.n` samples per prompt from the policy, each prompt's rows together; with
        `spec.mixture_coef` set, one from the policy then one from the geometric policy/reference
        mixture per prompt; with `spec.greedy_per_prompt`, each prompt's greedy response after
        its samples (flagged in `Rollouts.greedy`).

        `min_version`: the newest weights sent before this request. With `rollout.interrupt` their
        load runs in the other concurrency group and may not have begun yet: waiting for it keeps
        every token at least that new, as the in-order queue does without interrupt."""
        with self._engine:
            self._engine.wait_for(lambda: self._newest_load >= min_version)
            if self.version < min_version:
                raise WeightsBehind(f"rollout actor: the weights of version {min_version} failed to load "
                                    f"(still at version {self.version})")
            started, self._paused_s = time.perf_counter(), 0.0
            out = self._generate(prompts, spec)
            self.busy_s += time.perf_counter() - started - self._paused_s
        return out

    def _generate(self, prompts: Prompts, spec: SamplingSpec) -> Rollouts:
        n = len(prompts)
        if spec.mixture_coef is not None:
            both = Rollouts.concat([self._generate_policy(prompts, replace(spec, n=1)),
                                    self._generate_mixture(prompts, spec)], [0, 0])
            return both.select(np.stack([np.arange(n), n + np.arange(n)], 1).reshape(-1).tolist())
        if spec.greedy_per_prompt:
            sampled = self._generate_policy(prompts, spec)
            greedy = self._generate_policy(prompts, replace(spec, n=1, temperature=0.0))
            both = Rollouts.concat([sampled, greedy], [0, 0])
            order = np.concatenate([np.arange(n * spec.n).reshape(n, spec.n), n * spec.n + np.arange(n)[:, None]], 1)
            return replace(both, greedy=np.arange(len(both)) >= n * spec.n).select(order.reshape(-1).tolist())
        return self._generate_policy(prompts, spec)

    def _generate_mixture(self, prompts: Prompts, spec: SamplingSpec) -> Rollouts:
        from learners.sampling import sample_geometric_mixture

        tok = self.llm.get_tokenizer()
        out = sample_geometric_mixture(
            *self.mixer, [ids.tolist() for ids in prompts.token_ids], spec.mixture_coef, spec.max_new_tokens,
            spec.temperature, {tok.eos_token_id}, tok.pad_token_id or tok.eos_token_id,
            self.generator if spec.seed is None else torch.Generator().manual_seed(spec.response_seed(0, stream=1)))
        n = len(prompts)
        return Rollouts(
            prompt_ids=list(prompts.token_ids),
            response_ids=[np.asarray(t, dtype=np.int64) for t in out.token_ids],
            rollout_logprobs=[np.asarray(lp, dtype=np.float32) for lp in out.logprobs],
            response_texts=[tok.decode(t, skip_special_tokens=True) for t in out.token_ids],
            finish_reasons=out.finish_reasons, group_ids=np.arange(n, dtype=np.int64),
            policy_versions=np.full(n, self.version, dtype=np.int64),
            prompt_texts=list(prompts.texts), answers=list(prompts.answers),
            token_versions=[np.full(len(t), self.version, dtype=np.int64) for t in out.token_ids],
        )

    def _generate_policy(self, prompts: Prompts, spec: SamplingSpec) -> Rollouts:
        """`spec.n` responses per prompt, one engine request each, stepped by `_sample`."""
        samples = [PartialSample(ids, g) for g, ids in enumerate(prompts.token_ids) for _ in range(spec.n)]
        self._sample(samples, spec)
        tok = self.llm.get_tokenizer()
        return rollouts_from_samples(samples, prompts, lambda ids: tok.decode(ids, skip_special_tokens=True))

    def _sample(self, samples: list[PartialSample], spec: SamplingSpec) -> None:
        """Step the engine until every sample has finished (called holding `_engine`).

        When a weight load waits for the engine, the unfinished requests are aborted at the step
        boundary, keeping what they sampled; after the load each goes on as a new request from
        its prompt plus kept tokens, for the rest of its budget. Outputs come as deltas, so every
        token is recorded with the version that sampled it."""
        engine = self.llm.llm_engine
        while not all(s.finished for s in samples):
            if self._load_waiting.is_set():  # a weight load waits for the engine: let it in
                paused = time.perf_counter()
                self._engine.wait_for(lambda: not self._load_waiting.is_set())
                self._paused_s += time.perf_counter() - paused
            live: dict[str, PartialSample] = {}  # request id -> its sample
            try:
                for j, sample in enumerate(samples):
                    if not sample.finished:
                        live[self._add_request(sample, j, spec)] = sample
                while live and not self._load_waiting.is_set():
                    for out in engine.step():
                        sample, c = live[out.request_id], out.outputs[0]
                        sample.extend(c.token_ids, [lp[t].logprob for lp, t in zip(c.logprobs, c.token_ids)],
                                      self.version, c.text)
                        self.tokens_out += len(c.token_ids)
                        if out.finished:
                            sample.finish(c.finish_reason or "length", self.version)
                            del live[out.request_id]
            finally:
                if live:  # paused for a load, or failed: leave nothing of ours in the engine
                    engine.abort_request(list(live))

    def _add_request(self, sample: PartialSample, index: int, spec: SamplingSpec) -> str:
        from vllm import SamplingParams
        from vllm.inputs import tokens_input
        from vllm.sampling_params import RequestOutputKind

        prompt, budget = sample.next_request(spec.max_new_tokens)
        params = SamplingParams(
            max_tokens=budget, temperature=spec.temperature, top_p=spec.top_p, logprobs=0,
            seed=spec.response_seed(index, sample.requests),
            output_kind=RequestOutputKind.DELTA,
        )
        request_id = f"rf-{next(self._request_ids)}"
        self.llm.llm_engine.add_request(request_id, tokens_input(prompt), params)
        return request_id

    def weight_device(self) -> str:
        """Where this actor's weights live (`core.collective.device_id`)."""
        from core.collective import device_id

        return device_id()

    def join_weight_group(self, backend: str, layouts: list, host: str, port: int, rank: int, world: int,
                          timeout_s: float, group_ranks: list[int], shared: str | None) -> None:
        """Join the run's broadcast group as `rank` (core/collective.py); buffers for every
        bucket are allocated here, once, or with `shared`, learner rank 0's send buffers on this
        node are mapped (before checking in: rank 0 then removes the file's name)."""
        from core.collective import WeightReceiver, join_group, map_buckets

        buffers = map_buckets(shared, layouts) if shared else None
        store, group = join_group(backend, None, host, port, rank, world, timeout_s, group_ranks)
        self.receiver = WeightReceiver(store, group, layouts, rank, self.weight_device().split(":")[0],
                                       timeout_s, buffers)

    def receive_weights(self, version: int) -> float:
        """In-place reload from the learner's broadcast, bucket by bucket as each arrives."""
        return self._reload(self.receiver.receive(version), version)

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
        """Every weight load: in place, as `version`, once the engine is free. A generation in
        progress in the other thread (`rollout.interrupt`) pauses at its next engine step and
        goes on under these weights (`_sample`); it keeps generating until the first tensor is here."""
        received: list[tuple[str, torch.Tensor]] = []

        def passing(items):
            for item in items:
                received.append(item)
                yield item

        try:
            named_tensors = iter(named_tensors)
            first = next(named_tensors, None)
            tensors = named_tensors if first is None else itertools.chain([first], named_tensors)
            self._load_waiting.set()
            with self._engine:
                self._load_waiting.clear()
                started = time.perf_counter()
                self.llm.collective_rpc("rf_reload", args=(passing(tensors),))
                # Nothing runs now (a paused generation aborted its requests), so the reset cannot
                # fail; a prefix cached under the old weights must not serve a continued response.
                if not self.llm.reset_prefix_cache():
                    raise RuntimeError("rollout actor: the prefix cache could not be reset after a weight load")
                if self.mixer is not None:
                    self.mixer[0].load_state_dict(dict(received), strict=False)
                self.version = version
                seconds = time.perf_counter() - started
                self.busy_s += seconds
        finally:  # loaded or failed: requests waiting for this version go on (`generate`)
            with self._engine:
                self._newest_load = max(self._newest_load, version)
                self._engine.notify_all()
        return seconds

    def checksum(self, probe_ids: list[int] = PROBE_IDS) -> float:
        """Functional checksum of the weights in use: Σ log p(probe token | earlier probe tokens).

        A sum over parameters would miss most weights here: the CPU backend repacks linear layers
        into kernel-private buffers. Any learner can compute the same number (`probe_logprob_sum`).
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        with self._engine:
            out = self.llm.generate([TokensPrompt(prompt_token_ids=list(probe_ids))],
                                    SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0), use_tqdm=False)
        return float(sum(lp[t].logprob for lp, t in zip(out[0].prompt_logprobs[1:], probe_ids[1:])))

    def judge(self, questions: list[str], responses: list[str], judge) -> tuple[list[list[str]], int, float]:
        """The policy as its own judge: `judge.k` answers to the judge prompt of each
        (question, response) from this engine's current weights (`rewards.self_judge`), the
        version that judged, and the weights' functional checksum at that moment."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from rewards.self_judge import render_judge_prompt

        started = time.perf_counter()
        tok = self.llm.get_tokenizer()
        template = judge.template_text()
        texts = [tok.apply_chat_template([{"role": "user", "content": render_judge_prompt(template, q, r)}],
                                         tokenize=False, add_generation_prompt=True)
                 for q, r in zip(questions, responses)]
        prompts = [TokensPrompt(prompt_token_ids=tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
        from vllm.sampling_params import StructuredOutputsParams

        regex = judge.answer_regex()
        params = SamplingParams(n=judge.k, max_tokens=judge.max_new_tokens, temperature=judge.temperature,
                                structured_outputs=StructuredOutputsParams(regex=regex) if regex else None)
        with self._engine:  # judged and checksummed with the same weights
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
            version, checksum = self.version, self.checksum()
            self.busy_s += time.perf_counter() - started
        return [[c.text for c in out.outputs] for out in outputs], version, checksum

    def ready(self) -> float:
        return self.start_s
