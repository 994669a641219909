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
    policy_logits: torch.Tensor, ref_logits: torch.Tensor, beta: float, temperature: float = 1.0
) -> torch.Tensor:
    """log π_mix = log_softmax(((1-β)·policy_logits + β·ref_logits) / T) over the last dim.

    policy_logits, ref_logits: [..., V] -> [..., V]. Each logit vector may be shifted by any
    constant (logits or log-probabilities give the same result): the log-softmax absorbs it.
    The temperature T > 0 applies to the mixed logits, as a sampler applies it to one model's.
    """
    mixed = _at_least_float32(geometric_mixture_logits(policy_logits, ref_logits, beta))
    return torch.log_softmax(mixed / temperature if temperature != 1.0 else mixed, dim=-1)


def sample_mixture_token(
    policy_logits: torch.Tensor,
    ref_logits: torch.Tensor,
    beta: float,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row from π_mix at `temperature` (`geometric_mixture_logprobs`).

    policy_logits, ref_logits: [B, V] -> (tokens [B] int64, log π_mix(token) [B] float32).
    Temperature 0 means greedy (argmax of the mixture), whose log-probability is 0.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        tokens = geometric_mixture_logits(policy_logits, ref_logits, beta).argmax(dim=-1)
        return tokens, torch.zeros(tokens.shape, dtype=torch.float32)
    logprobs = geometric_mixture_logprobs(policy_logits, ref_logits, beta, temperature)
    tokens = torch.multinomial(logprobs.exp(), 1, generator=generator).squeeze(-1)
    return tokens, logprobs.gather(-1, tokens[:, None]).squeeze(-1)
