"""Reward models: Bradley-Terry loss and preference, padding-invariant scoring on the tiny model,
the arithmetic preference set, and train-rm config errors."""
import math
import shutil

import pytest
import torch
from pydantic import ValidationError

from core.config import ConfigError
import random

from core.data import Row
from core.preference_data import (PHRASINGS, ArithmeticPrefsConfig, PreferencePair, arithmetic_preferences,
                                     pairs_from_samples, read_pairs, write_pairs)
from apps.train_rm import load_rm_config
from learners.reward_model import bradley_terry_loss, build_reward_model, pairwise_correct
from rewards.base import Basis, Format, Sample
from rewards.math_correct import MathCorrect, MathCorrectConfig
from rewards.registry import REWARDS
from rewards.reward_model import (RewardModelConfig, RewardModelPreference, RewardModelScore,
                                  bradley_terry_probability, encode, prepare_tokenizer, rm_input_text)


def test_bradley_terry_loss_hand_computed():
    chosen = torch.tensor([2.0, 0.0, -1.0])
    rejected = torch.tensor([0.0, 0.0, 1.0])
    # d = r_c - r_r = [2, 0, -2]; -log σ(d) = log(1 + e^-d):
    # log(1 + e^-2) = 0.126928, log 2 = 0.693147, log(1 + e^2) = 2.126928
    expected = torch.tensor([0.126928, 0.693147, 2.126928])
    torch.testing.assert_close(bradley_terry_loss(chosen, rejected), expected, rtol=0, atol=1e-6)


def test_bradley_terry_loss_gradient_pushes_chosen_up():
    chosen = torch.tensor([0.0], requires_grad=True)
    rejected = torch.tensor([0.0], requires_grad=True)
    bradley_terry_loss(chosen, rejected).sum().backward()
    # dℓ/dr_c = -(1 - σ(0)) = -0.5; dℓ/dr_r = +0.5
    assert chosen.grad.item() == -0.5 and rejected.grad.item() == 0.5


def test_pairwise_correct_counts_ties_half():
    assert pairwise_correct(torch.tensor([1.0, 0.0, -1.0]), torch.tensor([0.0, 0.0, 0.0])).tolist() == [1.0, 0.5, 0.0]


def test_bradley_terry_probability():
    assert bradley_terry_probability(2.0, 0.0) == pytest.approx(0.880797)  # 1 / (1 + e^-2)
    assert bradley_terry_probability(0.0, 2.0) == pytest.approx(0.119203)  # 1 - 0.880797
    assert bradley_terry_probability(0.3, 0.3) == 0.5
    assert bradley_terry_probability(1000.0, 0.0) == 1.0  # no overflow either way
    assert bradley_terry_probability(0.0, 1000.0) == 0.0


def test_shard_covers_every_item_once():
    from core.ops import split_bounds

    assert split_bounds(5, 2) == [0, 2, 5]  # ranks get [0, 1] and [2, 3, 4]
    assert split_bounds(1, 2) == [0, 0, 1]  # rank 0 gets nothing, rank 1 the one pair


@pytest.fixture(scope="module")
def rm_dir(tiny_model_path, tmp_path_factory):
    """The tiny Llama with a seeded score head, saved as a reward-model checkpoint."""
    torch.manual_seed(0)
    model, tokenizer = build_reward_model(tiny_model_path)
    out = tmp_path_factory.mktemp("rm")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


SAMPLES = [
    Sample("What is 2 + 3? Answer with just the number.", "5"),
    Sample("What is 2 + 3? Answer with just the number.", "The answer is 5, because two plus three is five."),
    Sample("What is 9 * 9?", "81"),
    Sample("Hi", ""),
]


