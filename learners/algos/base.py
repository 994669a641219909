"""What every algorithm declares and provides. No Ray, vLLM or DeepSpeed here.

The controller reads `needs` to decide which phases run (reference forward, critic, pairs,
mixture sampling, judge); it never branches on an algorithm's name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from cluster.protocol import Rollouts, Scores, TrainBatch
from learners.losses import Normaliser


class AlgoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    lr: float = Field(1e-6, gt=0)
    epochs: int = Field(1, ge=1)
    mini_batches: int = Field(1, ge=1)  # optimiser steps per epoch over one step's batch


@dataclass(frozen=True)
class Needs:
    samples_per_prompt: int
    reference: bool
    critic: bool = False
    pairs: bool = False
    mixture_sampling: bool = False
    judge: bool = False


class Algorithm:
    Config: ClassVar[type[AlgoConfig]]

    def __init__(self, cfg: AlgoConfig):
        self.cfg = cfg

    def needs(self) -> Needs:
        raise NotImplementedError

    def prepare(
        self, rollouts: Rollouts, scores: Scores, tensors: dict[str, torch.Tensor]
    ) -> tuple[TrainBatch, dict[str, float]]:
        """Driver side: turn scored rollouts (+ reference logprobs in `tensors`) into a batch."""
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
