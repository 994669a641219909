"""Reward role: runs the recipe's reward terms over rollouts, each call isolated."""
from __future__ import annotations

from cluster.protocol import Rollouts, Scores
from rewards.base import Sample
from rewards.compose import IsolatedRunner, Term, score_weighted
from rewards.math_correct import MathCorrect, MathCorrectConfig
from rewards.registry import REWARDS


class RewardActor:
    def __init__(self, terms_cfg: list, timeout_s: float):
        self.terms = [Term(t.name, REWARDS[t.name](t.args), t.weight) for t in terms_cfg]
        self.runner = IsolatedRunner(timeout_s)
        self.verifier = [Term("accuracy", MathCorrect(MathCorrectConfig()), 1.0)]

    @staticmethod
    def _samples(rollouts: Rollouts) -> list[Sample]:
        return [Sample(p, r, a, len(ids)) for p, r, a, ids in
                zip(rollouts.prompt_texts, rollouts.response_texts, rollouts.answers, rollouts.response_ids)]

    def score(self, rollouts: Rollouts) -> Scores:
        return score_weighted(self.terms, self._samples(rollouts), self.runner)

    def accuracy(self, rollouts: Rollouts) -> Scores:
        """Correctness of the final answer against the reference (for eval/accuracy)."""
        return score_weighted(self.verifier, self._samples(rollouts), self.runner)
