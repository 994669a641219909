"""The implicit reward β·(log π − log π_ref): a reward read off a language model's own logprobs.

Taxonomy: basis judge/self (the model is its own reward model), format scalar, expression
implicit, granularity token. It is not a function of the response text: it needs the logprobs of
the response tokens under the model π and under the frozen reference π_ref, which the learner
(or the reference actor) computes. Hence `Implicit.needs_logprobs = True` and a pointwise
`score` that raises; the learner calls `implicit_token_rewards` / `implicit_sequence_reward`
(or the `Implicit` instance's wrappers, which carry β from config).

Shapes: B sequences, T response positions; `mask` is the response mask [B, T] (1 for generated
tokens, 0 for padding). Torch only (layering rule, tests/unit/test_layering.py).
"""
from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from rewards.base import Basis, Expression, Format, Granularity, Reward, RewardConfig, Sample, Taxonomy


def implicit_token_rewards(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, beta: float
) -> torch.Tensor:
    """Per-token implicit reward, [B, T] x [B, T] x [B, T] -> [B, T].

        r_t = β · (log π(y_t | x, y_<t) − log π_ref(y_t | x, y_<t))   where mask_t = 1
        r_t = 0                                                       where mask_t = 0

    The dense reward of DPO's token-level reading (Rafailov et al. 2024, "From r to Q*") and of
    PRIME's implicit process reward model (Cui et al. 2025; Yuan et al. 2024, "Free process
    rewards without process labels"), where π is a model trained with outcome labels only.
    Padding positions are 0 even when their logprobs are ±inf or NaN (selected, not multiplied).
    Gradients flow if the inputs carry them: pass detached logprobs to use this as a reward.
    """
    diff = beta * (logprobs - ref_logprobs)
    return torch.where(mask.bool(), diff, torch.zeros_like(diff))


def implicit_sequence_reward(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, beta: float
) -> torch.Tensor:
    """Sequence-level implicit reward, [B, T] x [B, T] x [B, T] -> [B].

        r(x, y) = Σ_t r_t = β · log π(y | x) / π_ref(y | x)

    DPO's implicit reward (Rafailov et al. 2023, eq. 5) without the β·log Z(x) term, which
    depends on the prompt only and cancels in pairwise preferences and in group-centred
    advantages.
    """
    return implicit_token_rewards(logprobs, ref_logprobs, mask, beta).sum(dim=-1)


class ImplicitConfig(RewardConfig):
    beta: float = Field(0.05, gt=0)


class Implicit(Reward):
    """Marker and β-holder for the implicit reward; the learner computes it from logprobs.

    `needs_logprobs = True` tells the controller and the contract tests that this reward cannot
    run in the reward actor on text: it must be routed to where policy and reference logprobs
    of the response tokens exist.
    """

    Config = ImplicitConfig
    taxonomy = Taxonomy(Basis.JUDGE, Format.SCALAR, Expression.IMPLICIT, Granularity.TOKEN)
    summary = "β·(log π − log π_ref) per token (DPO / PRIME implicit reward): tensor functions, not a recipe term yet"
    needs_logprobs: ClassVar[bool] = True

    def token_rewards(self, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                      response_mask: torch.Tensor) -> torch.Tensor:
        return implicit_token_rewards(logprobs, ref_logprobs, response_mask, self.cfg.beta)

    def sequence_rewards(self, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                         response_mask: torch.Tensor) -> torch.Tensor:
        return implicit_sequence_reward(logprobs, ref_logprobs, response_mask, self.cfg.beta)

    def score(self, sample: Sample) -> float:
        raise NotImplementedError(
            "the implicit reward β·(log π − log π_ref) is computed by the learner from policy and "
            "reference logprobs of the response tokens (Implicit.token_rewards), not from text; "
            "it cannot be scored pointwise in the reward actor")
