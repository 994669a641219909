"""Online DPO / online IPO / IPO-MD: two fresh samples per prompt, ranked by a preference source.

Online DPO (Guo et al. 2024, "Direct language model alignment from online AI feedback"), online
IPO and IPO-MD (Calandriello et al. 2024, "Human Alignment of LLMs through Online Preference
Optimisation"): each step samples y, y′ for every prompt — both from π, or for IPO-MD y′ from the
geometric mixture π^{1−β_m}·π_ref^{β_m} — asks the preference source P(y ≻ y′) (a pairwise reward:
reward model σ(r − r′) or a pairwise judge; else the scalar rewards compared), and trains on the
ranked pair with the DPO or IPO loss against the reference:

    h = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))
    dpo: −log σ(β·h)        ipo: (h − 1/(2β))²

Each pair's rows are ordered preferred first (P ≥ ½ first) and trained towards a target
q = P(first ≻ second) (`labels`, `soft_preference_loss`: q·ℓ(first, second) + (1 − q)·ℓ(second, first)):

    hard (default): q = 1; ties (P = ½) carry no ranking and get weight 0. A 0.51 is a full win.
    soft:           q = P of the preferred response, max(P, 1 − P); every pair has weight 1. A tie
                    is the symmetric loss ½·ℓ(y, y′) + ½·ℓ(y′, y), minimised where both log-ratios
                    are equal. Optima: IPO h = (2q − 1)/(2β), DPO σ(βh) = q, where hard labels
                    give IPO h = 1/(2β) (DPO: h → ∞) whatever P is.
    sampled:        q ~ Bernoulli(max(P, 1 − P)), i.e. the winner is drawn from P (online IPO's
                    label, Calandriello et al. 2024); weight 1, ties are coin flips. Its expected
                    loss is the soft loss. The draws are a pure function of `label_seed` and the
                    batch (`label_generator`): a rerun or a restart that regenerates the same
                    rollouts draws the same labels; pairs within a batch draw independently.

Pairs of weight 0 stay in the batch so shapes and shards do not depend on the data.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from core.protocol import (
    BatchExtras,
    Rollouts,
    RolloutTensors,
    Scores,
    TrainBatch,
    pair_rows,
)
from learners.algos.base import AlgoConfig, Algorithm, Needs
from learners.losses import (
    Normaliser,
    preference_margin,
    sequence_logprobs,
    soft_preference_loss,
)


def pair_preferences(scores: Scores, rows: np.ndarray) -> np.ndarray:
    """P(first ≻ second) per pair [G]: the pairwise reward's if one ran, else 1 / 0 / ½ by
    comparing the scalar rewards (a rule-based preference)."""
    if scores.preferences is not None:
        return np.asarray(scores.preferences, dtype=np.float64)
    first, second = scores.values[rows[:, 0]], scores.values[rows[:, 1]]
    return np.where(first > second, 1.0, np.where(first < second, 0.0, 0.5))


def label_generator(rollouts: Rollouts, seed: int) -> np.random.Generator:
    """A generator seeded by `seed` and the batch's content: every row's prompt and response
    token ids and policy version (a digest, so the draws do not depend on the call history).
    Two batches equal in all of these draw the same labels: a rerun does; training steps do not,
    since their prompts and samples differ."""
    digest = hashlib.blake2b(digest_size=8)
    for ids in (*rollouts.prompt_ids, *rollouts.response_ids):
        ids = np.asarray(ids, dtype=np.int64)
        digest.update(np.int64(len(ids)).tobytes() + ids.tobytes())
    digest.update(np.asarray(rollouts.policy_versions, dtype=np.int64).tobytes())
    return np.random.default_rng([seed, int.from_bytes(digest.digest(), "little")])


def pair_labels(prefs: np.ndarray, labels: str,
                rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(q, weight) per pair [G] for the pair's rows ordered preferred first, from P(first ≻ second):

        hard:    q = 1                             weight = [P ≠ ½]
        soft:    q = max(P, 1 − P)                 weight = 1
        sampled: q = [u < max(P, 1 − P)], u ~ U(0, 1) from `rng`   weight = 1
    """
    major = np.maximum(prefs, 1.0 - prefs)
    if labels == "hard":
        return np.ones_like(prefs), (prefs != 0.5).astype(np.float64)
    if labels == "soft":
        return major, np.ones_like(prefs)
    if labels == "sampled":
        return (rng.random(len(prefs)) < major).astype(np.float64), np.ones_like(prefs)
    raise ValueError(f"preference labels must be hard, soft or sampled, got {labels!r}")


