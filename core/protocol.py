"""Typed data contracts between phases. No Ray here: these travel through the object store.

    Prompts -> (rollout) Rollouts -> (reward) TermScores -> (driver) Scores
    Rollouts -> RolloutTensors (+ reference / critic forward) -> (algorithm.prepare) TrainBatch

Ragged per-sample data (token ids of different lengths) stays as lists of numpy arrays until the
driver pads it into `RolloutTensors`. Tensor contracts are frozen: a phase that adds something
makes a new object (`dataclasses.replace`), it never changes the one it was given.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Callable

import numpy as np
import torch

from core.ops import pad_left, pad_right, split_bounds


@dataclass
class Prompts:
    """One row per prompt. `token_ids` already carry the chat template."""

    ids: list[str]
    texts: list[str]
    token_ids: list[np.ndarray]
    answers: list[str]
    # The user's question itself, without chat template or task instruction (what a judge reads).
    questions: list[str] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, idx: list[int]) -> "Prompts":
        return Prompts(*[None if getattr(self, f.name) is None else [getattr(self, f.name)[i] for i in idx]
                         for f in fields(self)])


@dataclass
class SamplingSpec:
    """What the rollout actor is asked to do with a batch of prompts."""

    n: int
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    # The step's seed (None: the engine's own generator); each response's comes from it and the
    # response's place in the step's batch (`response_seed`).
    seed: int | None = None
    # Set: one sample from the policy and one from π^{1−c}·π_ref^{c} per prompt (Nash-MD, IPO-MD).
    mixture_coef: float | None = None
    # One greedy response per prompt after its `n` samples, flagged in `Rollouts.greedy` (ReMax).
    greedy_per_prompt: bool = False
    # Index in the step's batch of this request's first prompt (a chunk's offset).
    first_prompt: int = 0

    def response_seed(self, index: int, attempt: int = 1, stream: int = 0) -> int | None:
        """The sampling seed of response `index` of this request (prompt-major, `n` per prompt) on
        its `attempt`-th engine request (an interrupted response goes on as a new one): a function
        of the step's seed and the response's place in the step's batch, so neither the chunks the
        batch was cut into nor what the engine ran before change it. `stream` tells apart other
        random draws of the same request (the mixture sampler's)."""
        if self.seed is None:
            return None
        entropy = [self.seed % 2**64, stream, self.first_prompt * self.n + index, attempt]
        return int(np.random.SeedSequence(entropy).generate_state(1)[0])


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
    # True for the greedy response of a prompt (`SamplingSpec.greedy_per_prompt`); None: none asked.
    greedy: np.ndarray | None = None
    # Per row [T_i]: the policy version that sampled each response token. A weight load that
    # interrupts generation (`rollout.interrupt`) leaves two or more versions in a row, oldest
    # first; `policy_versions[i]` is the oldest. None: every token has its row's version.
    token_versions: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.response_ids)

    def versions_per_token(self) -> list[np.ndarray]:
        """`token_versions`, or each row's version repeated over its tokens where it is not set."""
        if self.token_versions is not None:
            return self.token_versions
        return [np.full(len(r), v, dtype=np.int64) for r, v in zip(self.response_ids, self.policy_versions)]

    def select(self, idx) -> "Rollouts":
        """Rows `idx` (a slice, or a sequence of indices), every column alike."""
        def take(column):
            if column is None or isinstance(column, np.ndarray):
                return None if column is None else column[idx]
            return column[idx] if isinstance(idx, slice) else [column[i] for i in idx]
        return Rollouts(**{f.name: take(getattr(self, f.name)) for f in fields(Rollouts)})

    @staticmethod
    def concat(parts: list["Rollouts"], group_offsets: list[int]) -> "Rollouts":
        """Join the rollouts of several actors; `group_offsets` shifts each part's group ids."""
        out = {}
        for f in fields(Rollouts):
            vals = [getattr(p, f.name) for p in parts]
            if f.name == "group_ids":
                out[f.name] = np.concatenate([v + off for v, off in zip(vals, group_offsets)])
            elif f.name == "greedy":
                out[f.name] = None if all(v is None for v in vals) else np.concatenate(
                    [np.zeros(len(p), dtype=bool) if v is None else v for v, p in zip(vals, parts)])
            elif f.name == "token_versions":
                out[f.name] = None if all(v is None for v in vals) else [
                    x for p in parts for x in p.versions_per_token()]
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


def pair_rows(group_ids: np.ndarray) -> np.ndarray:
    """[G, 2] row indices of each group's two samples, groups in order of first appearance
    (the rows pair algorithms and pairwise rewards compare)."""
    order = np.argsort(group_ids, kind="stable")
    counts = np.bincount(group_ids)
    if counts[counts > 0].min() != 2 or counts[counts > 0].max() != 2:
        raise ValueError(f"pair algorithms need exactly 2 samples per prompt, got group sizes {set(counts[counts > 0])}")
    return order.reshape(-1, 2)


