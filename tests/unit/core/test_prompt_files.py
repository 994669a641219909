"""Prompt files read as untrusted input (core/prompt_files.py via core.data.file_rows): the
formats that are accepted, and what each malformed one says (the CLI corpus is
tests/smoke/test_bad_inputs.py)."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.config import ConfigError
from core.data import FileTaskConfig, file_rows, truncate_prompts
from core.protocol import Prompts

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}]


def test_jsonl_with_chat_messages_and_numeric_answers(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"q": "What is 1 + 1?", "a": 2}, {"q": CHAT, "a": "4"}, {"q": "Half of 5?", "a": 2.5}, {"q": "x", "a": "y"}]) + "\n\n")
    train, evals = file_rows(FileTaskConfig(path=str(path), prompt_column="q", answer_column="a", eval_size=1))
    assert [r.answer for r in train + evals] == ["2", "4", "2.5", "y"]  # numbers written out as text
    assert train[1].question == CHAT and train[0].id == "p.jsonl:0" and evals[0].id == "p.jsonl:3"


def test_json_array_and_parquet_give_the_same_rows(tmp_path):
    rows = [{"prompt": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(4)]
    (tmp_path / "p.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    as_json = file_rows(FileTaskConfig(path=str(tmp_path / "p.json"), eval_size=2))
    as_parquet = file_rows(FileTaskConfig(path=str(tmp_path / "p.parquet"), eval_size=2))
    assert [[(r.question, r.answer) for r in part] for part in as_json] == \
           [[(r.question, r.answer) for r in part] for part in as_parquet]


@pytest.mark.parametrize("line,message", [
    ('{"prompt": "q", "answer": NaN}', "the answer must be text or a finite number, got a number (nan)"),
    ('{"prompt": [{"role": "user"}], "answer": "1"}', "the prompt must be text or a list of chat messages ({role, content}), got a list"),
    ('{"prompt": [], "answer": "1"}', "the prompt must be text or a list of chat messages ({role, content}), got a list"),
    ('"just text"', "expected a JSON object with the prompt and answer columns, got text"),
])
def test_each_bad_record_names_its_line(tmp_path, line, message):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "ok", "answer": "1"}\n' + line + "\n")
    with pytest.raises(ConfigError) as err:
        file_rows(FileTaskConfig(path=str(path)))
    assert str(err.value) == f"task.file.path: {path}:2: {message}"


def test_truncation_keeps_the_end_and_counts_the_cut_prompts():
    prompts = Prompts(ids=["a", "b"], texts=["ta", "tb"], token_ids=[np.arange(5), np.arange(2)], answers=["1", "2"])
    out, cut = truncate_prompts(prompts, 3)
    assert cut == 1 and [t.tolist() for t in out.token_ids] == [[2, 3, 4], [0, 1]]
    assert out.texts == prompts.texts and prompts.token_ids[0].tolist() == [0, 1, 2, 3, 4]  # input unchanged
