"""Online DPO / IPO (learners/algos/online_dpo.py): pairs ordered chosen-first, ties weighted out, and
the DPO / IPO losses by hand, with hard, soft and sampled preference labels."""
import math
from dataclasses import replace

import numpy as np
import torch
from torch.testing import assert_close

from learners.algos.online_dpo import (
    OnlineDPO,
    OnlineDPOConfig,
    OnlineIPO,
    OnlineIPOConfig,
    pair_labels,
)
from tests.helpers import make_rollouts, make_scores, make_tensors


def test_online_dpo_orders_pairs_and_weights_out_ties():
    algo = OnlineDPO(OnlineDPOConfig(beta=0.5))
    tensors = make_tensors([[1, 1]] * 4)
    batch, metrics = algo.prepare(make_rollouts([0, 0, 1, 1]), make_scores([0.0, 1.0, 1.0, 1.0]), tensors)
    # pair 0: the second sample wins -> rows (1, 0); pair 1 is a tie -> kept with weight 0
    assert batch.input_ids[:, 0].tolist() == [3, 0, 6, 9]
    assert batch.extras.pair_weight.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert metrics["train/decided_pair_frac"] == 0.5
    norm = algo.normaliser(batch, 2)
    assert norm.num_seqs == 1

    batch = replace(batch, ref_logprobs=torch.tensor([[-1.0, -1.0], [-1.0, -1.0], [0.0, 0.0], [0.0, 0.0]]))
    logprobs = torch.tensor([[-0.5, -0.5], [-1.5, -1.5], [-3.0, 0.0], [0.0, 0.0]])
    loss, m = algo.loss(batch, logprobs, norm)
    # h = (-1 - -2) - (-3 - -2) = 2;  β·h = 1;  dpo: -log σ(1) = log(1 + e^-1) = 0.31326
    assert_close(loss, torch.tensor(math.log1p(math.exp(-1.0))))
    assert_close(m["train/reward_margin"], torch.tensor(1.0))
    ipo = OnlineIPO(OnlineIPOConfig(beta=0.5))
    # ipo: (h - 1/(2β))² = (2 - 1)² = 1
    assert_close(ipo.loss(batch, logprobs, norm)[0], torch.tensor(1.0))



# A step of two pairs with P(first ≻ second) = (.2, .5): pair 0's second sample is preferred, so
# its rows go (1, 0); pair 1 is a tie and keeps (2, 3). With the logprobs below, per pair
#   pair 0: h = (-1 - -2) - (-3 - -2) = 2,   β·h = 1      (β = .5, so 1/(2β) = 1)
#   pair 1: h = (-3 - 0) - (0 - 0) = -3,     β·h = -1.5
REF = torch.tensor([[-1.0, -1.0], [-1.0, -1.0], [0.0, 0.0], [0.0, 0.0]])
LOGPROBS = torch.tensor([[-0.5, -0.5], [-1.5, -1.5], [-3.0, 0.0], [0.0, 0.0]])


def _two_pair_step(algo):
    scores = make_scores([0.0] * 4, preferences=np.array([0.2, 0.5]))
    batch, metrics = algo.prepare(make_rollouts([0, 0, 1, 1]), scores, make_tensors([[1, 1]] * 4))
    assert batch.input_ids[:, 0].tolist() == [3, 0, 6, 9]  # rows (1, 0, 2, 3)
    assert metrics == {"train/decided_pair_frac": 0.5}  # whatever the labels
    batch = replace(batch, ref_logprobs=REF)
    return batch, algo.normaliser(batch, 2)


