"""Self-rewarding (learners/algos/self_rewarding.py): pairs from the self-judge's mean scores,
placeholders of weight 0 for dropped prompts, consistency filter and metrics, by hand."""
import numpy as np
import pytest
import torch

from cluster.recipe import load_recipe
from learners.algos.self_rewarding import SelfRewarding, SelfRewardingConfig
from rewards.self_judge import JUDGE_TERM
from tests.helpers import make_rollouts, make_scores, make_tensors


def step(judged, correct, consistency="log"):
    """Two prompts x 3 responses of one token each; rollout logprob − ref logprob per row: `gap`."""
    algo = SelfRewarding(SelfRewardingConfig(beta=0.5, samples_per_prompt=3, consistency=consistency))
    rollouts = make_rollouts([0, 0, 0, 1, 1, 1], response_ids=[np.array([7])] * 6)
    gap = torch.tensor([[0.2], [0.6], [0.0], [0.0], [0.0], [0.0]])
    tensors = make_tensors([[1]] * 6, rollout_logprobs=gap - 1.0, ref_logprobs=torch.full((6, 1), -1.0))
    scores = make_scores(np.zeros(6))
    scores.terms.update({JUDGE_TERM: np.array(judged, dtype=float), "math_correct": np.array(correct, dtype=float)})
    return algo, algo.prepare(rollouts, scores, tensors)


def test_pairs_from_judge_scores_with_placeholders_for_dropped_prompts():
    # prompt 0: scores 4, 1, unjudged -> chosen row 0, rejected row 1; prompt 1: 2, 2, 2 -> a tie, dropped
    algo, (batch, metrics) = step([4, 1, np.nan, 2, 2, 2], [1, 0, 0, 1, 0, 1])
    assert batch.input_ids[:, 0].tolist() == [0, 2, 0, 2]  # rows (0, 1), then the placeholder (0, 1)
    assert batch.extras.pair_weight.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert len(batch) == algo.train_rows(2) == 4
    assert algo.normaliser(batch, 1).num_seqs == 1
    assert metrics["judge/pairs"] == 1 and metrics["judge/dropped_ties"] == 1 and metrics["judge/pairs_kept_frac"] == 0.5
    # correct vs incorrect judged pairs within a prompt: (0 vs 1): 4 > 1 -> 1; prompt 1: rows 3, 5
    # vs row 4, all 2 -> ties, ½ each: (1 + ½ + ½) / 3
    assert metrics["judge/answer_agreement"] == pytest.approx(2 / 3)
    assert metrics["judge/chosen_correct"] == 1.0 and metrics["judge/rejected_correct"] == 0.0
    # implicit reward β·gap: chosen 0.5·0.2 = 0.1 < rejected 0.5·0.6 = 0.3 -> the pair disagrees
    assert metrics["judge/implicit_agreement"] == 0.0


def test_consistency_filter_drops_pairs_the_implicit_reward_disagrees_with():
    _, (batch, metrics) = step([4, 1, np.nan, 2, 2, 2], [1, 0, 0, 1, 0, 1], consistency="filter")
    assert batch.extras.pair_weight.tolist() == [0.0, 0.0, 0.0, 0.0]
    assert metrics["judge/pairs"] == 0 and metrics["judge/dropped_inconsistent"] == 1
    # the judge prefers the low-gap row: swapping the scores makes the pair agree, and it stays
    _, (batch, metrics) = step([1, 4, np.nan, 2, 2, 2], [1, 0, 0, 1, 0, 1], consistency="filter")
    assert batch.input_ids[:, 0].tolist()[:2] == [2, 0] and batch.extras.pair_weight.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert metrics["judge/implicit_agreement"] == 1.0


def test_loss_counts_only_kept_pairs():
    algo, (batch, _) = step([4, 1, np.nan, 2, 2, 2], [1, 0, 0, 1, 0, 1])
    logprobs = batch.rollout_logprobs.clone().requires_grad_()
    loss, _ = algo.loss(batch, logprobs, algo.normaliser(batch, 1))
    # the kept pair: h = (−0.8 + 1) − (−0.4 + 1) = −0.4; DPO −log σ(0.5 · −0.4) = log(1 + e^0.2)
    assert loss.item() == pytest.approx(float(np.log1p(np.exp(0.2))), rel=1e-6)
    loss.backward()
    assert logprobs.grad[2:].abs().sum() == 0  # the placeholder pair has no gradient


def test_iterative_recipe_must_split_steps_into_iterations():
    with pytest.raises(ValueError, match=r"algo.iterations: 3 iterations of train.sync_every=4 steps each need "
                                         r"train.steps=12 \(got 10\)"):
        load_recipe("recipes/self_rewarding_iterative_arith.yaml", ["train.steps=10"])
    cfg = load_recipe("recipes/self_rewarding_iterative_arith.yaml")
    needs = SelfRewarding(cfg.algo).needs()
    assert needs.reference_follows_policy and needs.judge.k == 3 and needs.samples_per_prompt == 4
    assert not SelfRewarding(load_recipe("recipes/self_rewarding_arith.yaml").algo).needs().reference_follows_policy
