"""Prompt sources: the built-in arithmetic task and user prompt files (JSONL / Parquet).

Both give (question, answer) rows; `render_prompts` applies the chat template once.
"""
from __future__ import annotations

import operator
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from pydantic import Field, field_validator, model_validator

from core.config import ConfigError, Section
from core.prompt_files import answer_value, check_columns, prompt_value, read_records
from core.protocol import Prompts

# The arithmetic task's operators; preference data and step rewards parse the same questions.
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


class ArithmeticConfig(Section):
    ops: list[Literal["+", "-", "*"]] = Field(["+"], min_length=1)
    digits: int = Field(1, ge=1, le=6)
    train_size: int = Field(2000, ge=1)
    eval_size: int = Field(100, ge=1)
    seed: int = 0

    @field_validator("ops")
    @classmethod
    def _distinct(cls, ops: list[str]) -> list[str]:
        if len(set(ops)) != len(ops):
            raise ValueError(f"operators must be distinct, got {ops}")
        return ops


class FileTaskConfig(Section):
    path: str
    eval_path: str | None = None
    prompt_column: str = "prompt"
    answer_column: str = "answer"
    eval_size: int = Field(100, ge=1)


class TaskConfig(Section):
    """The recipe's `task` section: where prompts come from and how they are worded."""

    kind: Literal["arithmetic", "file"] = "arithmetic"
    arithmetic: ArithmeticConfig = ArithmeticConfig()
    file: FileTaskConfig | None = None
    # Appended to every prompt before the chat template is applied.
    instruction: str = ""
    system_prompt: str | None = None

    @model_validator(mode="after")
    def _file_needs_path(self):
        if self.kind == "file" and self.file is None:
            raise ValueError("task.kind=file needs a task.file section with a path")
        return self


@dataclass(frozen=True)
class Row:
    id: str
    question: str
    answer: str


def operands(question: str) -> tuple[str, str, str]:
    """(a, op, b) of an arithmetic question "What is a op b?"."""
    _, a, op, b = question.rstrip("?").rsplit(" ", 3)
    return a, op, b


def arithmetic_rows(cfg: ArithmeticConfig) -> tuple[list[Row], list[Row]]:
    """Seeded train/eval splits of "What is a op b?" with operands of up to `digits` digits.

    The eval split is drawn first and its questions never appear in train. When the problem
    space is smaller than train_size, train repeats its problems (in a seeded order).
    """
    rng = random.Random(cfg.seed)
    hi = 10**cfg.digits - 1
    space = len(cfg.ops) * (hi + 1) ** 2

    def draw() -> Row:
        op = rng.choice(cfg.ops)
        a, b = rng.randint(0, hi), rng.randint(0, hi)
        q = f"What is {a} {op} {b}?"
        return Row(q, q, str(OPS[op](a, b)))

    n_eval = min(cfg.eval_size, space // 2)
    eval_rows: dict[str, Row] = {}
    while len(eval_rows) < n_eval:
        row = draw()
        eval_rows.setdefault(row.id, row)
    train: list[Row] = []
    seen: set[str] = set()
    for _ in range(cfg.train_size * 50):
        if len(train) == cfg.train_size:
            break
        row = draw()
        if row.id in eval_rows:
            continue
        if row.id in seen and len(seen) < space - n_eval:
            continue  # prefer new problems while there are any left
        seen.add(row.id)
        train.append(row)
    return train, list(eval_rows.values())


def file_rows(cfg: FileTaskConfig) -> tuple[list[Row], list[Row]]:
    """Rows from a JSONL / JSON / Parquet file; eval from `eval_path` or the last eval_size rows."""
    train = _read_rows(cfg.path, cfg, "task.file.path")
    if cfg.eval_path:
        return train, _read_rows(cfg.eval_path, cfg, "task.file.eval_path")
    if len(train) < 2:
        raise ConfigError(f"task.file.path: {cfg.path} has {len(train)} rows; need at least 2 to hold out an eval split")
    n_eval = min(cfg.eval_size, len(train) // 2)
    return train[:-n_eval], train[-n_eval:]


def _read_rows(path: str, cfg: FileTaskConfig, key: str) -> list[Row]:
    """The file's rows, every prompt and answer checked (`core.prompt_files`)."""
    records = read_records(path, key)
    check_columns(records, {"task.file.prompt_column": cfg.prompt_column,
                            "task.file.answer_column": cfg.answer_column}, path)
    name = Path(path).name
    return [Row(f"{name}:{i}", prompt_value(r[cfg.prompt_column], where, key),
                answer_value(r[cfg.answer_column], where, key)) for i, (where, r) in enumerate(records)]


def load_rows(cfg: TaskConfig) -> tuple[list[Row], list[Row]]:
    return arithmetic_rows(cfg.arithmetic) if cfg.kind == "arithmetic" else file_rows(cfg.file)


def render_prompts(rows: list[Row], tokenizer, cfg: TaskConfig) -> Prompts:
    """Apply the chat template; a prompt may be a string or a list of chat messages."""
    texts, ids, questions = [], [], []
    for row in rows:
        if isinstance(row.question, list):
            messages = list(row.question)
            questions.append(next((m["content"] for m in reversed(messages) if m.get("role") == "user"), ""))
        else:
            questions.append(row.question)
            messages = [{"role": "user", "content": row.question + cfg.instruction}]
        if cfg.system_prompt is not None:
            messages = [{"role": "system", "content": cfg.system_prompt}, *messages]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        tok = tokenizer(text, add_special_tokens=False)["input_ids"]
        texts.append(text)
        ids.append(np.asarray(tok, dtype=np.int64))
    return Prompts(ids=[r.id for r in rows], texts=texts, token_ids=ids, answers=[r.answer for r in rows],
                   questions=questions)


def truncate_prompts(prompts: Prompts, max_prompt_len: int) -> tuple[Prompts, int]:
    """Prompts longer than `max_prompt_len` tokens lose their start: the end, with the question
    and the generation prompt, is kept. Returns the prompts and how many were cut."""
    ids = [t[-max_prompt_len:] if len(t) > max_prompt_len else t for t in prompts.token_ids]
    cut = sum(len(t) > max_prompt_len for t in prompts.token_ids)
    return replace(prompts, token_ids=ids), cut


class PromptStream:
    """Seeded, epoch-shuffled batches of train prompts."""

    def __init__(self, prompts: Prompts, seed: int):
        self.prompts = prompts
        self._rng = np.random.default_rng(seed)
        self._order: list[int] = []

    def skip(self, n: int) -> None:
        """Draw and drop `n` prompts: a restarted run continues the same order."""
        for _ in range(n):
            if not self._order:
                self._order = list(self._rng.permutation(len(self.prompts)))
            self._order.pop()

    def next_batch(self, n: int) -> Prompts:
        idx = []
        while len(idx) < n:
            if not self._order:
                self._order = list(self._rng.permutation(len(self.prompts)))
            idx.append(int(self._order.pop()))
        return self.prompts.select(idx)
