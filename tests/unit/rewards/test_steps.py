"""Step rewards (rewards/steps.py): splitting a response into steps, checking arithmetic steps, and
placing each step's value on the token that ends it."""
import numpy as np
import pytest

from rewards.base import Sample
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
    # The unit tier's tokenizer (core.models.build_tiny_tokenizer: byte-level BPE trained on four
    # lines) merges a space with the next character but learned no two-digit numbers, so "12"
    # splits into digits; tokens (printed once, then hard-coded):
    #   Step|␣1|:|␣1|2|␣+|␣7|␣=|␣1|9|\n|Step|␣2|:|␣1|9|␣*|␣2|␣=|␣4|0
    assert [tokenizer.decode([i]) for i in ids][:8] == ["Step", " 1", ":", " 1", "2", " +", " 7", " ="]
    ends = token_end_offsets(tokenizer, ids)
    # each token's end is the character offset after its last character
    assert ends == [4, 6, 7, 9, 10, 12, 14, 16, 18, 19, 20,
                    24, 26, 27, 29, 30, 32, 34, 36, 38, 39]
    # step 0 = chars 0..18 ends exactly at token 9 ("9", end 19): 12 + 7 = 19 holds -> +1
    # step 1 = chars 20..38 ends at token 20 ("0", end 39): 19 * 2 = 40 is false -> -1
    expected = np.zeros(21)
    expected[9], expected[20] = 1.0, -1.0
    out = StepArith(StepArithConfig()).score_tokens(Sample("q", response), ends)
    assert out.tolist() == expected.tolist()


def test_a_character_split_over_byte_tokens_goes_to_the_token_completing_it(tokenizer):
    response = "2 + 2 = 4 ✓\n4 * 3 = 12 ✓"
    ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    # Tokens of the tiny tokenizer (printed once, then hard-coded):
    #   2|␣+|␣2|␣=|␣4|␣|✓₁|✓₂|✓₃|\n|4|␣*|␣3|␣=|␣1|2|␣|✓₁|✓₂|✓₃|EOS
    # "✓" (char 10) is three byte tokens (6, 7, 8): 6 and 7 decode to an incomplete character, so
    # they add nothing; token 8 completes it. Likewise the second "✓" (char 23) is tokens 17..19.
    # EOS (token 20) adds no character.
    ends = token_end_offsets(tokenizer, ids)
    assert ends == [1, 3, 5, 7, 9, 10, 10, 10, 11, 12, 13, 15, 17, 19, 21, 22, 23, 23, 23, 24, 24]
    # step 0 = chars 0..10 ends on "✓", inside byte tokens 6..8 -> token 8; step 1 (12..23) -> token 19
    out = StepArith(StepArithConfig()).score_tokens(Sample("q", response), ends)
    assert np.flatnonzero(out).tolist() == [8, 19]
    assert out[[8, 19]].tolist() == [1.0, 1.0]   # 2 + 2 = 4 and 4 * 3 = 12 both hold
