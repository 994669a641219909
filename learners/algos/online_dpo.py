"""Online DPO / online IPO / IPO-MD: two fresh samples per prompt, ranked by a preference source.

Online DPO (Guo et al. 2024, "Direct language model alignment from online AI feedback"), online
IPO and IPO-MD (Calandriello et al. 2024, "Human Alignment of LLMs through Online Preference
Optimisation"): each step samples y, y′ for every prompt — both from π, or for IPO-MD y′ from the
geometric mixture π^{1−β_m}·π_ref^{β_m} — asks the preference source P(y ≻ y′) (a pairwise reward:
reward model σ(r − r′) or a pairwise judge; else the scalar rewards compared), and trains on the
ranked pair with the DPO or IPO loss against the reference:

    h = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))
    dpo: −log σ(β·h)        ipo: (h − 1/(2β))²

Ties (P = ½) carry no ranking: such pairs stay in the batch with weight 0 so shapes and shards do
not depend on the data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from core.protocol import BatchExtras, Rollouts, RolloutTensors, Scores, TrainBatch, pair_rows
from learners.algos.base import AlgoConfig, Algorithm, Needs
from learners.losses import Normaliser, preference_loss, preference_margin, sequence_logprobs


def pair_preferences(scores: Scores, rows: np.ndarray) -> np.ndarray:
    """P(first ≻ second) per pair [G]: the pairwise reward's if one ran, else 1 / 0 / ½ by
    comparing the scalar rewards (a rule-based preference)."""
    if scores.preferences is not None:
        return np.asarray(scores.preferences, dtype=np.float64)
    first, second = scores.values[rows[:, 0]], scores.values[rows[:, 1]]
    return np.where(first > second, 1.0, np.where(first < second, 0.0, 0.5))


@dataclass(frozen=True)
class PairExtras(BatchExtras):
    pair_weight: torch.Tensor  # [B] 1 for both rows of a decided pair, 0 for a tie


class OnlineDPOConfig(AlgoConfig):
    name: Literal["online_dpo"] = "online_dpo"
    beta: float = Field(0.1, gt=0)
    loss: Literal["dpo", "ipo"] = "dpo"
    # Set: y′ comes from the geometric mixture with this weight on the reference (IPO-MD).
    mixture_coef: float | None = Field(None, ge=0, le=1)


class OnlineIPOConfig(OnlineDPOConfig):
    name: Literal["online_ipo"] = "online_ipo"
    loss: Literal["dpo", "ipo"] = "ipo"


class IPOMDConfig(OnlineDPOConfig):
    name: Literal["ipo_md"] = "ipo_md"
    loss: Literal["dpo", "ipo"] = "ipo"
    mixture_coef: float | None = Field(0.5, ge=0, le=1)


class OnlineDPO(Algorithm):
    Config = OnlineDPOConfig
    cfg: OnlineDPOConfig
    rows_per_unit = 2

    def needs(self) -> Needs:
        return Needs(samples_per_prompt=2, reference=True, pairs=True,
                     mixture_sampling=self.cfg.mixture_coef is not None,
                     mixture_coef=self.cfg.mixture_coef or 0.0)

    def prepare(self, rollouts: Rollouts, scores: Scores, tensors: RolloutTensors):
        """Rows reordered as (chosen, rejected) pairs; `pair_weight` is 0 for ties."""
        rows = pair_rows(np.asarray(rollouts.group_ids))
        prefs = pair_preferences(scores, rows)
        first_wins = prefs >= 0.5
        chosen = np.where(first_wins, rows[:, 0], rows[:, 1])
        rejected = np.where(first_wins, rows[:, 1], rows[:, 0])
        order = torch.as_tensor(np.stack([chosen, rejected], axis=1).reshape(-1))
        weight = torch.as_tensor(np.repeat(prefs != 0.5, 2), dtype=torch.float32)
        batch = tensors.select(order).batch(torch.zeros(len(order)), PairExtras(pair_weight=weight))
        return batch, {"train/decided_pair_frac": float((prefs != 0.5).mean())}

    def normaliser(self, batch: TrainBatch, max_new_tokens: int) -> Normaliser:
        decided = int(batch.extras.pair_weight[0::2].sum().item())
        return Normaliser(num_tokens=int(batch.response_mask.sum().item()), num_seqs=decided,
                          constant=float(max_new_tokens))

    def loss(self, batch: TrainBatch, logprobs: torch.Tensor, norm: Normaliser):
        mask = batch.response_mask
        seq = sequence_logprobs(logprobs, mask)
        ref = sequence_logprobs(batch.ref_logprobs, mask)
        per_pair = preference_loss(seq[0::2], seq[1::2], ref[0::2], ref[1::2], self.cfg.beta, self.cfg.loss)
        weight = batch.extras.pair_weight[0::2]
        n = max(norm.num_seqs, 1)
        with torch.no_grad():
            margin = preference_margin(seq[0::2], seq[1::2], ref[0::2], ref[1::2], self.cfg.beta)
            metrics = {"train/reward_margin": (weight * margin).sum() / n,
                       "train/pref_accuracy": (weight * (margin > 0).float()).sum() / n,
                       "train/kl": masked_seq_kl(seq, ref, norm)}
        loss = (weight * per_pair).sum() / n
        metrics["loss/policy"] = loss.detach()
        return loss, metrics


def masked_seq_kl(seq: torch.Tensor, ref: torch.Tensor, norm: Normaliser) -> torch.Tensor:
    """This shard's share of the per-token mean of log π − log π_ref (a k1 KL estimate)."""
    return (seq - ref).sum() / max(norm.num_tokens, 1)


class OnlineIPO(OnlineDPO):
    Config = OnlineIPOConfig


class IPOMD(OnlineDPO):
    Config = IPOMDConfig
