"""Reward role: runs the recipe's reward terms over rollouts, each call isolated.

It returns raw per-term values; the driver (`cluster.groups.RewardGroup`) combines the whole
step's terms, since normalisation across the batch must see every sample. Pairwise terms
(`PairwiseReward`) compare the two samples of each prompt instead (pair algorithms only).
"""
from __future__ import annotations

import time

import numpy as np

from cluster.protocol import Rollouts, TermScores
from learners.algos.online_dpo import pair_rows
from rewards.base import PairwiseReward, Sample
from rewards.compose import IsolatedRunner, prefer_pairs, score_terms
from rewards.math_correct import MathCorrect, MathCorrectConfig
from rewards.registry import REWARDS


class RewardActor:
    def __init__(self, terms_cfg: list, timeout_s: float):
        built = {t.name: (REWARDS[t.name](t.args), t.weight) for t in terms_cfg}
        self.rewards = {n: r for n, (r, _) in built.items() if not isinstance(r, PairwiseReward)}
        self.pairwise = {n: (r, w) for n, (r, w) in built.items() if isinstance(r, PairwiseReward)}
        self.runner = IsolatedRunner(timeout_s)
        self.verifier = {"accuracy": MathCorrect(MathCorrectConfig())}
        self.busy_s = 0.0

    @staticmethod
    def _samples(rollouts: Rollouts) -> list[Sample]:
        return [Sample(p, r, a, len(ids)) for p, r, a, ids in
                zip(rollouts.prompt_texts, rollouts.response_texts, rollouts.answers, rollouts.response_ids)]

    def score(self, rollouts: Rollouts) -> TermScores:
        started = time.perf_counter()
        samples = self._samples(rollouts)
        out = score_terms(self.rewards, samples, self.runner)
        if self.pairwise:
            rows = pair_rows(np.asarray(rollouts.group_ids)).tolist()
            out.preferences, pair_errors = prefer_pairs(
                self.pairwise, [(samples[a], samples[b]) for a, b in rows], self.runner)
            for (a, _), err in zip(rows, pair_errors):
                out.errors[a] = out.errors[a] or err
        self.busy_s += time.perf_counter() - started
        return out

    def accuracy(self, rollouts: Rollouts) -> TermScores:
        """Correctness of the final answer against the reference (for eval/accuracy)."""
        return score_terms(self.verifier, self._samples(rollouts), self.runner)

