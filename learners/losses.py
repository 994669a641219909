"""Policy-gradient losses, KL estimators and loss aggregation as pure tensor functions.

Shapes: B sequences, T response positions. `mask` is the response mask [B, T] (1 for generated
tokens, 0 for padding). Per-token functions return [B, T]; `aggregate` reduces to a scalar.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from learners.ops import masked_sum


def clipped_surrogate(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    clip_low: float,
    clip_high: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate per token (Schulman et al. 2017), asymmetric clip as in DAPO.

        ρ = exp(logprobs - old_logprobs)
        L = -min(ρ·A, clip(ρ, 1 - clip_low, 1 + clip_high)·A)

    logprobs, old_logprobs: [B, T]; advantages: [B] (sequence-level, broadcast over T) or [B, T].
    Returns (loss [B, T], clipped [B, T] as float: 1 where the clipped term was the one taken).
    """
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1)
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * advantages
    loss = -torch.minimum(unclipped, clipped)
    return loss, (clipped < unclipped).float()


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(π || π_ref) per token (Schulman 2020, "Approximating KL divergence").

        d = ref_logprobs - logprobs;   k3 = exp(d) - d - 1   (≥ 0, unbiased for samples of π)
    [B, T] -> [B, T]
    """
    d = ref_logprobs - logprobs
    return torch.exp(d) - d - 1.0


@dataclass(frozen=True)
class Normaliser:
    """Global counts of the batch one optimiser step sees, summed over ranks and micro-batches.

    Passing them into every micro-batch's loss makes the summed gradient equal to the gradient
    of the loss over the whole batch, whatever the sharding (shard invariance).
    """

    num_tokens: int
    num_seqs: int
    constant: float = 1.0


AGGREGATIONS = ("token_mean", "seq_mean", "constant")


def aggregate(values: torch.Tensor, mask: torch.Tensor, mode: str, norm: Normaliser) -> torch.Tensor:
    """Reduce per-token values [B, T] to the scalar this shard contributes to the global loss.

        token_mean: Σ_{b,t} m·x / N_tokens                      (DAPO; token-level)
        seq_mean:   Σ_b (Σ_t m·x / Σ_t m) / N_seqs              (original GRPO)
        constant:   Σ_{b,t} m·x / (N_seqs · C)                  (Dr.GRPO, C = max new tokens)

    N_tokens, N_seqs and C come from `norm`, counted over the global batch, so summing this
    value over shards gives the loss of the unsharded batch.
    """
    if mode == "token_mean":
        return masked_sum(values, mask) / max(norm.num_tokens, 1)
    if mode == "seq_mean":
        per_seq = masked_sum(values, mask, dim=-1) / mask.sum(-1).clamp(min=1)
        return per_seq.sum() / max(norm.num_seqs, 1)
    if mode == "constant":
        return masked_sum(values, mask) / (max(norm.num_seqs, 1) * norm.constant)
    raise ValueError(f"loss aggregation must be one of {AGGREGATIONS}, got {mode!r}")
