"""The reward actor (actors/reward.py): raw terms per sample for the driver to combine, and step
values placed on the tokens that end each step."""
import numpy as np

from actors.reward import RewardActor
from cluster.recipe import load_recipe
from rewards.combine import Combiner
from tests.helpers import make_rollouts


def test_reward_actor_returns_raw_terms_that_the_driver_combines():
    cfg = load_recipe("recipes/grpo_arith.yaml", [
        "rewards=[{name: math_correct}, {name: length_penalty, weight: 0.5, args: {free_tokens: 1, coef: 1}}]"])
    rollouts = make_rollouts(
        [0, 0], prompt_ids=[np.array([1])] * 2, response_ids=[np.array([5]), np.array([5, 6, 7])],
        rollout_logprobs=[np.zeros(1), np.zeros(3)], response_texts=["4", "It is 5"], prompt_texts=["2 + 2?"] * 2,
        answers=["4"] * 2)
    raw = RewardActor(cfg.rewards, timeout_s=5).score(rollouts)
    assert raw.terms["math_correct"].tolist() == [1.0, 0.0]
    assert raw.terms["length_penalty"].tolist() == [0.0, -2.0]   # 3 tokens, 1 free
    # 1 + 0.5·0 = 1; 0 + 0.5·(−2) = −1
    assert Combiner(cfg.rewards, cfg.reward.combine)(raw.terms, rollouts.group_ids).tolist() == [1.0, -1.0]


def test_reward_actor_places_step_values_on_the_tokens_that_end_each_step(tokenizer, tiny_tokenizer_path):
    tok = tokenizer
    cfg = load_recipe("recipes/grpo_arith.yaml", ["rewards=[{name: step_arith}, {name: math_correct}]"])
    actor = RewardActor(cfg.rewards, 10.0, tiny_tokenizer_path)
    text = "2 + 2 = 4\n4 * 3 = 13"
    ids = np.array(tok(text, add_special_tokens=False)["input_ids"])
    rollouts = make_rollouts([0], prompt_ids=[np.array([1])], response_ids=[ids], rollout_logprobs=[np.zeros(len(ids))],
                             response_texts=[text], prompt_texts=["q"], answers=["12"])
    out = actor.score(rollouts)
    tokens = out.token_terms["step_arith"][0]
    ends = [i for i, t in enumerate(ids) if tok.decode(ids[: i + 1]).endswith(("= 4", "= 13"))]
    # the first step is true (+1 on the token ending "4"), the second false (-1 on the last token)
    assert tokens[ends[0]] == 1.0 and tokens[len(ids) - 1] == -1.0
    assert np.count_nonzero(tokens) == 2
    assert out.terms["step_arith"][0] == -1.0  # min over steps
    assert out.errors == [None]
