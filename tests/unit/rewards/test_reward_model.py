"""The reward-model rewards (rewards/reward_model.py): Bradley-Terry preference, padding-invariant
scoring on the tiny model, chat-template rendering, and checkpoint / config errors."""
import math
import shutil

import pytest
import torch
from pydantic import ValidationError

from learners.reward_model import build_reward_model
from rewards.base import Sample
from rewards.reward_model import (RewardModelConfig, RewardModelPreference, RewardModelScore,
                                  bradley_terry_probability, encode, prepare_tokenizer, rm_input_text)


def test_bradley_terry_probability():
    assert bradley_terry_probability(2.0, 0.0) == pytest.approx(0.880797)  # 1 / (1 + e^-2)
    assert bradley_terry_probability(0.0, 2.0) == pytest.approx(0.119203)  # 1 - 0.880797
    assert bradley_terry_probability(0.3, 0.3) == 0.5
    assert bradley_terry_probability(1000.0, 0.0) == 1.0  # no overflow either way
    assert bradley_terry_probability(0.0, 1000.0) == 0.0


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