def _map_fields(obj, fn: Callable[[torch.Tensor], torch.Tensor], skip: tuple[str, ...] = ()):
    """A copy of a tensor dataclass with `fn` applied to every tensor field that is set."""
    return replace(obj, **{f.name: None if getattr(obj, f.name) is None else fn(getattr(obj, f.name))
                           for f in fields(obj) if f.name not in skip})


@dataclass(frozen=True)
class BatchExtras:
    """Per-row tensors one algorithm adds to its batch ([B] or [B, R]); each algorithm declares
    its own subclass with named fields. Rows are selected and moved with the batch."""

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "BatchExtras":
        return _map_fields(self, fn)


@dataclass(frozen=True)
class TrainBatch:
    """Padded tensors the learner consumes. Layout: prompt left-padded to P, response right-padded
    to R, so `input_ids` is [B, P + R] and every response tensor is [B, R], aligned with
    `input_ids[:, P:]`."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    rollout_logprobs: torch.Tensor
    advantages: torch.Tensor  # [B] (sequence level) or [B, R] (token level)
    ref_logprobs: torch.Tensor | None = None
    # π_old: the learner's own logprobs before this step's update (`Needs.old_logprobs`).
    old_logprobs: torch.Tensor | None = None
    extras: BatchExtras | None = None

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def prompt_len(self) -> int:
        return self.input_ids.shape[1] - self.response_mask.shape[1]

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "TrainBatch":
        """Apply `fn` to every tensor (row selection, device moves)."""
        out = _map_fields(self, fn, skip=("extras",))
        return out if self.extras is None else replace(out, extras=self.extras.map(fn))

    def select(self, idx: torch.Tensor | slice) -> "TrainBatch":
        return self.map(lambda t: t[idx])

    def to(self, device: str | torch.device) -> "TrainBatch":
        return self.map(lambda t: t.to(device))

    def split(self, parts: int, unit: int = 1) -> list["TrainBatch"]:
        """`parts` contiguous pieces (`core.ops.split_bounds`); `unit` rows (a chosen/rejected
        pair) stay together."""
        bounds = split_bounds(len(self), parts, unit)
        return [self.select(slice(a, b)) for a, b in zip(bounds, bounds[1:])]

    def shard(self, rank: int, world_size: int, unit: int = 1) -> "TrainBatch":
        """Contiguous shard for one data-parallel rank (sizes differ by at most one unit)."""
        return self.split(world_size, unit)[rank]


@dataclass(frozen=True)
class RolloutTensors:
    """The padded tensors every algorithm starts from, plus what the forward phases add.

    input_ids, attention_mask: [B, P + R] (prompt left-padded to P, response right-padded to R);
    response_mask, rollout_logprobs, ref_logprobs, values: [B, R].
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    rollout_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor | None = None  # reference forward (`Needs.reference`)
    values: torch.Tensor | None = None  # critic forward V(s_t) (`Needs.critic`)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @staticmethod
    def from_rollouts(rollouts: Rollouts, pad_id: int) -> "RolloutTensors":
        prompts, prompt_mask = pad_left(rollouts.prompt_ids, pad_id)
        responses = pad_right(rollouts.response_ids, pad_id)
        response_mask = pad_right([np.ones(len(r)) for r in rollouts.response_ids], 0, torch.float32,
                                  width=responses.shape[1])
        return RolloutTensors(
            input_ids=torch.cat([prompts, responses], dim=1),
            attention_mask=torch.cat([prompt_mask, response_mask.long()], dim=1),
            response_mask=response_mask,
            rollout_logprobs=pad_right(rollouts.rollout_logprobs, 0.0, torch.float32, width=responses.shape[1]),
        )

    def select(self, idx: torch.Tensor | np.ndarray) -> "RolloutTensors":
        idx = torch.as_tensor(idx)
        return _map_fields(self, lambda t: t[idx])

    def batch(self, advantages: torch.Tensor, extras: BatchExtras | None = None) -> TrainBatch:
        """The learner's batch: these tensors (critic values aside), advantages and extras."""
        return TrainBatch(input_ids=self.input_ids, attention_mask=self.attention_mask,
                          response_mask=self.response_mask, rollout_logprobs=self.rollout_logprobs,
                          advantages=advantages, ref_logprobs=self.ref_logprobs, extras=extras)

    def probe(self) -> TrainBatch:
        """These tensors as a batch for a forward pass (reference, critic): no advantages yet."""
        return self.batch(torch.zeros(len(self)))
