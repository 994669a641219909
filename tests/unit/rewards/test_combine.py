"""Combinators of rewards/combine.py: pure functions, the driver-side Combiner, token rewards from
step terms, and the recipe keys."""
import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from cluster.recipe import ConfigError, load_recipe
from rewards.combine import (EPS, CombineConfig, Combiner, RunningMoments, TermCombineConfig, clip, group_normalize,
                             log_sigmoid, maxmin, reward_group_sums, reward_groups, running_normalize, token_rewards,
                             whiten)

RECIPE = "recipes/grpo_arith.yaml"
LN3 = math.log(3)


def test_weighted_sum_is_one_reward_group():
    values = np.array([[1.0, 0.0], [1.0, 0.5]])
    # [1·1 + 0.1·1, 1·0 + 0.1·0.5] = [1.1, 0.05]
    assert reward_group_sums(values, np.array([1.0, 0.1]), np.ones((1, 2)))[0].tolist() == pytest.approx([1.1, 0.05])


def test_reward_group_sums():
    values = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    membership = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    sums = reward_group_sums(values, np.array([1.0, 1.0, 0.5]), membership)
    # group 0 = r1 + 0.5·r3 = [1 + 1, 0 + 1] = [2, 1]; group 1 = r2 = [0, 1]
    assert sums.tolist() == [[2.0, 1.0], [0.0, 1.0]]


def test_maxmin_takes_the_group_with_the_lowest_batch_mean():
    values, g = maxmin(np.array([[2.0, 1.0], [0.0, 1.0]]))  # means 1.5, 0.5
    assert (values.tolist(), g) == ([0.0, 1.0], 1)
    values, g = maxmin(np.array([[1.0, 0.0], [0.0, 1.0]]))  # tie at 0.5: the first group
    assert (values.tolist(), g) == ([1.0, 0.0], 0)


def test_log_sigmoid():
    r = np.array([0.0, LN3, -LN3, 1000.0, -1000.0])
    # σ(0) = 1/2, σ(ln 3) = 3/4, σ(−ln 3) = 1/4; far from the reference: 0 and r − r_ref, no overflow
    expected = [math.log(0.5), math.log(0.75), math.log(0.25), 0.0, -1000.0]
    assert log_sigmoid(r, 0.0).tolist() == pytest.approx(expected)
    assert log_sigmoid(r + 2.0, 2.0).tolist() == pytest.approx(expected)


def test_whiten():
    # mean 4, deviations [−2, 0, 2], sample variance (4 + 0 + 4) / 2 = 4, std 2
    assert whiten(np.array([2.0, 4.0, 6.0])).tolist() == pytest.approx([-2 / (2 + EPS), 0.0, 2 / (2 + EPS)])
    assert whiten(np.array([5.0])).tolist() == [0.0]


def test_group_normalize():
    x = np.array([2.0, 4.0, 6.0, 10.0, 10.0, 7.0])
    group_ids = np.array([0, 0, 0, 1, 1, 2])
    # group 0 as in test_whiten; group 1 has no spread: 0; group 2 has one sample: 0
    expected = [-2 / (2 + EPS), 0.0, 2 / (2 + EPS), 0.0, 0.0, 0.0]
    assert group_normalize(x, group_ids).tolist() == pytest.approx(expected)


def test_running_moments_merge_batches_exactly():
    m = RunningMoments()
    m.update(np.array([1.0, 3.0]))
    assert (m.count, m.mean, m.m2) == (2, 2.0, 2.0)
    m.update(np.array([5.0]))
    # δ = 5 − 2 = 3; mean = 2 + 3·1/3 = 3; m2 = 2 + 0 + 3²·2·1/3 = 8 (= 4 + 0 + 4 around 3); std = √(8/2) = 2
    assert (m.count, m.mean, m.m2, m.std) == (3, 3.0, 8.0, 2.0)