@dataclass(frozen=True)
class PairExtras(BatchExtras):
    pair_weight: torch.Tensor  # [B] 1 for both rows of a pair in the loss (hard labels: 0 for a tie)
    pair_label: torch.Tensor  # [B] q = P(first row of the pair ≻ second), the loss's target


class OnlineDPOConfig(AlgoConfig):
    name: Literal["online_dpo"] = "online_dpo"
    beta: float = Field(0.1, gt=0)
    loss: Literal["dpo", "ipo"] = "dpo"
    # Set: y′ comes from the geometric mixture with this weight on the reference (IPO-MD).
    mixture_coef: float | None = Field(None, ge=0, le=1)
    # How P(y ≻ y′) becomes the loss's target: "hard" (a win at P > ½), "soft" (P itself) or
    # "sampled" (a Bernoulli(P) draw); see the module docstring. Hard is the historical behaviour.
    labels: Literal["hard", "soft", "sampled"] = "hard"
    label_seed: int = 0  # with labels=sampled: mixed with a digest of the batch


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
        """Rows reordered as (chosen, rejected) pairs, chosen the response with P ≥ ½; each pair's
        target q and weight from `pair_labels`."""
        rows = pair_rows(np.asarray(rollouts.group_ids))
        prefs = pair_preferences(scores, rows)
        first_wins = prefs >= 0.5
        chosen = np.where(first_wins, rows[:, 0], rows[:, 1])
        rejected = np.where(first_wins, rows[:, 1], rows[:, 0])
        order = torch.as_tensor(np.stack([chosen, rejected], axis=1).reshape(-1))
        rng = label_generator(rollouts, self.cfg.label_seed) if self.cfg.labels == "sampled" else None
        label, weight = pair_labels(prefs, self.cfg.labels, rng)
        extras = PairExtras(pair_weight=torch.as_tensor(np.repeat(weight, 2), dtype=torch.float32),
                            pair_label=torch.as_tensor(np.repeat(label, 2), dtype=torch.float32))
        batch = tensors.select(order).batch(torch.zeros(len(order)), extras)
        return batch, {"train/decided_pair_frac": float((prefs != 0.5).mean())}

    def normaliser(self, batch: TrainBatch, max_new_tokens: int) -> Normaliser:
        decided = int(batch.extras.pair_weight[0::2].sum().item())
        return Normaliser(num_tokens=int(batch.response_mask.sum().item()), num_seqs=decided,
                          constant=float(max_new_tokens))

    def loss(self, batch: TrainBatch, logprobs: torch.Tensor, norm: Normaliser):
        """Σ_pairs w·ℓ_q / n over the pairs of weight w > 0 (n of them in the global batch).

        Metrics are expectations over the label the loss trains on (for hard labels, the usual
        margin and accuracy of chosen over rejected): with m = β·h of first over second,
        reward_margin = E[(2q − 1)·m], pref_accuracy = E[q·[m > 0] + (1 − q)·[m < 0]].
        """
        mask = batch.response_mask
        seq = sequence_logprobs(logprobs, mask)
        ref = sequence_logprobs(batch.ref_logprobs, mask)
        label = batch.extras.pair_label[0::2]
        per_pair = soft_preference_loss(seq[0::2], seq[1::2], ref[0::2], ref[1::2], label, self.cfg.beta,
                                        self.cfg.loss)
        weight = batch.extras.pair_weight[0::2]
        n = max(norm.num_seqs, 1)
        with torch.no_grad():
            margin = preference_margin(seq[0::2], seq[1::2], ref[0::2], ref[1::2], self.cfg.beta)
            agree = label * (margin > 0).float() + (1 - label) * (margin < 0).float()
            metrics = {"train/reward_margin": (weight * (2 * label - 1) * margin).sum() / n,
                       "train/pref_accuracy": (weight * agree).sum() / n,
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