@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_scores_equal_one_at_a_time(rm_dir, tmp_path, side):
    path = tmp_path / side
    shutil.copytree(rm_dir, path)
    reward = RewardModelScore(RewardModelConfig(path=str(path), batch_size=4))
    _, tokenizer, _ = reward.model.get()
    tokenizer.padding_side = side
    texts = [rm_input_text(tokenizer, s.prompt, s.response) for s in SAMPLES]
    mask = encode(tokenizer, texts, 512)["attention_mask"]
    pad_col = 0 if side == "left" else -1
    assert (mask[:, pad_col] == 0).sum() == 3  # every row but the longest is padded on that side

    batched = reward.score_batch(SAMPLES)
    single = [reward.score(s) for s in SAMPLES]
    torch.testing.assert_close(torch.tensor(batched), torch.tensor(single))
    assert len(set(single)) == 4


def test_preference_is_sigmoid_of_reward_difference(rm_dir):
    cfg = RewardModelConfig(path=str(rm_dir))
    score, pref = RewardModelScore(cfg), RewardModelPreference(cfg)
    a, b = SAMPLES[0], SAMPLES[1]
    r_a, r_b = score.score(a), score.score(b)
    assert pref.prefer(a, b) == pytest.approx(1 / (1 + math.exp(-(r_a - r_b))))
    assert pref.prefer(a, b) + pref.prefer(b, a) == pytest.approx(1.0)
    with pytest.raises(TypeError, match="pairwise"):
        pref.score(a)


def test_registry_and_taxonomy():
    assert REWARDS["reward_model"] is RewardModelScore
    assert REWARDS["reward_model_preference"] is RewardModelPreference
    assert (RewardModelScore.taxonomy.basis, RewardModelScore.taxonomy.format) == (Basis.MODEL, Format.SCALAR)
    assert RewardModelPreference.taxonomy.format == Format.PAIRWISE


def test_rendered_prompt_is_not_rendered_twice(tokenizer):
    plain = rm_input_text(tokenizer, "What is 1 + 1?", "2")
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "What is 1 + 1?"}], tokenize=False,
                                             add_generation_prompt=True)
    assert plain == rendered + "2"
    assert rm_input_text(tokenizer, rendered, "2") == plain


def test_missing_pad_token_becomes_eos(tiny_model_path):
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    tok.pad_token = None
    config = AutoConfig.from_pretrained(tiny_model_path)
    config.pad_token_id = None
    prepare_tokenizer(tok, config)
    assert tok.pad_token_id == tok.eos_token_id == config.pad_token_id
    assert tok.truncation_side == "left"


def test_missing_checkpoint_is_named(tmp_path):
    reward = RewardModelScore(RewardModelConfig(path=str(tmp_path / "nope")))
    with pytest.raises(FileNotFoundError, match="nope is not a local Hugging Face model directory"):
        reward.score(SAMPLES[0])


def test_causal_lm_without_a_trained_head_is_refused(tiny_model_path):
    reward = RewardModelScore(RewardModelConfig(path=tiny_model_path))
    with pytest.raises(ValueError, match=r"no sequence-classification head \(architectures \['LlamaForCausalLM'\]\)"):
        reward.score(SAMPLES[0])


def test_reward_model_config_rejects_bad_values():
    with pytest.raises(ValidationError, match="batch_size"):
        RewardModelConfig(path="x", batch_size=0)
    with pytest.raises(ValidationError, match="path"):
        RewardModelConfig()


def test_arithmetic_preferences_are_correct_vs_wrong_and_held_out():
    cfg = ArithmeticPrefsConfig()
    train, held_out = arithmetic_preferences(cfg)
    # 3 ops x 10 x 10 = 300 problems: 100 held out, 200 train, 2 pairs each
    assert (len(train), len(held_out)) == (400, 200)
    assert not {p.prompt for p in train} & {p.prompt for p in held_out}
    assert arithmetic_preferences(cfg) == (train, held_out)
    verify = MathCorrect(MathCorrectConfig())
    for p in train[:50] + held_out[:50]:
        answer = str(eval(p.prompt.removeprefix("What is ").split("?")[0]))  # noqa: S307
        assert verify.score(Sample(p.prompt, p.chosen, answer)) == 1.0, p
        assert verify.score(Sample(p.prompt, p.rejected, answer)) == 0.0, p


