"""What every algorithm declares and provides. No Ray, vLLM or DeepSpeed here.

The controller reads `needs` to decide which phases run (reference forward, critic, pairs,
mixture sampling, judge); it never branches on an algorithm's name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator

from core.config import Section
from core.ops import pad_right
from core.protocol import Rollouts, RolloutTensors, Scores, TrainBatch
from learners.advantages import kl_penalized_token_rewards
from learners.losses import (
    Normaliser,
    aggregate,
    clipped_surrogate,
    importance_weights,
    kl_k3,
)


class AlgoConfig(Section):
    """An algorithm's `algo` section; each algorithm extends it with its own knobs."""

    name: str
    lr: float = Field(1e-6, gt=0)
    epochs: int = Field(1, ge=1)
    mini_batches: int = Field(1, ge=1)  # optimiser steps per epoch over one step's batch


# The importance-correction knobs each is_correction mode reads (changing another one is an error).
IS_KNOBS = {"none": set(), "tis": {"is_cap"}, "icepop": {"is_band"}, "seq_mask_tis": {"is_cap", "is_band"}}


class PolicyGradientConfig(AlgoConfig):
    """Knobs of the clipped-surrogate algorithms (GRPO, RLOO, PPO, REINFORCE++, ReMax)."""

    clip_eps: float = Field(0.2, gt=0)
    # Importance correction of the rollout engine's mismatch and staleness (`importance_weights`):
    # none takes the ratio against π_rollout; the others against the learner's own pre-update
    # logprobs π_old, each token weighted from r = π_old/π_rollout, capped at `is_cap` (tis,
    # seq_mask_tis) or zeroed outside `is_band` per token (icepop) or per sequence (seq_mask_tis).
    is_correction: Literal["none", "tis", "icepop", "seq_mask_tis"] = "none"
    is_cap: float = Field(2.0, gt=0)
    is_band: tuple[float, float] = (0.5, 2.0)

    @model_validator(mode="after")
    def _is_knobs_fit_the_mode(self):
        low, high = self.is_band
        if not 0 < low < 1 < high:
            raise ValueError(f"is_band must satisfy 0 < low < 1 < high, got {self.is_band}")
        changed = {k for k in ("is_cap", "is_band") if getattr(self, k) != type(self).model_fields[k].default}
        unused = sorted(changed - IS_KNOBS[self.is_correction])  # defaults pass: a dumped recipe reloads
        if unused:
            raise ValueError(f"{' and '.join(unused)}: no effect with is_correction={self.is_correction}")
        return self


@dataclass(frozen=True)
class Needs:
    samples_per_prompt: int
    reference: bool
    critic: bool = False
    pairs: bool = False
    mixture_sampling: bool = False
    mixture_coef: float = 0.5  # weight of the reference in the sampled mixture
    # The policy judges its own responses (self-rewarding): a `rewards.self_judge.SelfJudgeConfig`,
    # run by the controller's judge phase on the rollout engines; None: no judge phase.
    judge: object | None = None
    # The reference loads the policy's weights at every weight sync (iterative self-rewarding).
    reference_follows_policy: bool = False
    old_logprobs: bool = False  # the learner recomputes π_old before updating (is_correction)
    # One greedy response per prompt beside the sampled ones (`Rollouts.greedy`), scored like
    # them; `prepare` uses it (e.g. as a baseline) and leaves it out of the batch.
    greedy_sample: bool = False


