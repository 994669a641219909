"""What algorithms share (learners/algos/base.py): token-level rewards for the token-level estimators
and the importance corrections (is_correction) of the clipped policy loss."""
from typing import get_args

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from core.protocol import RolloutTensors, Scores, TrainBatch
from learners.algos.base import IS_KNOBS, PolicyGradientConfig, token_level_rewards
from learners.algos.grpo import GRPO, GRPOConfig
from learners.losses import IS_CORRECTIONS


def test_ppo_token_level_rewards_use_step_tokens_and_the_kl_penalty():
    scores = Scores(values=np.array([2.0]), terms={}, errors=[None], token_rewards=[np.array([1.0, 0.0, 1.0])])
    tensors = RolloutTensors(input_ids=torch.zeros(1, 5, dtype=torch.long),
                             attention_mask=torch.ones(1, 5, dtype=torch.long),
                             response_mask=torch.tensor([[1.0, 1.0, 1.0, 0.0]]),
                             rollout_logprobs=torch.tensor([[-1.0, -1.0, -1.0, 0.0]]),
                             ref_logprobs=torch.tensor([[-2.0, -1.0, -1.0, 0.0]]))
    # tokens [1, 0, 1, 0]; rest = 2 - 2 = 0 on the last valid token; KL 0.5·(lp - ref) = [0.5, 0, 0]
    assert_close(token_level_rewards(scores, tensors, 0.5), torch.tensor([[0.5, 0.0, 1.0, 0.0]]))


def _is_batch(old_logprobs, rollout_logprobs, mask, advantages=(1.0, 1.0)):
    b, t = mask.shape
    return TrainBatch(input_ids=torch.zeros(b, t + 1, dtype=torch.long), attention_mask=torch.ones(b, t + 1, dtype=torch.long),
                      response_mask=mask, rollout_logprobs=rollout_logprobs, advantages=torch.tensor(advantages[:b]),
                      old_logprobs=old_logprobs)


def test_truncated_importance_sampling_uses_learner_old_logprobs_and_caps_the_weight():
    algo = GRPO(GRPOConfig(is_correction="tis", is_cap=2.0, clip_eps=0.2))
    assert algo.needs().old_logprobs
    lp = torch.log(torch.tensor([[0.5, 0.5]]))
    batch = _is_batch(lp.clone(), torch.log(torch.tensor([[0.1, 0.4]])), torch.ones(1, 2))
    loss, m = algo.loss(batch, lp, algo.normaliser(batch, 2))
    # ρ = π/π_old = 1 on both tokens -> surrogate -1·A = -1 each
    # w = min(π_old/π_rollout, 2) = [min(5, 2), min(1.25, 2)] = [2, 1.25]; token mean of -w = -1.625
    assert_close(loss, torch.tensor(-1.625))
    assert_close(m["train/is_weight"], torch.tensor(1.625))
    assert_close(m["train/is_truncated_frac"], torch.tensor(0.5))


def test_no_correction_takes_the_ratio_against_the_rollout_and_needs_no_old_logprobs():
    algo = GRPO(GRPOConfig(clip_eps=0.2))
    assert algo.cfg.is_correction == "none" and not algo.needs().old_logprobs
    lp = torch.log(torch.tensor([[0.5, 0.5]]))
    batch = _is_batch(None, torch.log(torch.tensor([[0.5, 0.4]])), torch.ones(1, 2))
    loss, m = algo.loss(batch, lp, algo.normaliser(batch, 2))
    # ρ = π/π_rollout = [1, 1.25]; A = 1, clip at 1.2 -> -[1, 1.2], mean -1.1; no is_* metric
    assert_close(loss, torch.tensor(-1.1))
    assert not any(k.startswith("train/is_") for k in m)


# r = π_old/π_rollout: row 0 [.25, 1, 4], row 1 [1.5, 3, pad]; band (.5, 2), cap 2:
#   tis: no token weight is 0;  icepop: r = .25, 4, 3 are out of the band;
#   seq_mask_tis: row 1's geometric mean √4.5 = 2.12 > 2, row 0's is 1.
IS_ZERO_GRADIENT = {
    "none": [[0, 0, 0], [0, 0, 1]],
    "tis": [[0, 0, 0], [0, 0, 1]],
    "icepop": [[1, 0, 1], [0, 1, 1]],
    "seq_mask_tis": [[0, 0, 0], [1, 1, 1]],
}


@pytest.mark.parametrize("mode", list(IS_ZERO_GRADIENT))
def test_masked_tokens_and_sequences_get_no_gradient(mode):
    knobs = {} if mode == "none" else {"is_correction": mode}
    algo = GRPO(GRPOConfig(clip_eps=0.2, **knobs))
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rollout = torch.log(torch.tensor([[0.8, 0.5, 0.1], [0.4, 0.2, 1.0]]))
    old = torch.log(torch.tensor([[0.2, 0.5, 0.4], [0.6, 0.6, 1.0]]))
    batch = _is_batch(old, rollout, mask)
    # π = π_old (or π_rollout for none): ρ = 1, unclipped, so dℓ/dlog π_t = -A·w_t / 5 ≠ 0 unless w_t = 0
    logprobs = (rollout if mode == "none" else old).clone().requires_grad_()
    loss, _ = algo.loss(batch, logprobs, algo.normaliser(batch, 3))
    (grad,) = torch.autograd.grad(loss, logprobs)
    zero = torch.tensor(IS_ZERO_GRADIENT[mode], dtype=torch.bool)
    assert (grad[zero] == 0).all()
    assert (grad[~zero] != 0).all()


@pytest.mark.parametrize("knobs,message", [
    ({"is_correction": "icepop", "is_band": (1.0, 2.0)}, "0 < low < 1 < high"),
    ({"is_correction": "icepop", "is_band": (0.5, 0.9)}, "0 < low < 1 < high"),
    ({"is_correction": "seq_mask_tis", "is_band": (0.0, 2.0)}, "0 < low < 1 < high"),
    ({"is_correction": "seq_mask_tis", "is_band": (2.0, 0.5)}, "0 < low < 1 < high"),
    ({"is_correction": "tis", "is_cap": 0.0}, "is_cap"),
    ({"is_correction": "tis", "is_cap": -1.0}, "is_cap"),
    ({"is_correction": "clip"}, "is_correction"),
    ({"is_correction": "tis", "is_band": (0.6, 2.0)}, "is_band: no effect with is_correction=tis"),
    ({"is_correction": "icepop", "is_cap": 3.0}, "is_cap: no effect with is_correction=icepop"),
    ({"is_cap": 3.0, "is_band": (0.5, 3.0)}, "is_band and is_cap: no effect with is_correction=none"),
])
def test_importance_correction_config_rejects_bad_knobs(knobs, message):
    with pytest.raises(ValueError, match=message):
        GRPOConfig(**knobs)


def test_every_importance_correction_has_its_knobs_and_weights():
    modes = set(get_args(PolicyGradientConfig.model_fields["is_correction"].annotation))
    assert modes == set(IS_KNOBS) == {"none", *IS_CORRECTIONS}


def test_importance_correction_config_accepts_its_knobs():
    cfg = GRPOConfig(is_correction="seq_mask_tis", is_cap=3.0, is_band=(0.8, 1.25))
    assert (cfg.is_cap, cfg.is_band) == (3.0, (0.8, 1.25))
    assert GRPOConfig(is_correction="icepop", is_band=[0.4, 5.0]).is_band == (0.4, 5.0)  # YAML gives a list
    # a dumped config (every field, defaults included) validates again
    assert GRPOConfig(**GRPOConfig(is_correction="icepop").model_dump()).is_correction == "icepop"