def test_pairs_round_trip_and_bad_rows_are_named(tmp_path):
    pairs = arithmetic_preferences(ArithmeticPrefsConfig())[1][:3]
    assert read_pairs(write_pairs(pairs, tmp_path / "p.jsonl")) == pairs
    (tmp_path / "bad.jsonl").write_text('{"prompt": "q", "chosen": "a"}\n')
    with pytest.raises(ConfigError, match=r"^data.train_path: .*bad.jsonl:1 lacks string field\(s\) rejected$"):
        read_pairs(tmp_path / "bad.jsonl")


@pytest.mark.parametrize("overrides,message", [
    (["lr_rate=1"], "lr_rate: unknown key"),
    (["lr=0"], "lr: Input should be greater than 0 (got 0)"),
    (["data.train_path=p.jsonl"], "data: set exactly one of data.train_path and data.arithmetic"),
    (["learner.num_workers=2", "batch_size=1"], "batch_size: 1 pairs cannot feed 2 ranks"),
    (["data.arithmetic.task.digits=9"], "data.arithmetic.task.digits: Input should be less than or equal to 6 (got 9)"),
    (["data.arithmetic.sampled.n=0"], "data.arithmetic.sampled.n: Input should be greater than or equal to 1 (got 0)"),
])
def test_train_rm_config_errors_are_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_rm_config("recipes/rm_arith.yaml", overrides)
    assert str(err.value) == message


def test_rm_recipe_loads():
    cfg = load_rm_config("recipes/rm_arith.yaml")
    assert cfg.data.arithmetic is not None and cfg.model.path == "default"
    second = load_rm_config("recipes/rm_arith_sampled.yaml")
    assert second.model.path == "runs/rm_arith/final" and second.data.arithmetic.sampled.policy == "default"


def test_off_format_rejections_replace_a_share_of_train_pairs_only():
    base_train, base_held = arithmetic_preferences(ArithmeticPrefsConfig())
    train, held_out = arithmetic_preferences(ArithmeticPrefsConfig(off_format_frac=0.5))
    assert held_out == base_held  # held-out pairs never change
    changed = [(p, q) for p, q in zip(base_train, train) if p != q]
    assert 150 < len(changed) < 250  # about half of 400
    verify = MathCorrect(MathCorrectConfig())
    for old, new in changed:
        assert (new.prompt, new.chosen) == (old.prompt, old.chosen)
        answer = str(eval(new.prompt.removeprefix("What is ").split("?")[0]))  # noqa: S307
        assert verify.score(Sample(new.prompt, new.rejected, answer)) == 0.0, new
        assert answer not in new.rejected.split()


def test_pairs_from_samples_rank_each_distinct_wrong_sample_below_a_right_one():
    rows = [Row("a", "What is 2 + 3?", "5"), Row("b", "What is 4 * 2?", "8"), Row("c", "What is 1 - 1?", "0")]
    samples = [["5", "six", "The answer is 5.", "six"], ["7", "9"], ["0"]]
    correct = [[True, False, True, False], [False, False], [True]]
    pairs = pairs_from_samples(rows, samples, correct, " Just the number.", random.Random(0))
    # "six" once (duplicates collapse); both wrong samples of "4 * 2"; nothing for "1 - 1" (always right)
    assert [(p.prompt, p.rejected) for p in pairs] == [
        ("What is 2 + 3? Just the number.", "six"),
        ("What is 4 * 2? Just the number.", "7"),
        ("What is 4 * 2? Just the number.", "9")]
    assert pairs[0].chosen in {"5", "The answer is 5."}  # one of the problem's own right samples
    written = {f.format(x=8, a=4, op="*", b=2) for f in PHRASINGS}  # none right: a written-out answer
    assert {pairs[1].chosen, pairs[2].chosen} <= written
    assert pairs == pairs_from_samples(rows, samples, correct, " Just the number.", random.Random(0))
    assert all(isinstance(p, PreferencePair) for p in pairs)