class Algorithm:
    Config: ClassVar[type[AlgoConfig]]
    # Rows that must stay in one shard / micro-batch (2: a chosen/rejected pair).
    rows_per_unit: ClassVar[int] = 1

    def __init__(self, cfg: AlgoConfig):
        self.cfg = cfg

    def needs(self) -> Needs:
        raise NotImplementedError

    def mixture_coef(self, step: int) -> float:
        """Weight of the reference in the mixture sampled for step `step` (mixture sampling only)."""
        return self.needs().mixture_coef

    def train_rows(self, num_prompts: int) -> int:
        """Rows of the batch `prepare` makes from `num_prompts` prompts."""
        return num_prompts * self.needs().samples_per_prompt

    def prepare(
        self, rollouts: Rollouts, scores: Scores, tensors: RolloutTensors
    ) -> tuple[TrainBatch, dict[str, float]]:
        """Driver side: turn scored rollouts and their tensors (with the reference logprobs and
        critic values the algorithm declared it needs) into the learner's batch."""
        raise NotImplementedError

    def normaliser(self, batch: TrainBatch, max_new_tokens: int) -> Normaliser:
        """Global counts of one optimiser step's batch (before it is sharded across ranks)."""
        return Normaliser(
            num_tokens=int(batch.response_mask.sum().item()),
            num_seqs=len(batch),
            constant=float(max_new_tokens),
        )

    def loss(
        self, batch: TrainBatch, logprobs: torch.Tensor, norm: Normaliser
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Learner side: this shard's share of the loss, and per-shard metric tensors."""
        raise NotImplementedError

    def critic_loss(
        self, batch: TrainBatch, values: torch.Tensor, norm: Normaliser
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Critic side (only for algorithms whose `needs().critic`): this shard's value loss."""
        raise NotImplementedError(f"{type(self).__name__} declares no critic")


def clipped_policy_loss(
    batch: TrainBatch, logprobs: torch.Tensor, norm: Normaliser, clip_low: float, clip_high: float,
    kl_coef: float, loss_agg: str, is_correction: str = "none", is_cap: float = 2.0,
    is_band: tuple[float, float] = (0.5, 2.0),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO-style clipped surrogate with `batch.advantages` ([B] or [B, T]), each token's term
    times an importance weight w_t, plus kl_coef · k3(π, π_ref) per token when kl_coef > 0;
    aggregated by `loss_agg`:   ℓ_t = w_t · L_clip(ρ_t, A) + kl_coef · k3_t.

    is_correction none: ρ = π/π_rollout (the behaviour policy that sampled the tokens), w = 1.
    Otherwise (decoupled PPO, Hilton et al. 2021): ρ = π/π_old with π_old the learner's logprobs
    before the update (`batch.old_logprobs`), and w = `importance_weights` of r = π_old/π_rollout
    (tis | icepop | seq_mask_tis, no gradient through w). Masked tokens keep their place in the
    normaliser, as in IcePop's 1/|y| Σ_t: the driver counts tokens before π_old exists.
    """
    mask = batch.response_mask
    old = batch.rollout_logprobs if is_correction == "none" else batch.old_logprobs
    weights, metrics = importance_weights(old, batch.rollout_logprobs, mask, is_correction, is_cap, is_band, norm)
    pg, clipped = clipped_surrogate(logprobs, old, batch.advantages, clip_low=clip_low, clip_high=clip_high)
    pg = pg * weights
    per_token = pg
    metrics.update({"loss/policy": aggregate(pg, mask, loss_agg, norm).detach(),
                    "train/clip_frac": aggregate(clipped, mask, "token_mean", norm)})
    if kl_coef > 0:
        kl = kl_k3(logprobs, batch.ref_logprobs)
        per_token = pg + kl_coef * kl
        metrics["train/kl"] = aggregate(kl, mask, "token_mean", norm).detach()
    return aggregate(per_token, mask, loss_agg, norm), metrics


def token_level_rewards(scores: Scores, tensors: RolloutTensors, kl_coef: float,
                        values: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token rewards [B, T] for token-level advantage estimators (PPO, REINFORCE++).

        r_t = tok_t + [t = last] · (v − Σ_t tok_t) − kl_coef · (log π_rollout − log π_ref)_t

    tok: `scores.token_rewards` when step / token rewards ran (they sum to `scores.values`),
    else 0; v: the sequence rewards [B] (default `scores.values`; an algorithm may pass them
    shifted by a baseline). The KL term needs `tensors.ref_logprobs` (else it is skipped).
    """
    mask = tensors.response_mask
    seq = torch.as_tensor(scores.values, dtype=torch.float32) if values is None else values
    if scores.token_rewards is None:
        return kl_penalized_token_rewards(seq, tensors.rollout_logprobs, tensors.ref_logprobs, mask, kl_coef)
    tokens = pad_right(scores.token_rewards, 0.0, torch.float32, width=mask.shape[1]) * mask
    rest = seq - tokens.sum(-1)
    return tokens + kl_penalized_token_rewards(rest, tensors.rollout_logprobs, tensors.ref_logprobs, mask, kl_coef)
