"""Prompt files (JSONL, a JSON array, Parquet) read as untrusted input.

Every problem is one `ConfigError` line that names the recipe key, the file and, where there is
one, the line (JSON) or row (Parquet): bytes that are not UTF-8, a line that is not JSON or not
an object, an empty file, a missing or misspelt column, an empty or whitespace prompt, a prompt
that is neither text nor a list of chat messages, an answer that is neither text nor a number.
"""
from __future__ import annotations

import difflib
import json
import math
from pathlib import Path
from typing import Any

from core.config import ConfigError

SUFFIXES = (".jsonl", ".json", ".parquet")


def read_records(path: str, key: str, fields: str = "the prompt and answer columns") -> list[tuple[str, dict]]:
    """(where, record) for every record of a prompt file; `where` is "file:line" or "file row N".
    `fields` says what a record holds, in the error for one that is not an object."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{key}: {path}: no such file")
    if p.suffix not in SUFFIXES:
        raise ConfigError(f"{key}: {path}: expected a {', '.join(SUFFIXES)} file")
    records = _parquet(p, key) if p.suffix == ".parquet" else _json(p, key)
    if not records:
        raise ConfigError(f"{key}: {path} holds no rows")
    for where, record in records:
        if not isinstance(record, dict):
            raise ConfigError(f"{key}: {where}: expected a JSON object with {fields}, got {kind_of(record)}")
    return records


def _json(p: Path, key: str) -> list[tuple[str, Any]]:
    text = read_text(p, key)
    if p.suffix == ".json" and text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{key}: {p}:{e.lineno}: not valid JSON ({e.msg})") from None
        return [(f"{p} item {i}", item) for i, item in enumerate(items, 1)]
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append((f"{p}:{n}", json.loads(line)))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{key}: {p}:{n}: not valid JSON ({e.msg})") from None
    return records


def read_text(p: Path, key: str) -> str:
    """A file's text; bytes that are not UTF-8 are a ConfigError naming the line."""
    data = p.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ConfigError(f"{key}: {p}:{line}: not UTF-8 text") from None


def _parquet(p: Path, key: str) -> list[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(p).to_pylist()
    except Exception as e:  # pyarrow raises several types for a damaged or foreign file
        raise ConfigError(f"{key}: {p}: not a readable Parquet file ({type(e).__name__})") from None
    return [(f"{p} row {i}", row) for i, row in enumerate(rows, 1)]


def check_columns(records: list[tuple[str, dict]], columns: dict[str, str], path: str) -> None:
    """Every record has each column; `columns` maps the recipe key naming a column to its name."""
    present = sorted({name for _, record in records for name in record})
    for key, name in columns.items():
        missing = [where for where, record in records if name not in record]
        if len(missing) == len(records):
            close = difflib.get_close_matches(name, present, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{key}: column {name!r} not in {path} (columns: {', '.join(present)}){hint}")
        if missing:
            raise ConfigError(f"{key}: {missing[0]} lacks the column {name!r}")


def prompt_value(value: Any, where: str, key: str) -> str | list:
    """A prompt: non-blank text, or a list of chat messages ({role, content} strings)."""
    if isinstance(value, str):
        if not value.strip():
            raise ConfigError(f"{key}: {where}: the prompt is {'empty' if not value else 'only whitespace'}")
        return value
    if isinstance(value, list) and value and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value):
        return value
    raise ConfigError(f"{key}: {where}: the prompt must be text or a list of chat messages "
                      f"({{role, content}}), got {kind_of(value)}")


def answer_value(value: Any, where: str, key: str) -> str:
    """An answer as text: a string, or a finite number written out."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return str(value)
    raise ConfigError(f"{key}: {where}: the answer must be text or a finite number, got {kind_of(value)}")


def kind_of(value: Any) -> str:
    """What a JSON value is, for an error: "null", "a list", "a number (5)", ..."""
    if value is None:
        return "null"
    return {bool: "a boolean", dict: "an object", list: "a list", str: "text"}.get(
        type(value), f"a number ({value})" if isinstance(value, (int, float)) else type(value).__name__)
