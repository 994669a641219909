"""Self-rewarding: the policy judges its own samples and trains on its best-vs-worst pairs.

Yuan et al. 2024, "Self-Rewarding Language Models": N samples per prompt; the rollout engines
themselves (the policy's current weights, no separate judge) judge each response k times with
the additive 5-point rubric (`rewards/self_judge.py`), and the controller's judge phase puts each
response's mean parsed score in `scores.terms["self_judge"]` (NaN: no judgment parsed). Per
prompt, chosen = the highest mean, rejected = the lowest (`learners/self_rewarding.build_pairs`;
ties and prompts with fewer than two judged responses dropped; optional Meta-Rewarding length
control), trained with the DPO or IPO loss against the reference:

    h = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))
    dpo: −log σ(β·h)        ipo: (h − 1/(2β))²

SCIR-style consistency (`consistency`): the implicit reward β·Σ_t (log π_rollout − log π_ref)
of chosen and rejected should agree with the judge; `log` reports the agreement, `filter` also
drops the pairs on which they disagree.

Two loops on this one algorithm. Online (`iterations: null`): every step samples, self-judges
with the current policy and updates, against the fixed reference. Iterative, as in the paper
(`iterations: T`, with `train.sync_every` = steps / T): for one iteration the policy that samples
and judges, and the reference, are M_t; at its end the rollout engines and the reference load
the trained weights, M_(t+1) (`Needs.reference_follows_policy`), and a checkpoint per iteration
is `train.checkpoint_every` = sync_every.

The batch has one pair per prompt, fixed in size: pairs dropped take a placeholder row pair of
weight 0, so shapes and shards do not depend on the judge.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from core.protocol import Rollouts, RolloutTensors, Scores
from learners.algos.base import Needs
from learners.algos.online_dpo import OnlineDPO, OnlineDPOConfig, PairExtras
from learners.self_rewarding import (
    agreement_rate, build_pairs, consistency_filter, implicit_agreement, judge_answer_agreement,
    sequence_implicit_rewards,
)
from rewards.self_judge import JUDGE_TERM, SelfJudgeConfig


class SelfRewardingConfig(OnlineDPOConfig):
    name: Literal["self_rewarding"] = "self_rewarding"
    samples_per_prompt: int = Field(4, ge=2)
    judge: SelfJudgeConfig = SelfJudgeConfig()
    # Meta-Rewarding length control: among responses within this many score points of the best
    # (worst), choose the shortest (reject the longest). None: the plain score rule.
    length_control: float | None = Field(None, ge=0)
    consistency: Literal["log", "filter"] = "log"
    # None: the online loop. T: the iterative loop (train.sync_every must be train.steps / T).
    iterations: int | None = Field(None, ge=1)
    # The reward term that checks answers, when the recipe has one: the judge's agreement with it.
    answer_term: str = "math_correct"

    @model_validator(mode="after")
    def _pairs_only(self):
        if self.mixture_coef is not None:
            raise ValueError("self_rewarding samples every response from the policy: mixture_coef must be null")
        return self


class SelfRewarding(OnlineDPO):
    Config = SelfRewardingConfig
    cfg: SelfRewardingConfig

    def needs(self) -> Needs:
        return Needs(samples_per_prompt=self.cfg.samples_per_prompt, reference=True, judge=self.cfg.judge,
                     reference_follows_policy=self.cfg.iterations is not None)

    def train_rows(self, num_prompts: int) -> int:
        return 2 * num_prompts

    def prepare(self, rollouts: Rollouts, scores: Scores, tensors: RolloutTensors):
        """(chosen, rejected) rows per prompt from the judge's mean scores; a dropped pair's
        place holds rows 0 and 1 with weight 0."""
        group_ids = np.asarray(rollouts.group_ids)
        judged = np.asarray(scores.terms[JUDGE_TERM], dtype=np.float64)
        lengths = np.array([len(r) for r in rollouts.response_ids])
        selection = build_pairs(group_ids, judged, lengths, self.cfg.length_control)
        implicit = sequence_implicit_rewards(tensors.rollout_logprobs, tensors.ref_logprobs, tensors.response_mask,
                                             self.cfg.beta)
        agree = implicit_agreement(selection, implicit)
        metrics = {"judge/implicit_agreement": agreement_rate(agree)}
        if self.cfg.consistency == "filter":
            selection = consistency_filter(selection, agree)
        num_prompts = len(np.unique(group_ids))
        kept = len(selection)
        chosen = np.concatenate([selection.chosen, np.zeros(num_prompts - kept, dtype=np.int64)])
        rejected = np.concatenate([selection.rejected, np.ones(num_prompts - kept, dtype=np.int64)])
        weight = np.repeat((np.arange(num_prompts) < kept).astype(np.float32), 2)
        order = torch.as_tensor(np.stack([chosen, rejected], axis=1).reshape(-1))
        extras = PairExtras(pair_weight=torch.as_tensor(weight), pair_label=torch.ones(len(order)))
        batch = tensors.select(order).batch(torch.zeros(len(order)), extras)
        metrics.update({f"judge/{k}": float(v) for k, v in selection.stats().items()})
        metrics["judge/pairs_kept_frac"] = kept / max(num_prompts, 1)
        if self.cfg.answer_term in scores.terms:
            correct = np.asarray(scores.terms[self.cfg.answer_term]) > 0.5
            found = judge_answer_agreement(group_ids, judged, correct)
            metrics.update({"judge/answer_agreement": found["pairwise_agreement"], "judge/answer_auc": found["auc"],
                            "judge/chosen_correct": float(correct[selection.chosen].mean()) if kept else float("nan"),
                            "judge/rejected_correct": float(correct[selection.rejected].mean()) if kept else float("nan")})
        return batch, {k: v for k, v in metrics.items() if np.isfinite(v)}
