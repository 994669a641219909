"""Self-rewarding pair rules and judge diagnostics (learners/self_rewarding.py), by hand."""
import math

import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal
from torch.testing import assert_close

from learners.self_rewarding import (
    agreement_rate,
    build_pairs,
    consistency_filter,
    implicit_agreement,
    judge_answer_agreement,
    sequence_implicit_rewards,
)

NAN = float("nan")
# prompt 0: a clear best (row 1) and worst (row 2)
# prompt 1: all tied at 3 -> dropped as a tie
# prompt 2: one judged response (row 7; row 6 unjudged) -> too few judged
# prompt 3: top score 5 shared by rows 8 and 10, bottom 1 by rows 9 and 11; row 13 unjudged
GROUPS = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 3, 3, 3])
SCORES = np.array([3.0, 4.5, 1.0, 3.0, 3.0, 3.0, NAN, 2.0, 5.0, 1.0, 5.0, 1.0, 4.5, NAN])
LENGTHS = np.array([10, 30, 20, 5, 5, 5, 5, 5, 40, 15, 25, 35, 8, 1])


def test_best_and_worst_per_prompt_with_ties_few_judged_and_unjudged():
    sel = build_pairs(GROUPS, SCORES, LENGTHS, length_control=None)
    # prompt 0: max 4.5 at row 1, min 1 at row 2; prompt 3: max 5 at rows 8 and 10 -> 8 (lowest
    # row), min 1 at rows 9 and 11 -> 9; the unjudged row 13 (shortest of all) is never used
    assert_array_equal(sel.chosen, [1, 8])
    assert_array_equal(sel.rejected, [2, 9])
    assert_array_equal(sel.group_ids, [0, 3])
    assert sel.stats() == {"prompts": 4, "pairs": 2, "dropped_few_judged": 1, "dropped_ties": 1,
                           "dropped_inconsistent": 0}


def test_length_control_picks_the_shortest_near_the_top_and_the_longest_near_the_bottom():
    # τ = .5: prompt 0 (range 1..4.5, midpoint 2.75): C = {s ≥ 4} = {row 1}, W = {s ≤ 1.5} = {row 2}
    # prompt 3 (range 1..5, midpoint 3): C = {s ≥ 4.5} = rows 8 (40), 10 (25), 12 (8) -> row 12;
    #   W = {s ≤ 1.5} = rows 9 (15), 11 (35) -> the longest, row 11
    sel = build_pairs(GROUPS, SCORES, LENGTHS, length_control=0.5)
    assert_array_equal(sel.chosen, [1, 12])
    assert_array_equal(sel.rejected, [2, 11])
    # τ = 0: only the top and bottom scores, ties broken by length: rows 10 (25 < 40) and 11 (35 > 15)
    sel = build_pairs(GROUPS, SCORES, LENGTHS, length_control=0.0)
    assert_array_equal(sel.chosen, [1, 10])
    assert_array_equal(sel.rejected, [2, 11])


def test_length_control_never_prefers_a_response_the_judge_scored_lower():
    # scores 4, 2, 3 with τ = 10: the midpoint 3 bounds both sets, C = {row 0}, W = {row 1}; row 2
    # (score 3, shortest and longest at once) is neither, however large τ
    sel = build_pairs(np.zeros(3, int), np.array([4.0, 2.0, 3.0]), np.array([9, 1, 5]), length_control=10.0)
    assert (sel.chosen.tolist(), sel.rejected.tolist()) == ([0], [1])
    # equal lengths: ties go to the lowest row index (rows 0, 1 at 5; rows 2, 3 at 1)
    sel = build_pairs(np.zeros(4, int), np.array([5.0, 5.0, 1.0, 1.0]), np.ones(4), length_control=1.0)
    assert (sel.chosen.tolist(), sel.rejected.tolist()) == ([0], [2])
    with pytest.raises(ValueError, match="length"):
        build_pairs(np.zeros(2, int), np.array([1.0, 2.0]), None, length_control=0.5)


