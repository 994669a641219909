"""The self-rewarding judge's text side (rewards/self_judge.py): the score parser, template checks
and rendering, aggregation of repeated judgments, and EFT examples from the arithmetic task."""
import json
import math
import re

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from core.data import ArithmeticConfig, TaskConfig, arithmetic_rows
from rewards.self_judge import (
    DEFAULT_RUBRIC,
    aggregate_judgments,
    check_template,
    eft_examples,
    load_template,
    parse_score,
    render_judge_prompt,
)


@pytest.mark.parametrize("text,expected", [
    ("Relevant and correct.\nScore: 4", 4),
    ("score: 0", 0),
    ("SCORE:5", 5),
    ("**Score:** 3", 3),
    ("Score: **3**", 3),
    ("**Score: 2**.", 2),
    ("Score: 4.", 4),
    ("Score: 4/5", 4),
    ("Score: 4 points", 4),
    # several score lines: the last one wins, also when it is the one that does not parse
    ("Score: 2\nOn reflection the answer is complete.\nScore: 5", 5),
    ("Score: 5\nScore: 6", None),
    ("Score: 4\nScore: five", None),
    ("Score: 6", None),
    ("Score: -1", None),
    ("Score: five", None),
    ("Score: 3.5", None),
    ("Score: 4/10", None),
    ("Score:", None),
    ("Score: <total points>", None),
    ("The response is fine. 4 points.", None),
    ("Subscore: 3", None),
])
def test_parse_score(text, expected):
    assert parse_score(text) == expected


def test_default_rubric_is_a_valid_additive_five_point_template():
    check_template(DEFAULT_RUBRIC)
    assert len(re.findall(r"^- Add ", DEFAULT_RUBRIC, re.MULTILINE)) == 5
    assert 'Conclude with the line "Score: <total points>"' in DEFAULT_RUBRIC


def test_load_template_rejects_missing_and_unknown_fields(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("Q: {prompt}\nA: {response}\nLiteral {{braces}}. Again: {prompt}\nScore: <n>")
    assert load_template(good) == good.read_text()
    cases = {"Q: {prompt}": "missing {response}",
             "no fields": "missing {prompt} and {response}",
             "{prompt} {response} {rubric}": "unknown field {rubric}",
             "{prompt} {response} {}": "unknown field {}",
             "{prompt} {response} {0}": "unknown field {0}",
             "{prompt!r} {response}": "unknown field {prompt!r}",
             "{prompt:>10} {response}": "unknown field {prompt:>10}",
             "{prompt.upper} {response}": "unknown field {prompt.upper}",
             "{prompt} {response} {": "malformed braces"}
    for i, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.txt"
        path.write_text(text)
        with pytest.raises(ValueError, match=re.escape(message)) as err:
            load_template(path)
        assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_render_copies_braces_in_the_text_as_data():
    template = "Q: {prompt}\nA: {response}\n{{literal}}"
    out = render_judge_prompt(template, "Fill {x} in {prompt} and {0}", "def f(): return {'a': 1} }{")
    assert out == "Q: Fill {x} in {prompt} and {0}\nA: def f(): return {'a': 1} }{\n{literal}"
    with pytest.raises(ValueError, match="missing"):
        render_judge_prompt("only {prompt}", "p", "r")


def test_aggregate_judgments():
    means, stats = aggregate_judgments([[4, 5, None], [None, None], [], [1, 2, 2]])
    # row 0: (4 + 5) / 2 = 4.5; rows 1 and 2: no parsed score; row 3: 5 / 3
    assert_array_equal(means, [4.5, np.nan, np.nan, 5 / 3])
    # 3 + 2 + 0 + 3 = 8 judgments, 2 + 0 + 0 + 3 = 5 parsed
    assert stats == {"judgments": 8, "parsed": 5, "parse_rate": 5 / 8, "unjudged": 2}
    means, stats = aggregate_judgments([])
    assert len(means) == 0 and math.isnan(stats["parse_rate"]) and stats["unjudged"] == 0


def test_eft_examples_score_right_answers_5_and_wrong_ones_1():
    task = TaskConfig(arithmetic=ArithmeticConfig(ops=["+", "*"], digits=2, train_size=50),
                      instruction=" Answer with just the number.")
    examples = eft_examples(task, 9, seed=3)
    assert len(examples) == 9 and all(set(e) == {"prompt", "response"} for e in examples)
    assert examples == eft_examples(task, 9, seed=3) and examples != eft_examples(task, 9, seed=4)
    train, held_out = arithmetic_rows(task.arithmetic)
    scores = []
    for e in examples:
        question = re.search(r"(What is (\d+) ([+*]) (\d+)\?) Answer with just the number\.", e["prompt"])
        given = int(re.search(r"The answer is (-?\d+)\.", e["prompt"])[1])
        a, op, b = int(question[2]), question[3], int(question[4])
        right = a + b if op == "+" else a * b
        assert question[1] in {r.question for r in train} - {r.question for r in held_out}
        assert e["prompt"] == render_judge_prompt(DEFAULT_RUBRIC, question[0], f"The answer is {given}.")
        assert 0 < abs(given - right) <= 3 or given == right
        assert parse_score(e["response"]) == (5 if given == right else 1)
        assert json.loads(json.dumps(e)) == e
        scores.append(parse_score(e["response"]))
    assert sorted(scores) == [1] * 4 + [5] * 5  # ⌈9/2⌉ right, ⌊9/2⌋ wrong


def test_eft_examples_with_a_custom_template_and_the_arithmetic_section():
    examples = eft_examples(ArithmeticConfig(), 2, seed=0, template="<{prompt}|{response}>")
    assert all(re.fullmatch(r"<What is \d \+ \d\?\|The answer is -?\d+\.>", e["prompt"]) for e in examples)
    with pytest.raises(ValueError, match="arithmetic"):
        eft_examples(TaskConfig(kind="file", file={"path": "x.jsonl"}), 2, seed=0)
