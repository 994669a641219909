"""Token-level sampling from the geometric mixture of two causal LMs (Nash-MD's opponent).

    π_mix(y_t | x, y_<t) ∝ π(y_t | x, y_<t)^{1−β} · π_ref(y_t | x, y_<t)^{β}

vLLM samples from one model, so the mixture is sampled here with both models stepping together,
each with its own KV cache: per token one cached forward of each model on the last token, the
logits mixed (`geometric_mixture_logits`), temperature applied, one token sampled per row.
No Ray, vLLM or DeepSpeed here.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from core.ops import pad_left, position_ids
from learners.mixture import geometric_mixture_logprobs, sample_mixture_token


@dataclass
class MixtureSamples:
    token_ids: list[list[int]]
    logprobs: list[list[float]]  # log π_mix(sampled token), after temperature
    finish_reasons: list[str]  # "stop" (EOS sampled) or "length"


@torch.no_grad()
def sample_geometric_mixture(
    policy, reference, prompts: list[list[int]], mixture_coef: float, max_new_tokens: int,
    temperature: float, eos_ids: set[int], pad_id: int, generator: torch.Generator | None = None,
) -> MixtureSamples:
    """Sample one response per prompt from π_mix (batched, left-padded, both KV caches kept)."""
    ids, mask = pad_left(prompts, pad_id)
    positions = position_ids(mask)
    caches: list = [None, None]
    batch = len(prompts)
    done = torch.zeros(batch, dtype=torch.bool)
    eos = torch.tensor(sorted(eos_ids), dtype=torch.long)
    tokens: list[list[int]] = [[] for _ in range(batch)]
    logprobs: list[list[float]] = [[] for _ in range(batch)]
    for _ in range(max_new_tokens):
        logits = []
        for k, model in enumerate((policy, reference)):
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                        past_key_values=caches[k], use_cache=True, logits_to_keep=1)
            caches[k] = out.past_key_values
            logits.append(out.logits[:, -1].float())
        step, step_lp = sample_mixture_token(*logits, mixture_coef, temperature, generator)
        for i in torch.nonzero(~done).flatten().tolist():
            tokens[i].append(int(step[i]))
            logprobs[i].append(float(step_lp[i]))
        done |= torch.isin(step, eos)
        if bool(done.all()):
            break
        ids = torch.where(done, torch.full_like(step, pad_id), step)[:, None]
        mask = torch.cat([mask, torch.ones(batch, 1, dtype=mask.dtype)], dim=1)
        positions = positions[:, -1:] + 1
    reasons = ["stop" if t and t[-1] in eos_ids else "length" for t in tokens]
    return MixtureSamples(tokens, logprobs, reasons)


@torch.no_grad()
def mixture_sequence_logprob(policy, reference, prompt: list[int], response: list[int], mixture_coef: float,
                             temperature: float = 1.0) -> float:
    """log π_mix(response | prompt) by full (uncached) forwards: the analytic reference the cached
    sampler is tested against."""
    ids = torch.tensor([prompt + response])
    logits = [m(input_ids=ids, use_cache=False).logits[0, len(prompt) - 1:-1].float() for m in (policy, reference)]
    mixed = geometric_mixture_logprobs(*logits, mixture_coef, temperature)
    return float(mixed.gather(-1, torch.tensor(response)[:, None]).sum())
