"""Recipes (cluster/recipe.py): loading, overrides, and one-line errors naming the key."""
import pytest

from cluster.recipe import ConfigError, load_recipe

RECIPE = "recipes/grpo_arith.yaml"


def test_recipe_loads_and_overrides_apply():
    cfg = load_recipe(RECIPE, ["algo.lr=1e-6", "algo.clip_eps=0.28", "learner.num_workers=2",
                               "rewards.0.weight=0.5", "task.arithmetic.ops=['+','*']"])
    assert cfg.algo.lr == 1e-6
    assert cfg.algo.clip_eps == 0.28
    assert cfg.learner.num_workers == 2
    assert cfg.rewards[0].weight == 0.5
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
    ("rewards.0.name=nope", "rewards.0.name: unknown reward 'nope'; known: answer_format, "),  # the registry grows
    ("train.steps=many", "train.steps: Input should be a valid integer, unable to parse string as an integer (got 'many')"),
    ("rewards.7.weight=1", "rewards.7.weight: '7' is not an index of a list of 1"),
    ("algo.lr", "override 'algo.lr' is not key=value"),
    ("rollout.temperature=0", "rollout.temperature: Input should be greater than 0 (got 0)"),
    ("task.arithmetic.ops=[]", "task.arithmetic.ops: List should have at least 1 item after validation, not 0"),
    ("task.arithmetic.ops=['+','+']", "task.arithmetic.ops: operators must be distinct, got ['+', '+']"),
    ("cluster.num_cpus=-2", "cluster.num_cpus: Input should be greater than 0 (got -2)"),
    ("rewards=[{name: math_correct}, {name: math_correct, weight: 2}]",
     "rewards: math_correct listed twice; each term needs a distinct reward"),
    ("rewards=[{name: implicit}]", "rewards.0.args.model: Field required"),
    ("rewards=[{name: remote_pairwise_probe}]", "rewards.0.name: unknown reward"),
    ("rollout.resources={CPU: 1}", "rollout.resources: CPU: custom resources need a new name"),
    ("train.max_staleness=-1", "train.max_staleness: Input should be greater than or equal to 0 (got -1)"),
    ("rollout.interrupt=true", "rollout.interrupt: needs the asynchronous loop (train.max_staleness > 0)"),
    ("train.prompts_per_step=1", "train.prompts_per_step: 8 training units per step cannot feed 4 learner ranks x 4 mini-batches"),
])
def test_bad_values_give_one_line_naming_the_key(override, message):
    extra = ["learner.num_workers=4", "algo.mini_batches=4"] if override.startswith("train.prompts") else []
    with pytest.raises(ConfigError) as err:
        load_recipe(RECIPE, [override, *extra])
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
    with pytest.raises(ConfigError, match=r"rewards.0.args.pattern: not a valid regular expression"):
        load_recipe(RECIPE, ["rewards=[{name: answer_format, args: {pattern: '('}}]"])


def test_pairwise_reward_needs_a_pair_algorithm():
    term = ("rewards=[{name: judge_pairwise, args: {backend: {kind: endpoint, base_url: 'http://127.0.0.1:9/v1', "
            "model: m, api_key_env: null}}}]")
    with pytest.raises(ConfigError) as err:
        load_recipe(RECIPE, [term])
    assert str(err.value) == ("rewards.0.name: judge_pairwise compares two responses; algo.name=grpo trains on "
                              "single samples (only algorithms that train on pairs use pairwise rewards)")
    assert load_recipe(RECIPE, [term, "algo={name: online_dpo}"]).rewards[0].name == "judge_pairwise"


def test_ppo_checks_critic_ranks_too():
    with pytest.raises(ConfigError, match="cannot feed 4 critic ranks x 1 mini-batches"):
        load_recipe(RECIPE, ["algo={name: ppo, samples_per_prompt: 1}", "train.prompts_per_step=2",
                             "critic.num_workers=4"])


def test_share_prompt_reads_yaml_booleans_and_names_a_bad_value():
    cfg = load_recipe(RECIPE, ["learner.share_prompt=off", "reference.share_prompt=on", "critic.share_prompt=auto"])
    assert (cfg.learner.share_prompt, cfg.reference.share_prompt, cfg.critic.share_prompt) == ("off", "on", "auto")
    assert load_recipe(RECIPE).learner.share_prompt == "auto"
    with pytest.raises(ConfigError) as err:
        load_recipe(RECIPE, ["reference.share_prompt=maybe"])
    assert str(err.value) == "reference.share_prompt: Input should be 'auto', 'on' or 'off' (got 'maybe')"
