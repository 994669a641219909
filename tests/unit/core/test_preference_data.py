"""The arithmetic preference set and preference pairs from samples (core/preference_data.py)."""
import random

import pytest

from core.config import ConfigError
from core.data import OPS, Row, operands
from core.preference_data import (PHRASINGS, ArithmeticPrefsConfig, PreferencePair, arithmetic_preferences,
                                  pairs_from_samples, read_pairs, write_pairs)
from rewards.base import Sample
from rewards.math_correct import MathCorrect, MathCorrectConfig


def _solve(prompt: str) -> str:
    """The right answer of "What is a op b?<instruction>" by the task's own operator table."""
    a, op, b = operands(prompt.split("?")[0] + "?")
    return str(OPS[op](int(a), int(b)))


def test_arithmetic_preferences_are_correct_vs_wrong_and_held_out():
    cfg = ArithmeticPrefsConfig()
    train, held_out = arithmetic_preferences(cfg)
    # 3 ops x 10 x 10 = 300 problems: 100 held out, 200 train, 2 pairs each
    assert (len(train), len(held_out)) == (400, 200)
    assert not {p.prompt for p in train} & {p.prompt for p in held_out}
    assert arithmetic_preferences(cfg) == (train, held_out)
    verify = MathCorrect(MathCorrectConfig())
    for p in train[:50] + held_out[:50]:
        answer = _solve(p.prompt)
        assert verify.score(Sample(p.prompt, p.chosen, answer)) == 1.0, p
        assert verify.score(Sample(p.prompt, p.rejected, answer)) == 0.0, p


def test_pairs_round_trip_and_bad_rows_are_named(tmp_path):
    pairs = arithmetic_preferences(ArithmeticPrefsConfig())[1][:3]
    assert read_pairs(write_pairs(pairs, tmp_path / "p.jsonl")) == pairs
    (tmp_path / "bad.jsonl").write_text('{"prompt": "q", "chosen": "a"}\n')
    with pytest.raises(ConfigError, match=r"^data.train_path: .*bad.jsonl:1 lacks non-empty text field\(s\) rejected$"):
        read_pairs(tmp_path / "bad.jsonl")


def test_off_format_rejections_replace_a_share_of_train_pairs_only():
    base_train, base_held = arithmetic_preferences(ArithmeticPrefsConfig())
    train, held_out = arithmetic_preferences(ArithmeticPrefsConfig(off_format_frac=0.5))
    assert held_out == base_held  # held-out pairs never change
    changed = [(p, q) for p, q in zip(base_train, train) if p != q]
    assert 150 < len(changed) < 250  # about half of 400
    verify = MathCorrect(MathCorrectConfig())
    for old, new in changed:
        assert (new.prompt, new.chosen) == (old.prompt, old.chosen)
        answer = _solve(new.prompt)
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
