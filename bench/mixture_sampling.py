"""Benchmark: Nash-MD mixture sampling against plain sampling, in one run.

    .venv/bin/python bench/mixture_sampling.py [--prompts 32] [--max-new-tokens 32] [--model default]

Three samplers on the same arithmetic prompts and model (policy = reference = the model, so the
mixture costs what it costs in training):
  (a) plain vLLM sampling (the rollout actor's engine, in-process) — the baseline;
  (b) the rollout actor's geometric-mixture sampler (`learners.sampling`: both models step with
      their own KV caches);
  (c) transformers `generate` with a logits processor that mixes in the reference's logits by
      running the reference over the whole prefix at every step (the obvious way to do it in HF).
Appends a section to docs/benchmarks.md with tokens/s and the ratio against (a).
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

from bench.grpo_default import machine, publish  # noqa: E402


def prompts_for(model_path: str, n: int):
    from core.data import TaskConfig
    from core.data import load_rows, render_prompts
    from core.models import load_tokenizer

    rows, _ = load_rows(TaskConfig())
    return render_prompts(rows[:n], load_tokenizer(model_path), TaskConfig())


def time_vllm(model_path: str, prompts, max_new: int) -> tuple[float, int]:
    from actors.rollout import RolloutActor
    from core.protocol import SamplingSpec

    actor = RolloutActor(model_path, 512, kv_cache_gib=1.0)
    spec = SamplingSpec(n=1, max_new_tokens=max_new, temperature=1.0)
    actor.generate(prompts.select([0]), spec)  # warm-up
    started = time.perf_counter()
    out = actor.generate(prompts, spec)
    return time.perf_counter() - started, sum(len(r) for r in out.response_ids)


def time_mixture(model_path: str, prompts, max_new: int) -> tuple[float, int]:
    import torch

    from core.models import load_policy, load_tokenizer
    from learners.sampling import sample_geometric_mixture

    tok = load_tokenizer(model_path)
    policy, ref = load_policy(model_path).eval(), load_policy(model_path).eval()
    started = time.perf_counter()
    out = sample_geometric_mixture(policy, ref, [p.tolist() for p in prompts.token_ids], 0.5, max_new, 1.0,
                                   {tok.eos_token_id}, tok.pad_token_id, torch.Generator().manual_seed(0))
    return time.perf_counter() - started, sum(len(t) for t in out.token_ids)


def time_hf_generate(model_path: str, prompts, max_new: int) -> tuple[float, int]:
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    from learners.mixture import geometric_mixture_logits
    from core.models import load_policy, load_tokenizer
    from learners.sampling import _left_pad

    tok = load_tokenizer(model_path)
    policy, ref = load_policy(model_path).eval(), load_policy(model_path).eval()

    class MixWithReference(LogitsProcessor):
        def __call__(self, input_ids, scores):
            mask = (input_ids != tok.pad_token_id).long() | attention[:, : input_ids.shape[1]]
            ref_logits = ref(input_ids=input_ids, attention_mask=mask, use_cache=False).logits[:, -1]
            return geometric_mixture_logits(scores, ref_logits.float(), 0.5)

    ids, attention = _left_pad([p.tolist() for p in prompts.token_ids], tok.pad_token_id)
    attention = torch.cat([attention, torch.ones(len(ids), max_new, dtype=torch.long)], dim=1)
    started = time.perf_counter()
    with torch.no_grad():
        out = policy.generate(input_ids=ids, attention_mask=attention[:, : ids.shape[1]], do_sample=True,
                              temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=max_new,
                              logits_processor=LogitsProcessorList([MixWithReference()]),
                              pad_token_id=tok.pad_token_id)
    new = out[:, ids.shape[1]:]
    tokens = int(sum(int((row != tok.pad_token_id).sum()) for row in new))
    return time.perf_counter() - started, tokens


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--model", default="default")
    args = p.parse_args()
    from core.models import resolve_model_path

    model_path = resolve_model_path(args.model)
    prompts = prompts_for(model_path, args.prompts)
    results = {name: fn(model_path, prompts, args.max_new_tokens) for name, fn in (
        ("vLLM plain sampling (baseline)", time_vllm),
        ("rollout actor mixture sampler (2 models, KV caches)", time_mixture),
        ("HF generate + reference-logits processor", time_hf_generate))}
    base = results["vLLM plain sampling (baseline)"]
    rows = "\n".join(f"| {name} | {s:.1f} | {tok} | {tok / s:.1f} | {(tok / s) / (base[1] / base[0]):.2f}x |"
                     for name, (s, tok) in results.items())
    cmd = " ".join(["python bench/mixture_sampling.py", *sys.argv[1:]])
    text = f"""
## Nash-MD mixture sampling vs plain sampling ({datetime.date.today().isoformat()})

- command: `{cmd}`
- machine: {machine()}
- model: {args.model} (policy = reference), {args.prompts} arithmetic prompts, up to {args.max_new_tokens} new tokens, temperature 1, mixture coefficient 0.5
- baseline: plain vLLM sampling in the same run

| sampler | seconds | tokens | tokens/s | throughput vs vLLM |
|---|---|---|---|---|
{rows}
"""
    publish(text)


if __name__ == "__main__":
    main()
