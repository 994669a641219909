"""Reward role: runs the recipe's reward terms over rollouts, each call isolated.

It returns raw per-term values; the driver (`cluster.groups.RewardGroup`) combines the whole
step's terms, since normalisation across the batch must see every sample. Pairwise terms
(`PairwiseReward`) compare the two samples of each prompt instead (pair algorithms only).
"""
from __future__ import annotations

import time

import numpy as np

from core.protocol import Rollouts, TermScores
from learners.algos.online_dpo import pair_rows
from rewards.base import PairwiseReward, Sample
from rewards.implicit import TokenIdsReward
from rewards.steps import StepReward, token_end_offsets
from rewards.isolation import IsolatedRunner, prefer_pairs, score_terms
from rewards.math_correct import MathCorrect, MathCorrectConfig
from rewards.registry import REWARDS


class RewardActor:
    def __init__(self, terms_cfg: list, timeout_s: float, tokenizer_path: str | None = None):
        built = {t.name: (REWARDS[t.name](t.args), t.weight) for t in terms_cfg}
        self.rewards = {n: r for n, (r, _) in built.items() if not isinstance(r, (PairwiseReward, TokenIdsReward))}
        self.on_token_ids = {n: r for n, (r, _) in built.items() if isinstance(r, TokenIdsReward)}
        self.pairwise = {n: (r, w) for n, (r, w) in built.items() if isinstance(r, PairwiseReward)}
        self.runner = IsolatedRunner(timeout_s)
        self.verifier = {"accuracy": MathCorrect(MathCorrectConfig())}
        self.stepwise = {n: r for n, r in self.rewards.items() if isinstance(r, StepReward)}
        self.tokenizer = None
        if self.stepwise:
            from core.models import load_tokenizer

            self.tokenizer = load_tokenizer(tokenizer_path)
        self.busy_s = 0.0

    @staticmethod
    def _samples(rollouts: Rollouts) -> list[Sample]:
        return [Sample(p, r, a, len(ids)) for p, r, a, ids in
                zip(rollouts.prompt_texts, rollouts.response_texts, rollouts.answers, rollouts.response_ids)]

    def score(self, rollouts: Rollouts) -> TermScores:
        started = time.perf_counter()
        samples = self._samples(rollouts)
        out = score_terms(self.rewards, samples, self.runner)
        if self.stepwise:
            self._score_tokens(rollouts, samples, out)
        for name, reward in self.on_token_ids.items():
            self._score_token_ids(name, reward, rollouts, out)
        if self.pairwise:
            rows = pair_rows(np.asarray(rollouts.group_ids)).tolist()
            out.preferences, pair_errors = prefer_pairs(
                self.pairwise, [(samples[a], samples[b]) for a, b in rows], self.runner)
            for (a, _), err in zip(rows, pair_errors):
                out.errors[a] = out.errors[a] or err
        self.busy_s += time.perf_counter() - started
        return out

    def _score_tokens(self, rollouts: Rollouts, samples: list[Sample], out: TermScores) -> None:
        """Per-token values of step rewards; a failure costs that sample (zeros, error recorded)."""
        for name, reward in self.stepwise.items():
            values = []
            for i, (sample, ids) in enumerate(zip(samples, rollouts.response_ids)):
                tokens, err = self.runner.run_any(
                    lambda s=sample, t=list(ids): reward.score_tokens(s, token_end_offsets(self.tokenizer, t)))
                values.append(np.zeros(len(ids)) if err is not None else tokens)
                if err is not None:
                    out.errors[i] = out.errors[i] or f"{name}: {err}"
            out.token_terms[name] = values

    def _score_token_ids(self, name: str, reward: TokenIdsReward, rollouts: Rollouts, out: TermScores) -> None:
        """One batched call over the sampled token ids; a failure costs every sample of the call
        (zeros, error recorded), a non-finite value costs its sample."""
        values, err = self.runner.run_any(lambda: reward.token_values(rollouts.prompt_ids, rollouts.response_ids))
        if err is None and len(values) != len(rollouts):
            values, err = None, f"{len(values)} values for {len(rollouts)} samples"
        if err is not None:
            values = [np.zeros(len(ids)) for ids in rollouts.response_ids]
        sums = np.zeros(len(rollouts))
        for i, v in enumerate(values):
            why = err if err is not None else (None if np.isfinite(v).all() else "non-finite value")
            if why is not None:
                values[i] = np.zeros(len(rollouts.response_ids[i]))
                out.errors[i] = out.errors[i] or f"{name}: {why}"
            sums[i] = float(np.sum(values[i]))
        out.terms[name] = sums
        out.token_terms[name] = list(values)

    def accuracy(self, rollouts: Rollouts) -> TermScores:
        """Correctness of the final answer against the reference (for eval/accuracy)."""
        return score_terms(self.verifier, self._samples(rollouts), self.runner)