def test_sequence_implicit_rewards_and_the_consistency_filter():
    # β = .5: row r's reward is .5·Σ_t m·(logπ − logπ_ref)
    logprobs = torch.tensor([[-1.0, -1.0], [-2.0, -9.0], [-1.0, -1.0], [-0.5, -0.5]])
    ref = torch.tensor([[-2.0, -1.0], [-1.0, 0.0], [-1.0, -1.0], [-1.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    # row 0: .5·(1 + 0) = .5; row 1: .5·(-1) = -.5 (padding ignored); row 2: 0; row 3: .5·(.5 + .5) = .5
    rewards = sequence_implicit_rewards(logprobs, ref, mask, beta=0.5)
    assert_close(rewards, torch.tensor([0.5, -0.5, 0.0, 0.5]))
    # prompt 0 rows 0-1, judge prefers row 0; prompt 1 rows 2-3, judge prefers row 2
    sel = build_pairs(np.array([0, 0, 1, 1]), np.array([5.0, 1.0, 4.0, 2.0]), None, None)
    agree = implicit_agreement(sel, rewards)
    # pair 0: .5 > -.5 agrees; pair 1: 0 > .5 does not
    assert agree.tolist() == [True, False]
    assert agreement_rate(agree) == 0.5
    kept = consistency_filter(sel, agree)
    assert (kept.chosen.tolist(), kept.rejected.tolist(), kept.group_ids.tolist()) == ([0], [1], [0])
    assert kept.stats()["dropped_inconsistent"] == 1 and kept.stats()["pairs"] == 1
    # equal implicit rewards rank nothing: a disagreement
    assert implicit_agreement(sel, torch.zeros(4)).tolist() == [False, False]
    assert math.isnan(agreement_rate(np.zeros(0, bool)))
    with pytest.raises(ValueError):
        consistency_filter(sel, np.array([True]))


def test_judge_answer_agreement_with_ties_by_hand():
    groups = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    scores = np.array([4.0, 2.0, 4.0, 3.0, 3.0, NAN, 5.0, 2.5])
    correct = np.array([True, False, False, True, False, False, True, True])
    out = judge_answer_agreement(groups, scores, correct)
    # within-prompt (correct, incorrect) pairs of judged rows:
    #   prompt 0: (4 vs 2) win, (4 vs 4) tie -> 1.5 of 2; prompt 1: (3 vs 3) tie -> .5 of 1 (row 5
    #   unjudged); prompt 2: no incorrect row -> none.   (1.5 + .5) / 3 = 2/3
    assert out["pairs"] == 3
    assert out["pairwise_agreement"] == pytest.approx(2 / 3)
    # AUC over the batch: correct {4, 3, 5, 2.5} vs incorrect {2, 4, 3}
    #   4: >2, =4, >3 -> 2.5;  3: >2, <4, =3 -> 1.5;  5: 3;  2.5: >2 -> 1   total 8 of 12
    assert out["auc"] == pytest.approx(8 / 12)
    # rounded half up: 4, 2, 4, 3, 3, 5, 3 (2.5 -> 3) -> counts of 0..5
    assert out["score_histogram"] == [0, 0, 1, 3, 2, 1]


def test_judge_answer_agreement_is_nan_when_a_class_is_empty():
    out = judge_answer_agreement(np.array([0, 0]), np.array([1.0, 4.0]), np.array([True, True]))
    assert math.isnan(out["auc"]) and math.isnan(out["pairwise_agreement"]) and out["pairs"] == 0
    # a perfect judge: every correct response above every incorrect one
    out = judge_answer_agreement(np.array([0, 0, 1, 1]), np.array([5.0, 1.0, 4.0, 0.0]),
                                 np.array([True, False, True, False]))
    assert out["auc"] == 1.0 and out["pairwise_agreement"] == 1.0 and out["score_histogram"] == [1, 1, 0, 0, 1, 1]
