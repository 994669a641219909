"""Step rewards reach the learner as token rewards: reward actor -> driver combination -> PPO."""
import numpy as np
import torch
from torch.testing import assert_close

from actors.reward import RewardActor
from cluster.recipe import load_recipe
from core.protocol import Rollouts, RolloutTensors, Scores
from learners.algos.base import token_level_rewards
from core.models import ensure_tokenizer, load_tokenizer
from rewards.combine import token_rewards


def test_token_rewards_keep_step_credit_and_sum_to_the_combined_value():
    # sample 0: 4 tokens, step term tokens [0, 1, 0, -1] (its sequence value min = -1), seq term 1.0
    # weights step 0.5, seq 2.0 -> v = 0.5·(-1) + 2·1 = 1.5
    # tokens: 0.5·[0, 1, 0, -1] = [0, .5, 0, -.5] (sum 0); last += v - 0 = 1.5 -> [0, .5, 0, 1.0]
    # sample 1: empty response -> []
    out = token_rewards(np.array([1.5, 0.0]), {"steps": [np.array([0.0, 1.0, 0.0, -1.0]), np.zeros(0)]},
                        {"steps": 0.5, "seq": 2.0}, [4, 0])
    assert_close(torch.tensor(out[0]), torch.tensor([0.0, 0.5, 0.0, 1.0], dtype=torch.float64))
    assert out[1].shape == (0,)
    assert out[0].sum() == 1.5


def test_ppo_token_level_rewards_use_step_tokens_and_the_kl_penalty():
    scores = Scores(values=np.array([2.0]), terms={}, errors=[None], token_rewards=[np.array([1.0, 0.0, 1.0])])
    tensors = RolloutTensors(input_ids=torch.zeros(1, 5, dtype=torch.long),
                             attention_mask=torch.ones(1, 5, dtype=torch.long),
                             response_mask=torch.tensor([[1.0, 1.0, 1.0, 0.0]]),
                             rollout_logprobs=torch.tensor([[-1.0, -1.0, -1.0, 0.0]]),
                             ref_logprobs=torch.tensor([[-2.0, -1.0, -1.0, 0.0]]))
    # tokens [1, 0, 1, 0]; rest = 2 - 2 = 0 on the last valid token; KL 0.5·(lp - ref) = [0.5, 0, 0]
    assert_close(token_level_rewards(scores, tensors, 0.5), torch.tensor([[0.5, 0.0, 1.0, 0.0]]))


def test_reward_actor_places_step_values_on_the_tokens_that_end_each_step():
    tok = load_tokenizer(str(ensure_tokenizer()))
    cfg = load_recipe("recipes/grpo_arith.yaml", ["rewards=[{name: step_arith}, {name: math_correct}]"])
    actor = RewardActor(cfg.rewards, 10.0, str(ensure_tokenizer()))
    text = "2 + 2 = 4\n4 * 3 = 13"
    ids = np.array(tok(text, add_special_tokens=False)["input_ids"])
    rollouts = Rollouts(prompt_ids=[np.array([1])], response_ids=[ids], rollout_logprobs=[np.zeros(len(ids))],
                        response_texts=[text], finish_reasons=["stop"], group_ids=np.array([0]),
                        policy_versions=np.array([0]), prompt_texts=["q"], answers=["12"])
    out = actor.score(rollouts)
    tokens = out.token_terms["step_arith"][0]
    ends = [i for i, t in enumerate(ids) if tok.decode(ids[: i + 1]).endswith(("= 4", "= 13"))]
    # the first step is true (+1 on the token ending "4"), the second false (-1 on the last token)
    assert tokens[ends[0]] == 1.0 and tokens[len(ids) - 1] == -1.0
    assert np.count_nonzero(tokens) == 2
    assert out.terms["step_arith"][0] == -1.0  # min over steps
    assert out.errors == [None]
