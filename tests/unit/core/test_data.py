"""Task data (core/data.py): arithmetic and file rows, chat-template rendering, the prompt stream."""
import json

import pytest

from core.config import ConfigError
from core.data import ArithmeticConfig, FileTaskConfig, TaskConfig
from core.data import PromptStream, arithmetic_rows, file_rows, render_prompts


def test_arithmetic_splits_are_seeded_and_disjoint():
    cfg = ArithmeticConfig(ops=["+", "*"], digits=2, train_size=300, eval_size=50, seed=3)
    train, evals = arithmetic_rows(cfg)
    again_train, again_eval = arithmetic_rows(cfg)
    assert [r.id for r in train] == [r.id for r in again_train]
    assert [r.id for r in evals] == [r.id for r in again_eval]
    assert len(train) == 300 and len(evals) == 50
    assert not {r.id for r in train} & {r.id for r in evals}
    for row in train[:20]:
        a, op, b = row.question.removeprefix("What is ").removesuffix("?").split()
        assert int(row.answer) == (int(a) + int(b) if op == "+" else int(a) * int(b))
        assert int(a) < 100 and int(b) < 100


def test_small_problem_space_keeps_eval_held_out():
    # 1-digit subtraction: 100 problems; eval takes 30, train repeats the other 70
    train, evals = arithmetic_rows(ArithmeticConfig(ops=["-"], digits=1, train_size=200, eval_size=30))
    assert len({r.id for r in train}) == 70
    assert not {r.id for r in train} & {r.id for r in evals}


def test_file_rows_jsonl_with_held_out_tail(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps({"q": f"What is {i} + 1?", "a": i + 1}) for i in range(10)))
    train, evals = file_rows(FileTaskConfig(path=str(path), prompt_column="q", answer_column="a", eval_size=3))
    assert [r.answer for r in evals] == ["8", "9", "10"]
    assert len(train) == 7
    with pytest.raises(ConfigError, match="column 'question' not in"):
        file_rows(FileTaskConfig(path=str(path), prompt_column="question", answer_column="a"))


def test_render_prompts_applies_chat_template(tokenizer):
    rows, _ = arithmetic_rows(ArithmeticConfig(train_size=2, eval_size=1))
    prompts = render_prompts(rows, tokenizer, TaskConfig(instruction=" Be brief."))
    assert prompts.texts[0].endswith("<|im_start|>assistant\n")
    assert rows[0].question + " Be brief." in prompts.texts[0]
    assert tokenizer.decode(prompts.token_ids[0]) == prompts.texts[0]


def test_prompt_stream_covers_every_prompt_each_epoch(tokenizer):
    rows, _ = arithmetic_rows(ArithmeticConfig(train_size=10, eval_size=2))
    prompts = render_prompts(rows, tokenizer, TaskConfig())
    stream = PromptStream(prompts, seed=0)
    first = stream.next_batch(5).ids + stream.next_batch(5).ids
    assert sorted(first) == sorted(prompts.ids)