def test_running_normalize_includes_the_current_batch():
    m = RunningMoments()
    first = running_normalize(np.array([1.0, 3.0]), m)  # mean 2, std √2: equals whiten
    assert first.tolist() == pytest.approx([-1 / (math.sqrt(2) + EPS), 1 / (math.sqrt(2) + EPS)])
    second = running_normalize(np.array([5.0]), m)  # over [1, 3, 5]: mean 3, std 2
    assert second.tolist() == pytest.approx([2 / (2 + EPS)])


def test_clip():
    x = np.array([-2.0, 0.5, 3.0])
    assert clip(x, (-1.0, 1.0)).tolist() == [-1.0, 0.5, 1.0]
    assert clip(x, (0.0, None)).tolist() == [0.0, 0.5, 3.0]
    assert clip(x, None).tolist() == [-2.0, 0.5, 3.0]


def test_reward_groups_unlisted_terms_are_their_own_group():
    assert reward_groups(["a", "b", "c"], {"q": ["c", "a"]}) == {"q": ["c", "a"], "b": ["b"]}


def _combine(terms: list[TermCombineConfig], raw: dict, group_ids=None, **combine):
    n = len(next(iter(raw.values())))
    ids = np.zeros(n, dtype=int) if group_ids is None else np.array(group_ids)
    return Combiner(terms, CombineConfig(**combine))({k: np.array(v) for k, v in raw.items()}, ids).tolist()


def test_combiner_weighted_sum_with_term_and_combined_clip():
    terms = [TermCombineConfig(name="a", clip=(None, 2.0)), TermCombineConfig(name="b", weight=0.5)]
    # a clipped to [1, 0, 2]; 0.5·b = [0, 1, −0.5]; sum [1, 1, 1.5]; combined clip at 1.2
    assert _combine(terms, {"a": [1, 0, 3], "b": [0, 2, -1]}, clip=(None, 1.2)) == pytest.approx([1.0, 1.0, 1.2])


def test_combiner_log_sigmoid_terms():
    terms = [TermCombineConfig(name="a", weight=2.0, transform="log_sigmoid"),
             TermCombineConfig(name="b", transform="log_sigmoid", ref=1.0)]
    # sample 0: 2·log σ(0) + log σ(ln 3) = log(1/4 · 3/4) = log(3/16)
    # sample 1: 2·log σ(ln 3) + log σ(0) = log(9/16 · 1/2) = log(9/32)
    out = _combine(terms, {"a": [0.0, LN3], "b": [1.0 + LN3, 1.0]})
    assert out == pytest.approx([math.log(3 / 16), math.log(9 / 32)])


def test_combiner_maxmin_over_reward_groups():
    raw = {"helpful": [1.0, 3.0], "honest": [2.0, 0.0], "format": [1.0, 1.0]}
    groups = {"quality": ["helpful", "format"]}
    terms = [TermCombineConfig(name=n) for n in raw]
    # quality = [2, 4] (mean 3), honest = [2, 0] (mean 1): honest is served worst
    assert _combine(terms, raw, kind="maxmin", groups=groups) == [2.0, 0.0]
    terms[1] = TermCombineConfig(name="honest", weight=4.0)
    # honest = [8, 0] (mean 4) > 3: quality
    assert _combine(terms, raw, kind="maxmin", groups=groups) == [2.0, 4.0]


def test_combiner_group_normalizes_the_combined_value():
    terms = [TermCombineConfig(name="a"), TermCombineConfig(name="b")]
    # a + b = [1, 3, 5, 5]; prompt 0: mean 2, std √2; prompt 1: no spread
    out = _combine(terms, {"a": [1, 3, 5, 5], "b": [0, 0, 0, 0]}, group_ids=[0, 0, 1, 1], normalize="group")
    s = math.sqrt(2) + EPS
    assert out == pytest.approx([-1 / s, 1 / s, 0.0, 0.0])


