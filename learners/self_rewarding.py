"""Pair selection and judge diagnostics of a self-rewarding loop: the policy samples N responses
per prompt, judges them itself (`rewards/self_judge.py`), and trains with DPO on the best and
worst of each prompt (Yuan et al. 2024, "Self-Rewarding Language Models", §2.3).

- `build_pairs`: chosen = highest mean judge score, rejected = lowest, per prompt; optional
  length control (Wu et al. 2024, "Meta-Rewarding Language Models", §3.3).
- `implicit_agreement` / `consistency_filter`: keep only pairs that the policy's implicit reward
  β·log π/π_ref ranks the same way as the judge (the consistency between the generative and the
  implicit reward model of SCIR: Zhou et al. 2025, "Self-Consistency of the Internal Reward
  Models Improves Self-Rewarding Language Models").
- `judge_answer_agreement`: on a task with an answer check, how well the judge's scores rank
  correct above incorrect responses.

Shapes: R responses (rows), P pairs. `group_ids` [R] names each row's prompt; scores are per row
with NaN for a response that no judgment scored. Pure numpy / torch, no Ray.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from rewards.implicit import implicit_token_rewards


@dataclass(frozen=True)
class PairSelection:
    """Chosen / rejected rows, one pair per kept prompt, prompts in ascending group id."""

    chosen: np.ndarray  # [P] row indices
    rejected: np.ndarray  # [P] row indices
    group_ids: np.ndarray  # [P] the prompt of each pair
    prompts: int  # prompts seen
    dropped_few_judged: int  # prompts with fewer than 2 judged responses
    dropped_ties: int  # prompts whose judged responses all got the same mean score
    dropped_inconsistent: int = 0  # pairs `consistency_filter` removed

    def __len__(self) -> int:
        return len(self.chosen)

    def stats(self) -> dict[str, int]:
        return {"prompts": self.prompts, "pairs": len(self), "dropped_few_judged": self.dropped_few_judged,
                "dropped_ties": self.dropped_ties, "dropped_inconsistent": self.dropped_inconsistent}


def build_pairs(group_ids: np.ndarray, mean_scores: np.ndarray, lengths: np.ndarray | None,
                length_control: float | None) -> PairSelection:
    """One (chosen, rejected) pair per prompt from its responses' mean judge scores.

    Per prompt, over its judged responses J (score not NaN), with s_max, s_min their extremes:
      |J| < 2           -> dropped (`dropped_few_judged`)
      s_max = s_min     -> dropped (`dropped_ties`): the judge does not separate them
      length_control None (Yuan et al. 2024):
        chosen = argmax s, rejected = argmin s, each tie going to the lowest row index
      length_control τ ≥ 0 (Meta-Rewarding length control, with an absolute score tolerance):
        C = {r ∈ J : s_r ≥ s_max − τ and s_r > m},  m = (s_max + s_min) / 2
        W = {r ∈ J : s_r ≤ s_min + τ and s_r < m}
        chosen = the shortest of C, rejected = the longest of W (ties: lowest row index)
    The midpoint bound keeps C and W disjoint, so the chosen response always scores strictly
    above the rejected one however large τ is (τ ≥ half the range acts as τ = half the range).
    τ = 0 keeps the score rule and breaks its ties by length. Deviation: Meta-Rewarding's
    tolerance is relative, ρ·(s_max − s_min) with ρ ∈ [0, 1]; here it is in score points.

    group_ids [R] ints, mean_scores [R] float (NaN: unjudged), lengths [R] (e.g. response tokens;
    only read with length control).
    """
    group_ids, scores = np.asarray(group_ids), np.asarray(mean_scores, dtype=np.float64)
    if length_control is not None and (lengths is None or length_control < 0):
        raise ValueError("build_pairs: length control needs a tolerance >= 0 and the response lengths")
    chosen, rejected, kept = [], [], []
    few = ties = 0
    groups = np.unique(group_ids)
    for g in groups:
        rows = np.flatnonzero((group_ids == g) & ~np.isnan(scores))  # ascending: ties -> lowest row
        if len(rows) < 2:
            few += 1
            continue
        s = scores[rows]
        if s.max() == s.min():
            ties += 1
            continue
        if length_control is None:
            c, r = rows[np.argmax(s)], rows[np.argmin(s)]
        else:
            mid, n = (s.max() + s.min()) / 2, np.asarray(lengths)[rows]
            best = (s >= s.max() - length_control) & (s > mid)
            worst = (s <= s.min() + length_control) & (s < mid)
            c = rows[best][np.argmin(n[best])]
            r = rows[worst][np.argmax(n[worst])]
        chosen.append(c)
        rejected.append(r)
        kept.append(g)
    return PairSelection(np.asarray(chosen, dtype=np.int64), np.asarray(rejected, dtype=np.int64),
                         np.asarray(kept, dtype=group_ids.dtype), len(groups), dropped_few_judged=few, dropped_ties=ties)


def sequence_implicit_rewards(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                              beta: float) -> torch.Tensor:
    """r(x, y) = β · Σ_t m_t · (log π(y_t | ·) − log π_ref(y_t | ·)), [B, T] x3 -> [B]: DPO's
    implicit reward without β·log Z(x), which cancels within a prompt (`rewards.implicit`)."""
    return implicit_token_rewards(logprobs, ref_logprobs, mask, beta).sum(-1)


def implicit_agreement(selection: PairSelection, implicit_rewards: np.ndarray | torch.Tensor) -> np.ndarray:
    """[P] bool: the implicit reward ranks the judge's chosen row strictly above its rejected
    one, r[chosen] > r[rejected] (equal implicit rewards disagree: they rank nothing).
    implicit_rewards [R]: `sequence_implicit_rewards` of every row."""
    r = torch.as_tensor(implicit_rewards).detach().cpu().double().numpy()
    return r[selection.chosen] > r[selection.rejected]


def agreement_rate(agree: np.ndarray) -> float:
    """Share of pairs on which the two reward models agree (NaN with no pairs)."""
    return float(np.mean(agree)) if len(agree) else float("nan")


def consistency_filter(selection: PairSelection, agree: np.ndarray) -> PairSelection:
    """The pairs on which the judge and the implicit reward agree (SCIR's consistent pairs);
    the others are counted in `dropped_inconsistent`. agree [P] bool."""
    agree = np.asarray(agree, dtype=bool)
    if agree.shape != selection.chosen.shape:
        raise ValueError(f"consistency_filter: {agree.shape[0]} agreement flags for {len(selection)} pairs")
    return replace(selection, chosen=selection.chosen[agree], rejected=selection.rejected[agree],
                   group_ids=selection.group_ids[agree],
                   dropped_inconsistent=selection.dropped_inconsistent + int((~agree).sum()))


def _win_rate(pos: np.ndarray, neg: np.ndarray) -> tuple[float, int]:
    """(Σ_{i,j} [p_i > n_j] + ½·[p_i = n_j]) / (|pos|·|neg|), and |pos|·|neg|; NaN with no pairs."""
    count = len(pos) * len(neg)
    if count == 0:
        return float("nan"), 0
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / count), count


def judge_answer_agreement(group_ids: np.ndarray, mean_scores: np.ndarray, correct: np.ndarray) -> dict:
    """How well the self-judge's scores agree with an answer check, over judged rows only.

      pairwise_agreement: over every within-prompt pair (i correct, j incorrect), the share with
        s_i > s_j, a tie counting ½; NaN with no such pair. `pairs`: how many pairs.
      auc: the same statistic over all correct x incorrect rows of the batch, across prompts:
        the ROC AUC of the score as a classifier of correctness (Mann–Whitney U / (n₊·n₋), ties
        ½); NaN when either class is empty.
      score_histogram: [6] counts of the mean score rounded half up (2.5 -> 3) to 0..5.

    group_ids [R], mean_scores [R] (NaN: unjudged, left out), correct [R] bool.
    """
    group_ids, scores = np.asarray(group_ids), np.asarray(mean_scores, dtype=np.float64)
    correct, judged = np.asarray(correct, dtype=bool), ~np.isnan(scores)
    wins = pairs = 0.0
    for g in np.unique(group_ids[judged]):
        in_g = judged & (group_ids == g)
        rate, count = _win_rate(scores[in_g & correct], scores[in_g & ~correct])
        if count:
            wins, pairs = wins + rate * count, pairs + count
    auc, _ = _win_rate(scores[judged & correct], scores[judged & ~correct])
    rounded = np.floor(scores[judged] + 0.5).astype(np.int64)
    return {"pairwise_agreement": wins / pairs if pairs else float("nan"), "pairs": int(pairs), "auc": auc,
            "score_histogram": np.bincount(rounded, minlength=6).tolist()}
