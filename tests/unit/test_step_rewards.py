import numpy as np
import pytest
import torch

from rewards.base import Basis, Expression, Format, Granularity, Sample, Taxonomy
from rewards.implicit import Implicit, ImplicitConfig, implicit_sequence_reward, implicit_token_rewards
from rewards.registry import REWARDS
from rewards.steps import (
    StepArith,
    StepArithConfig,
    StepReward,
    StepRewardConfig,
    equations_hold,
    split_steps,
    step_token_rewards,
    token_end_offsets,
)


def test_split_steps_newline_trims_and_drops_empty_lines():
    text = "2 + 2 = 4\n\n  4 * 3 = 12  \n"
    # "2 + 2 = 4" is chars 0..8; "\n\n" 9, 10; two spaces 11, 12; "4 * 3 = 12" is 13..22
    assert split_steps(text, "newline") == [(0, 9), (13, 23)]


def test_split_steps_blank_lines_keeps_single_newlines_inside_a_step():
    text = "a = 1\nb = 2\n\n \nc"
    # "a = 1\nb = 2" is 0..10; the separator "\n\n \n" is 11..14; "c" is 15
    assert split_steps(text, "blank_lines") == [(0, 11), (15, 16)]


def test_split_steps_regex_marker_starts_each_step():
    text = "Let me see. Step 1: 2 + 2 = 4 Step 2: 4 * 3 = 12"
    # "Let me see." 0..10; "Step 1: 2 + 2 = 4" (17 chars) 12..28; "Step 2: 4 * 3 = 12" (18) 30..47
    assert split_steps(text, "regex", r"Step \d+:") == [(0, 11), (12, 29), (30, 48)]
    assert split_steps("Step 1: x Step 2: y", "regex", r"Step \d+:") == [(0, 9), (10, 19)]
    assert split_steps("no marker", "regex", r"Step \d+:") == [(0, 9)]
    assert split_steps("  \n\n ", "newline") == []


def test_split_steps_regex_needs_a_pattern_and_config_checks_it():
    with pytest.raises(ValueError, match="needs a pattern"):
        split_steps("x", "regex")
    with pytest.raises(ValueError, match="pattern is required"):
        StepRewardConfig(split="regex")
    with pytest.raises(ValueError, match="pattern is required"):
        StepRewardConfig(split="newline", pattern="x")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        StepRewardConfig(split="regex", pattern="(")


def test_step_token_rewards_on_boundary_mid_token_and_last_token():
    # tokens cover [0,3) [3,5) [5,9) [9,12)
    token_ends = [3, 5, 9, 12]
    # step 0 ends at 5: last char 4, in token 1, which ends exactly there (boundary)
    # step 1 ends at 7: last char 6, inside token 2 = [5,9) (mid-token)
    # step 2 ends at 12: last char 11, in token 3
    out = step_token_rewards([1.0, -1.0, 0.5], [5, 7, 12], token_ends)
    assert out.tolist() == [0.0, 1.0, -1.0, 0.5]
    assert out.dtype == np.float64


def test_step_token_rewards_steps_in_one_token_add_and_empty_tokens_take_nothing():
    # ends 7 and 8 both fall in token 2 = [5,9): 1 + 2 = 3
    assert step_token_rewards([1.0, 2.0], [7, 8], [3, 5, 9, 12]).tolist() == [0.0, 0.0, 3.0, 0.0]
    # token 1 adds no character (end 2 = end of token 0): the step ending at 2 goes to token 0
    assert step_token_rewards([1.0], [2], [2, 2, 4]).tolist() == [1.0, 0.0, 0.0]
    assert step_token_rewards([], [], [2, 4]).tolist() == [0.0, 0.0]


def test_step_token_rewards_rejects_bad_inputs():
    with pytest.raises(ValueError, match="beyond the last token"):
        step_token_rewards([1.0], [13], [3, 12])
    with pytest.raises(ValueError, match="non-decreasing"):
        step_token_rewards([1.0], [3], [5, 3])
    with pytest.raises(ValueError, match="2 step values for 1 step ends"):
        step_token_rewards([1.0, 2.0], [3], [5])