def test_combiner_keeps_running_statistics_per_term_across_steps():
    combiner = Combiner([TermCombineConfig(name="a", normalize="running"), TermCombineConfig(name="b")],
                        CombineConfig())
    ids = np.zeros(2, dtype=int)
    first = combiner({"a": np.array([1.0, 3.0]), "b": np.array([0.0, 0.0])}, ids)
    assert first.tolist() == pytest.approx([-1 / (math.sqrt(2) + EPS), 1 / (math.sqrt(2) + EPS)])
    # a over [1, 3, 5]: mean 3, std 2 → (5 − 3)/2 = 1; b is raw: + 0.5
    second = combiner({"a": np.array([5.0]), "b": np.array([0.5])}, ids[:1])
    assert second.tolist() == pytest.approx([2 / (2 + EPS) + 0.5])


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


def test_the_default_recipe_combines_as_its_single_weighted_term():
    cfg = load_recipe(RECIPE)
    combiner = Combiner(cfg.rewards, cfg.reward.combine)
    assert combiner({"math_correct": np.array([1.0, 0.0])}, np.array([0, 0])).tolist() == [1.0, 0.0]


def test_a_composed_recipe_loads():
    cfg = load_recipe(RECIPE, [
        "rewards=[{name: math_correct, clip: [0, null]}, {name: answer_format, weight: 0.1, normalize: whiten,"
        " transform: log_sigmoid, ref: 0.5}, {name: overlong}]",
        "reward.combine.kind=maxmin", "reward.combine.groups={quality: [math_correct, answer_format]}",
        "reward.combine.normalize=running", "reward.combine.clip=[-3, 3]"])
    assert cfg.rewards[0].clip == (0.0, None)
    assert (cfg.rewards[1].normalize, cfg.rewards[1].transform, cfg.rewards[1].ref) == ("whiten", "log_sigmoid", 0.5)
    assert cfg.reward.combine == CombineConfig(kind="maxmin", groups={"quality": ["math_correct", "answer_format"]},
                                               normalize="running", clip=(-3.0, 3.0))


@pytest.mark.parametrize("overrides,message", [
    (["rewards.0.clip=[1, 0]"], "rewards.0.clip: clip lower bound 1 must be below the upper bound 0 (got [1, 0])"),
    (["rewards.0.ref=0.5"], "rewards.0.ref: ref is the reference value of transform=log_sigmoid; set that "
                            "transform or drop ref (got 0.5)"),
    (["rewards.0.transform=exp"], "rewards.0.transform: Input should be 'none' or 'log_sigmoid' (got 'exp')"),
    (["rewards.0.normalize=zscore"],
     "rewards.0.normalize: Input should be 'none', 'running', 'whiten' or 'group' (got 'zscore')"),
    (["reward.combine.kind=minmax"], "reward.combine.kind: Input should be 'weighted_sum' or 'maxmin' (got 'minmax')"),
    (["reward.combine.clip=[null, null]"],
     "reward.combine.clip: clip needs a lower or an upper bound, e.g. [-1, 1] or [0, null] (got [None, None])"),
    (["reward.combine.groups={q: [math_correct]}"],
     "reward.combine.groups: reward groups are only used by kind=maxmin"),
    (["reward.combine.kind=maxmin"], "reward.combine.kind: maxmin needs at least two reward groups"),
    (["reward.combine.kind=maxmin", "reward.combine.groups={q: []}"],
     "reward.combine.groups: group 'q' lists no terms"),
    (["reward.combine.kind=maxmin", "reward.combine.groups={q: [nope]}"],
     "reward.combine.groups.q: nope not among the rewards (math_correct)"),
    (["rewards=[{name: math_correct}, {name: overlong}]", "reward.combine.kind=maxmin",
      "reward.combine.groups={q: [overlong], r: [overlong]}"],
     "reward.combine.groups: overlong listed in more than one group"),
    (["reward.combine.normalise=whiten"], "reward.combine.normalise: unknown key"),
])
def test_bad_composition_keys_give_one_line_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_recipe(RECIPE, overrides)
    assert str(err.value) == message