def test_soft_labels_train_towards_p_and_keep_ties():
    ipo = OnlineIPO(OnlineIPOConfig(beta=0.5, labels="soft"))
    batch, norm = _two_pair_step(ipo)
    # q = P(preferred ≻ other) = (.8, .5); a soft tie is in the loss: weight 1, n = 2 pairs
    assert_close(batch.extras.pair_label, torch.tensor([0.8, 0.8, 0.5, 0.5]))
    assert batch.extras.pair_weight.tolist() == [1.0] * 4
    assert norm.num_seqs == 2
    loss, m = ipo.loss(batch, LOGPROBS, norm)
    # ipo: q·(h - 1)² + (1 - q)·(h + 1)²
    #   pair 0: .8·(2 - 1)² + .2·(2 + 1)² = .8 + 1.8 = 2.6
    #   pair 1: .5·(-3 - 1)² + .5·(-3 + 1)² = 8 + 2 = 10          loss = (2.6 + 10) / 2 = 6.3
    assert_close(loss, torch.tensor(6.3))
    # metrics are expectations over the label: margin E[(2q - 1)·βh] = (.6·1 + 0·-1.5) / 2 = .3;
    # accuracy E[q·[βh > 0] + (1 - q)·[βh < 0]] = (.8·1 + .5·1) / 2 = .65
    assert_close(m["train/reward_margin"], torch.tensor(0.3))
    assert_close(m["train/pref_accuracy"], torch.tensor(0.65))

    dpo = OnlineDPO(OnlineDPOConfig(beta=0.5, labels="soft"))
    # dpo: -q·log σ(βh) - (1 - q)·log σ(-βh), with -log σ(x) = log(1 + e^-x)
    #   pair 0: .8·log(1 + e^-1) + .2·log(1 + e^1);  pair 1: .5·log(1 + e^1.5) + .5·log(1 + e^-1.5)
    pair0 = 0.8 * math.log1p(math.exp(-1.0)) + 0.2 * math.log1p(math.exp(1.0))
    pair1 = 0.5 * math.log1p(math.exp(1.5)) + 0.5 * math.log1p(math.exp(-1.5))
    assert_close(dpo.loss(batch, LOGPROBS, norm)[0], torch.tensor((pair0 + pair1) / 2))


def test_hard_labels_are_the_default_and_unchanged():
    hard = OnlineIPO(OnlineIPOConfig(beta=0.5))
    assert hard.cfg.labels == "hard"
    batch, norm = _two_pair_step(hard)
    assert batch.extras.pair_label.tolist() == [1.0] * 4
    assert batch.extras.pair_weight.tolist() == [1.0, 1.0, 0.0, 0.0]
    # only pair 0, as a full win: (2 - 1)² = 1 over n = 1 pair
    assert_close(hard.loss(batch, LOGPROBS, norm)[0], torch.tensor(1.0))


class FixedUniforms:
    """A stand-in generator whose uniforms are given."""

    def __init__(self, u):
        self.u = np.asarray(u)

    def random(self, n):
        return self.u[:n]


def test_sampled_labels_and_their_loss():
    # P = (.2, .5, 1, 0): the preferred side has P (.8, .5, 1, 1); the label is [u < that]
    label, weight = pair_labels(np.array([0.2, 0.5, 1.0, 0.0]), "sampled", FixedUniforms([0.7, 0.5, 0.99, 0.0]))
    assert label.tolist() == [1.0, 0.0, 1.0, 1.0]  # .7 < .8; .5 is not < .5; P of 1 or 0: always
    assert weight.tolist() == [1.0] * 4
    sampled = OnlineIPO(OnlineIPOConfig(beta=0.5, labels="sampled"))
    batch, norm = _two_pair_step(sampled)
    assert batch.extras.pair_weight.tolist() == [1.0] * 4 and norm.num_seqs == 2
    batch = replace(batch, extras=replace(batch.extras, pair_label=torch.tensor([1.0, 1.0, 0.0, 0.0])))
    # pair 0 won by its preferred row: (2 - 1)² = 1; the tie drawn for its second row: (-3 + 1)² = 4
    loss, m = sampled.loss(batch, LOGPROBS, norm)
    assert_close(loss, torch.tensor((1.0 + 4.0) / 2))
    # margin toward the drawn winner: (1 + 1.5) / 2; both pairs rank it first
    assert_close(m["train/reward_margin"], torch.tensor(1.25))
    assert_close(m["train/pref_accuracy"], torch.tensor(1.0))


def test_sampled_labels_are_seeded_by_the_batch_and_drawn_from_p():
    n = 4000
    scores = make_scores([0.0] * 2 * n, preferences=np.full(n, 0.3))  # the second sample: P = .7

    def labels(seed, version):
        algo = OnlineIPO(OnlineIPOConfig(labels="sampled", label_seed=seed))
        rollouts = make_rollouts(np.repeat(np.arange(n), 2), policy_versions=np.full(2 * n, version))
        return algo.prepare(rollouts, scores, make_tensors([[1]] * 2 * n))[0].extras.pair_label[0::2]

    first = labels(0, 0)
    assert torch.equal(first, labels(0, 0))  # the same batch and seed: the same draws
    assert not torch.equal(first, labels(1, 0)) and not torch.equal(first, labels(0, 1))
    # mean of 4,000 Bernoulli(.7): sd √(.21/4000) = .0072; .03 is > 4 sd
    assert abs(first.mean().item() - 0.7) < 0.03
