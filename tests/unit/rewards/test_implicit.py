"""The implicit reward β·(log π − log π_ref) of rewards/implicit.py: token and sequence values,
and both models run over padded batches of token ids."""
import numpy as np
import pytest
import torch

from rewards.base import Basis, Expression, Format, Granularity, Sample, Taxonomy
from rewards.implicit import Implicit, ImplicitConfig, implicit_token_rewards


LOGPROBS = torch.tensor([[-1.0, -2.0, -0.5], [-0.25, -3.0, 0.0]])
REF_LOGPROBS = torch.tensor([[-1.5, -1.0, -0.5], [-0.75, float("-inf"), float("nan")]])
MASK = torch.tensor([[1, 1, 1], [1, 0, 0]])


def test_implicit_token_rewards():
    # β = 0.5; row 0: 0.5·(-1 + 1.5) = 0.25, 0.5·(-2 + 1) = -0.5, 0.5·0 = 0
    # row 1: 0.5·(-0.25 + 0.75) = 0.25; padding is 0 even where ref_logprobs is -inf / NaN
    out = implicit_token_rewards(LOGPROBS, REF_LOGPROBS, MASK, beta=0.5)
    torch.testing.assert_close(out, torch.tensor([[0.25, -0.5, 0.0], [0.25, 0.0, 0.0]]))


def test_implicit_reward_runs_both_models_over_the_token_ids(tiny_model_path, tiny_reference_model_path):
    """token_values in padded batches (prompts and responses of different lengths, an empty
    response) equal β·(log π − log π_ref) from unpadded forwards of each sequence alone."""
    from core.models import load_policy
    from core.ops import token_logprobs

    ref_path = tiny_reference_model_path
    reward = Implicit(ImplicitConfig(model=tiny_model_path, reference=ref_path, beta=0.5, batch_size=2))
    assert reward.taxonomy == Taxonomy(Basis.JUDGE, Format.SCALAR, Expression.IMPLICIT, Granularity.TOKEN)
    prompts = [np.array([5, 6, 7]), np.array([9]), np.array([3, 4]), np.array([8, 8, 8, 8])]
    responses = [np.array([11, 12]), np.array([13, 14, 15, 16]), np.array([], dtype=np.int64), np.array([17])]
    values = reward.token_values(prompts, responses)

    models = [load_policy(p).eval() for p in (tiny_model_path, ref_path)]
    for prompt, response, got in zip(prompts, responses, values):
        assert got.shape == (len(response),)
        if len(response) == 0:
            continue
        ids = torch.tensor(np.concatenate([prompt, response])[None])
        with torch.no_grad():
            lp = [token_logprobs(m(input_ids=ids).logits[:, len(prompt) - 1:-1], ids[:, len(prompt):])[0] for m in models]
        torch.testing.assert_close(torch.from_numpy(got).float(), 0.5 * (lp[0] - lp[1]))
    # A model against itself has no implicit reward; text scoring sums the token values.
    same = Implicit(ImplicitConfig(model=tiny_model_path, reference=tiny_model_path))
    assert all((v == 0).all() for v in same.token_values(prompts, responses))
    assert same.score(Sample("What is 2 + 2?", " 4")) == 0.0
    with pytest.raises(ValueError):
        ImplicitConfig(model="m", reference="r", beta=0.0)
