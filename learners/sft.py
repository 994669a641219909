"""Supervised fine-tuning: the loss mask, the token-mean cross-entropy, and the DeepSpeed engine
that trains on them. No Ray here.

An example is a token sequence x_0 .. x_{L-1} made of segments, each either context (prompt,
user and system turns, chat-template markup) or a target (an assistant response and its EOS).
Only the targets are learnt:

    ℓ = −(1/N) Σ_b Σ_{t≥1} m_{b,t} · log p_θ(x_{b,t} | x_{b,<t}),    N = Σ_{b,t} m_{b,t}

where the loss mask m is 1 on target tokens and 0 on context and padding, and N counts the
target tokens of the whole optimiser step's batch, over every data-parallel rank and
micro-batch (`Normaliser.num_tokens`): each micro-batch contributes its share of ℓ, and the
shares add up to ℓ however the batch was sharded. This is the token mean of HF's `-100` labels
(TRL's SFTTrainer, torchtune), with the count taken over the global batch instead of per
micro-batch, which would weight a short micro-batch's tokens more.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from core.ops import masked_sum, pad_right, split_bounds, token_logprobs
from learners.engine import PolicyEngine
from learners.losses import Normaliser, aggregate


@dataclass(frozen=True)
class TokenizedExample:
    """One example: input_ids [L] (int64) and loss_mask [L] (float32, 1 on target tokens)."""

    input_ids: np.ndarray
    loss_mask: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_targets(self) -> int:
        return int(self.loss_mask.sum())


def example_tokens(segments: Sequence[tuple[Sequence[int], bool]]) -> TokenizedExample:
    """The example whose tokens are the segments' in order; loss_mask is 1 on the tokens of
    learnt segments, except position 0, which nothing predicts.

    segments: (token ids, learnt) pairs, e.g. [(prompt ids, False), (response ids + EOS, True)]
    or the turns of a conversation (`core.sft_data.conversation_segments`).
    """
    ids = [int(t) for seg, _ in segments for t in seg]
    mask = [float(learnt) for seg, learnt in segments for _ in seg]
    if mask:
        mask[0] = 0.0
    return TokenizedExample(np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=np.float32))


def prompt_response_tokens(prompt_ids: Sequence[int], response_ids: Sequence[int]) -> TokenizedExample:
    """input_ids = prompt ‖ response [P + R]; loss_mask = 0 (P times) ‖ 1 (R times)."""
    return example_tokens([(prompt_ids, False), (response_ids, True)])


@dataclass(frozen=True)
class SFTBatch:
    """Right-padded examples: input_ids, attention_mask (1 on real tokens) and loss_mask, each
    [B, L]. Padding has attention 0 and loss 0."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    loss_mask: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def _map(self, fn) -> SFTBatch:
        return SFTBatch(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def to(self, device: str | torch.device) -> SFTBatch:
        return self._map(lambda t: t.to(device))

    def split(self, parts: int, unit: int = 1) -> list[SFTBatch]:
        """`parts` contiguous pieces (`core.ops.split_bounds`), each cut to its longest row."""
        bounds = split_bounds(len(self), parts, unit)
        return [self._map(lambda t, a=a, b=b: t[a:b]).trimmed() for a, b in zip(bounds, bounds[1:])]

    def trimmed(self) -> SFTBatch:
        """Without the columns that are padding in every row."""
        width = int(self.attention_mask.sum(-1).max()) if len(self) else 0
        return self._map(lambda t: t[:, :width])


def collate(examples: Sequence[TokenizedExample], pad_id: int) -> SFTBatch:
    """Right-pad examples into an `SFTBatch` (pad_id on padding; any id will do, it is masked)."""
    ids = pad_right([e.input_ids for e in examples], pad_id)
    return SFTBatch(input_ids=ids,
                    attention_mask=pad_right([np.ones(len(e)) for e in examples], 0, width=ids.shape[1]),
                    loss_mask=pad_right([e.loss_mask for e in examples], 0.0, torch.float32, width=ids.shape[1]))


def token_nll(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """−log p(x_t | x_<t) for t = 1 .. L−1: [B, L−1] (float32).

    logits: [B, L, V] (position t predicts token t + 1); input_ids: [B, L].
    """
    return -token_logprobs(logits[:, :-1], input_ids[:, 1:])


def sft_loss(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor,
             norm: Normaliser) -> torch.Tensor:
    """This shard's share of the token-mean cross-entropy ℓ (module docstring): a scalar.

        Σ_{b, t≥1} m_{b,t} · nll_{b,t} / N,    N = norm.num_tokens (global target count)

    logits: [B, L, V]; input_ids, loss_mask: [B, L] (loss_mask[:, 0] is never used: nothing
    predicts the first token). Context and padding positions get exactly zero gradient.
    """
    return aggregate(token_nll(logits, input_ids), loss_mask[:, 1:], "token_mean", norm)


class SupervisedObjective:
    """What `DeepSpeedModel.train_step` asks of an algorithm: examples are independent rows."""

    rows_per_unit = 1


class SFTEngine(PolicyEngine):
    """The policy, trained by `DeepSpeedModel.train_step` with `sft_loss` as each micro-batch's
    loss; its weights gather and save as the RL policy's do (`named_weights`)."""

    def __init__(self, model, config: dict, world_size: int, device: str | None = None):
        super().__init__(model, SupervisedObjective(), config, world_size, device=device)

    def _logits(self, mb: SFTBatch) -> torch.Tensor:
        return self.engine(input_ids=mb.input_ids, attention_mask=mb.attention_mask, use_cache=False).logits

    def micro_loss(self, mb: SFTBatch, norm: Normaliser, sums: dict[str, float]) -> torch.Tensor:
        loss = sft_loss(self._logits(mb), mb.input_ids, mb.loss_mask, norm)
        sums["loss/sft"] += float(loss.detach())  # shares of the global loss: they sum to it
        return loss

    @torch.no_grad()
    def nll_sums(self, batch: SFTBatch, n_micro: int) -> dict[str, float]:
        """Σ m·nll and Σ m over the batch, in `n_micro` micro-batches (the same count on every
        rank: ZeRO-3 forwards are collective)."""
        self.engine.eval()
        total, tokens = 0.0, 0.0
        for mb in batch.split(n_micro):
            mb = mb.to(self.device)
            mask = mb.loss_mask[:, 1:]
            total += float(masked_sum(token_nll(self._logits(mb), mb.input_ids), mask))
            tokens += float(mask.sum())
        return {"nll_sum": total, "tokens": tokens}
