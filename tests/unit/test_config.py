import pytest

from cluster.config import ConfigError, load_recipe

RECIPE = "recipes/grpo_arith.yaml"


def test_recipe_loads_and_overrides_apply():
    cfg = load_recipe(RECIPE, ["algo.lr=1e-6", "algo.clip_eps=0.28", "learner.num_workers=2",
                               "rewards.1.weight=0.5", "task.arithmetic.ops=['+','*']"])
    assert cfg.algo.lr == 1e-6
    assert cfg.algo.clip_eps == 0.28
    assert cfg.learner.num_workers == 2
    assert cfg.rewards[1].weight == 0.5
    assert cfg.task.arithmetic.ops == ["+", "*"]


def test_config_is_frozen():
    cfg = load_recipe(RECIPE)
    with pytest.raises(Exception):
        cfg.algo.lr = 1.0


@pytest.mark.parametrize("override,message", [
    ("algo.clip_epz=0.3", "algo.clip_epz: unknown key"),
    ("algo.clip_eps=-1", "algo.clip_eps: Input should be greater than 0 (got -1)"),
    ("learner.zero_stage=4", "learner.zero_stage: Input should be less than or equal to 3 (got 4)"),
    ("rolout.num_workers=2", "rolout: unknown key"),
    ("algo.name=ppx", "algo: unknown algorithm 'ppx'; known: grpo"),
    ("rewards.0.name=nope", "rewards.0.name: unknown reward 'nope'; known: answer_format, math_correct, overlong"),
    ("train.steps=many", "train.steps: Input should be a valid integer, unable to parse string as an integer (got 'many')"),
    ("rewards.7.weight=1", "rewards.7.weight: '7' is not an index of a list of 2"),
    ("algo.lr", "override 'algo.lr' is not key=value"),
])
def test_bad_values_give_one_line_naming_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_recipe(RECIPE, [override])
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(message)


def test_missing_recipe_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("algo: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_recipe(listy)


def test_reward_args_are_validated_by_the_reward_config():
    with pytest.raises(ConfigError, match=r"rewards.1.args.pattern: not a valid regular expression"):
        load_recipe(RECIPE, ["rewards.1.args={pattern: '('}"])