@pytest.mark.parametrize("step,expected", [
    ("12 + 7 = 19", True),
    ("Step 2: 19 * 2 = 40", False),        # 38
    ("So the answer is 38.", None),
    ("7 / 2 = 3.5", True),
    ("5 / 0 = 0", False),                  # division by zero is never true
    ("3 - 5 = -2", True),
    ("6 × 7 = 42", True),
    ("1.5 + 1.5 = 3", True),
    ("2 + 2 = 4 and 3 + 3 = 7", False),    # every equation must hold
])
def test_equations_hold(step, expected):
    assert equations_hold(step) is expected


RESPONSE = "Step 1: 12 + 7 = 19\nStep 2: 19 * 2 = 40\nSo the answer is 40"


@pytest.mark.parametrize("aggregate,expected", [
    ("sum", 0.0),    # 1 + (-1) + 0
    ("min", -1.0),
    ("last", 0.0),   # "So the answer is 40" states no equation
])
def test_step_arith_aggregates_step_values(aggregate, expected):
    reward = StepArith(StepArithConfig(aggregate=aggregate))
    steps = ["Step 1: 12 + 7 = 19", "Step 2: 19 * 2 = 40", "So the answer is 40"]
    assert reward.score_steps(Sample("q", RESPONSE), steps) == [1.0, -1.0, 0.0]
    assert reward.score(Sample("q", RESPONSE)) == expected


def test_step_arith_custom_values_and_empty_response():
    reward = StepArith(StepArithConfig(true=0.5, false=-2.0, no_equation=0.25, aggregate="sum"))
    assert reward.score(Sample("q", RESPONSE)) == 0.5 - 2.0 + 0.25
    assert reward.score(Sample("q", "")) == 0.0


def test_step_arith_score_tokens_with_given_offsets():
    # "12 + 7 = 19\n3 * 3 = 10": step 0 is chars 0..10, step 1 is 12..21
    sample = Sample("q", "12 + 7 = 19\n3 * 3 = 10")
    # tokens [0,6) [6,10) [10,12) [12,20) [20,22): step 0 ends mid-token 2, step 1 in token 4
    out = StepArith(StepArithConfig()).score_tokens(sample, [6, 10, 12, 20, 22])
    assert out.tolist() == [0.0, 0.0, 1.0, 0.0, -1.0]


class _WrongCount(StepReward):
    def score_steps(self, sample, steps):
        return [1.0]


def test_step_reward_checks_one_value_per_step():
    with pytest.raises(ValueError, match="gave 1 values for 2 steps"):
        _WrongCount(StepRewardConfig()).score(Sample("q", "a\nb"))


def test_token_end_offsets_and_step_rewards_with_the_real_tokenizer(tokenizer):
    response = "Step 1: 12 + 7 = 19\nStep 2: 19 * 2 = 40"
    ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    # SmolLM2 splits digits; tokens: Step|␣|1|:|␣|1|2|␣+|␣|7|␣=|␣|1|9|\n|
    #                                 Step|␣|2|:|␣|1|9|␣*|␣|2|␣=|␣|4|0
    assert [tokenizer.decode([i]) for i in ids][:8] == ["Step", " ", "1", ":", " ", "1", "2", " +"]
    ends = token_end_offsets(tokenizer, ids)
    assert ends == [4, 5, 6, 7, 8, 9, 10, 12, 13, 14, 16, 17, 18, 19, 20,
                    24, 25, 26, 27, 28, 29, 30, 32, 33, 34, 36, 37, 38, 39]
    # step 0 = chars 0..18 ends exactly at token 13 ("9", end 19): 12 + 7 = 19 holds -> +1
    # step 1 = chars 20..38 ends at token 28 ("0", end 39): 19 * 2 = 40 is false -> -1
    expected = np.zeros(29)
    expected[13], expected[28] = 1.0, -1.0
    out = StepArith(StepArithConfig()).score_tokens(Sample("q", response), ends)
    assert out.tolist() == expected.tolist()


