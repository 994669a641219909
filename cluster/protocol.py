"""Typed data contracts between phases. No Ray here: these travel through the object store.

Ragged per-sample data (token ids of different lengths) stays as lists of numpy arrays until the
algorithm's `prepare` pads it into a `TrainBatch` of tensors.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch


@dataclass
class Prompts:
    """One row per prompt. `token_ids` already carry the chat template."""

    ids: list[str]
    texts: list[str]
    token_ids: list[np.ndarray]
    answers: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, idx: list[int]) -> "Prompts":
        return Prompts(*[[getattr(self, f.name)[i] for i in idx] for f in fields(self)])


@dataclass
class SamplingSpec:
    """What the rollout actor is asked to do with a batch of prompts."""

    n: int
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    # Set: one sample from the policy and one from π^{1−c}·π_ref^{c} per prompt (Nash-MD, IPO-MD).
    mixture_coef: float | None = None


@dataclass
class Rollouts:
    """One row per generated sample; `group_ids[i]` indexes the prompt it answers."""

    prompt_ids: list[np.ndarray]
    response_ids: list[np.ndarray]
    rollout_logprobs: list[np.ndarray]
    response_texts: list[str]
    finish_reasons: list[str]
    group_ids: np.ndarray
    policy_versions: np.ndarray
    prompt_texts: list[str]
    answers: list[str]

    def __len__(self) -> int:
        return len(self.response_ids)

    @staticmethod
    def concat(parts: list["Rollouts"], group_offsets: list[int]) -> "Rollouts":
        """Join the rollouts of several actors; `group_offsets` shifts each part's group ids."""
        out = {}
        for f in fields(Rollouts):
            vals = [getattr(p, f.name) for p in parts]
            if f.name == "group_ids":
                out[f.name] = np.concatenate([v + off for v, off in zip(vals, group_offsets)])
            elif isinstance(vals[0], np.ndarray):
                out[f.name] = np.concatenate(vals)
            else:
                out[f.name] = [x for v in vals for x in v]
        return Rollouts(**out)


@dataclass
class Scores:
    """Per-sample reward: the combined value, each term, and why a sample failed (None if not).

    `preferences[g]` is P(first sample of group g ≻ second), set by a pairwise reward for
    algorithms that train on pairs; None when only pointwise rewards ran.
    """

    values: np.ndarray
    terms: dict[str, np.ndarray]
    errors: list[str | None]
    preferences: np.ndarray | None = None
    # When step / token rewards ran: per-sample token rewards [T_i] summing to `values[i]`.
    token_rewards: list[np.ndarray] | None = None

    @property
    def num_errors(self) -> int:
        return sum(e is not None for e in self.errors)


@dataclass
class TermScores:
    """What a reward actor returns for its share of the batch: each term's raw per-sample values
    and per-sample errors. The driver combines the whole step's terms into `Scores`."""

    terms: dict[str, np.ndarray]
    errors: list[str | None]
    preferences: np.ndarray | None = None  # per group (pair), when pairwise rewards ran
    # Step / token granularity terms: each sample's per-response-token values, [T_i].
    token_terms: dict[str, list[np.ndarray]] = field(default_factory=dict)

    @staticmethod
    def concat(parts: list["TermScores"]) -> "TermScores":
        prefs = None if parts[0].preferences is None else np.concatenate([p.preferences for p in parts])
        return TermScores(terms={k: np.concatenate([p.terms[k] for p in parts]) for k in parts[0].terms},
                          errors=[e for p in parts for e in p.errors], preferences=prefs,
                          token_terms={k: [v for p in parts for v in p.token_terms[k]] for k in parts[0].token_terms})


@dataclass
class TrainBatch:
    """Padded tensors the learner consumes. Layout: prompt left-padded to P, response right-padded
    to R, so `input_ids` is [B, P + R] and every response tensor is [B, R], aligned with
    `input_ids[:, P:]`."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    rollout_logprobs: torch.Tensor
    advantages: torch.Tensor
    ref_logprobs: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def prompt_len(self) -> int:
        return self.input_ids.shape[1] - self.response_mask.shape[1]

    def map(self, fn) -> "TrainBatch":
        """Apply `fn` to every tensor (row selection, device moves)."""
        return replace(
            self,
            **{f.name: None if getattr(self, f.name) is None else fn(getattr(self, f.name))
               for f in fields(self) if f.name != "extras"},
            extras={k: fn(v) for k, v in self.extras.items()},
        )

    def select(self, idx: torch.Tensor | slice) -> "TrainBatch":
        return self.map(lambda t: t[idx])

    def to(self, device: str | torch.device) -> "TrainBatch":
        return self.map(lambda t: t.to(device))

    def shard(self, rank: int, world_size: int, unit: int = 1) -> "TrainBatch":
        """Contiguous shard for one data-parallel rank (sizes differ by at most one unit).

        `unit` rows always stay together (2 for algorithms that train on chosen/rejected pairs).
        """
        bounds = np.linspace(0, len(self) // unit, world_size + 1).astype(int) * unit
        return self.select(slice(bounds[rank], bounds[rank + 1]))


def pad_left(seqs: list[np.ndarray], pad: int) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            out[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
    return out


def pad_right(seqs: list[np.ndarray], pad: float | int, dtype=torch.long, width: int | None = None) -> torch.Tensor:
    width = width or max(max(len(s) for s in seqs), 1)
    out = torch.full((len(seqs), width), pad, dtype=dtype)
    for i, s in enumerate(seqs):
        if len(s):
            out[i, : len(s)] = torch.tensor(np.asarray(s), dtype=dtype)
    return out


def rollouts_to_tensors(rollouts: Rollouts, pad_id: int) -> dict[str, torch.Tensor]:
    """The padded tensors every algorithm starts from."""
    prompts = pad_left(rollouts.prompt_ids, pad_id)
    responses = pad_right(rollouts.response_ids, pad_id)
    response_mask = pad_right([np.ones(len(r)) for r in rollouts.response_ids], 0, torch.float32,
                              width=responses.shape[1])
    prompt_mask = pad_left([np.ones(len(p), dtype=np.int64) for p in rollouts.prompt_ids], 0)
    return {
        "input_ids": torch.cat([prompts, responses], dim=1),
        "attention_mask": torch.cat([prompt_mask, response_mask.long()], dim=1),
        "response_mask": response_mask,
        "rollout_logprobs": pad_right(rollouts.rollout_logprobs, 0.0, torch.float32, width=responses.shape[1]),
    }
