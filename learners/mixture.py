"""The geometric mixture of the policy and the reference used by Nash-MD (pure tensor functions).

    π_mix(y_t | y_<t) ∝ π(y_t | y_<t)^{1-β} · π_ref(y_t | y_<t)^{β}

Munos et al. 2023, "Nash Learning from Human Feedback": the opponent of Nash-MD is sampled
token by token from this mixture (TRL `GeometricMixtureWrapper` does the same). β here is the
mixture coefficient (TRL `mixture_coef`), not the KL coefficient.
"""
from __future__ import annotations

import torch


def _check_mixture_coef(beta: float) -> None:
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"mixture coefficient beta must be in [0, 1], got {beta}")


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def geometric_mixture_logits(
    policy_logits: torch.Tensor, ref_logits: torch.Tensor, beta: float
) -> torch.Tensor:
    """(1-β)·policy_logits + β·ref_logits, [..., V] -> [..., V] (unnormalised log π_mix)."""
    _check_mixture_coef(beta)
    return (1.0 - beta) * policy_logits + beta * ref_logits


def geometric_mixture_logprobs(
    policy_logits: torch.Tensor, ref_logits: torch.Tensor, beta: float
) -> torch.Tensor:
    """log π_mix = log_softmax((1-β)·policy_logits + β·ref_logits) over the last dim.

    policy_logits, ref_logits: [..., V] -> [..., V]. Each logit vector may be shifted by any
    constant (logits or log-probabilities give the same result): the log-softmax absorbs it.
    """
    mixed = _at_least_float32(geometric_mixture_logits(policy_logits, ref_logits, beta))
    return torch.log_softmax(mixed, dim=-1)


def sample_mixture_token(
    policy_logits: torch.Tensor,
    ref_logits: torch.Tensor,
    beta: float,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample one token per row from softmax(mixed logits / temperature).

    policy_logits, ref_logits: [B, V] -> tokens [B] (int64). The temperature applies to the
    mixed logits, as a sampler would apply it to the logits of a single model; temperature 0
    means greedy (argmax of the mixture).
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    mixed = _at_least_float32(geometric_mixture_logits(policy_logits, ref_logits, beta))
    if temperature == 0:
        return mixed.argmax(dim=-1)
    probs = torch.softmax(mixed / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