def test_a_character_split_over_byte_tokens_goes_to_the_token_completing_it(tokenizer):
    response = "2 + 2 = 4 ✓\n4 * 3 = 12 ✓"
    ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    # " ✓" is three byte tokens (7, 8, 9): 7 and 8 decode to an incomplete character, so they
    # add nothing; token 9 completes " ✓" (chars 9, 10). EOS (token 22) adds no character.
    ends = token_end_offsets(tokenizer, ids)
    assert ends == [1, 3, 4, 5, 7, 8, 9, 9, 9, 11, 12, 13, 15, 16, 17, 19, 20, 21, 22, 22, 22, 24, 24]
    # step 0 = chars 0..10 ends on "✓", inside byte tokens 7..9 -> token 9; step 1 (12..23) -> token 21
    out = StepArith(StepArithConfig()).score_tokens(Sample("q", response), ends)
    assert np.flatnonzero(out).tolist() == [9, 21]
    assert out[[9, 21]].tolist() == [1.0, 1.0]   # 2 + 2 = 4 and 4 * 3 = 12 both hold


LOGPROBS = torch.tensor([[-1.0, -2.0, -0.5], [-0.25, -3.0, 0.0]])
REF_LOGPROBS = torch.tensor([[-1.5, -1.0, -0.5], [-0.75, float("-inf"), float("nan")]])
MASK = torch.tensor([[1, 1, 1], [1, 0, 0]])


def test_implicit_token_rewards():
    # β = 0.5; row 0: 0.5·(-1 + 1.5) = 0.25, 0.5·(-2 + 1) = -0.5, 0.5·0 = 0
    # row 1: 0.5·(-0.25 + 0.75) = 0.25; padding is 0 even where ref_logprobs is -inf / NaN
    out = implicit_token_rewards(LOGPROBS, REF_LOGPROBS, MASK, beta=0.5)
    torch.testing.assert_close(out, torch.tensor([[0.25, -0.5, 0.0], [0.25, 0.0, 0.0]]))


def test_implicit_sequence_reward_is_the_masked_sum():
    # row 0: 0.25 - 0.5 + 0 = -0.25; row 1: 0.25
    out = implicit_sequence_reward(LOGPROBS, REF_LOGPROBS, MASK, beta=0.5)
    torch.testing.assert_close(out, torch.tensor([-0.25, 0.25]))


def test_implicit_reward_runs_both_models_over_the_token_ids(tiny_model_path):
    """token_values in padded batches (prompts and responses of different lengths, an empty
    response) equal β·(log π − log π_ref) from unpadded forwards of each sequence alone."""
    from core.models import build_tiny_model, cache_dir, load_policy
    from core.ops import token_logprobs

    ref_path = str(build_tiny_model(cache_dir() / "tiny-llama-test-seed1", seed=1))
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
        ids = torch.tensor([np.concatenate([prompt, response])])
        with torch.no_grad():
            lp = [token_logprobs(m(input_ids=ids).logits[:, len(prompt) - 1:-1], ids[:, len(prompt):])[0] for m in models]
        torch.testing.assert_close(torch.from_numpy(got).float(), 0.5 * (lp[0] - lp[1]))
    # A model against itself has no implicit reward; text scoring sums the token values.
    same = Implicit(ImplicitConfig(model=tiny_model_path, reference=tiny_model_path))
    assert all((v == 0).all() for v in same.token_values(prompts, responses))
    assert same.score(Sample("What is 2 + 2?", " 4")) == 0.0
    with pytest.raises(ValueError):
        ImplicitConfig(model="m", reference="r", beta=0.0)


def test_registered_with_taxonomy():
    assert REWARDS["step_arith"] is StepArith and REWARDS["implicit"] is Implicit
    tax = StepArith.taxonomy
    assert (tax.basis, tax.format, tax.expression, tax.granularity) == (
        Basis.RULE, Format.SCALAR, Expression.EXPLICIT, Granularity.STEP)
