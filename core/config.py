"""Config base: frozen sections, one YAML loader, dotted overrides, one-line errors.

Every config of the project (the recipe in `cluster/recipe.py`, `train-rm`, `serve-reward`)
is a tree of `Section`s read by `load_config`: a YAML file plus `key.sub=value` overrides,
validated once, frozen afterwards. Any problem is a `ConfigError` whose message is one line
that names the key.
"""
from __future__ import annotations

import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator


class ConfigError(ValueError):
    """A config problem, reported as one line that names the key."""


_BOOL_FOR_NUMBER = "expected a number, got a boolean"


class Section(BaseModel):
    """A frozen config section: unknown keys, NaN / infinite numbers and booleans where a number
    is expected are errors (YAML reads `true` as a boolean, which pydantic would take as 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name)
                if isinstance(value, bool) and field is not None and _wants_number(field.annotation):
                    raise ValueError(f"{name}: {_BOOL_FOR_NUMBER}")
        return data


def _wants_number(annotation: Any) -> bool:
    """int or float, possibly optional, and no bool among the alternatives."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        options = set(typing.get_args(annotation))
        return bool(options & {int, float}) and bool not in options
    return annotation in (int, float)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int):
        super().__init__(f"line {line} repeats the key {key!r}")


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping repeating a key (plain YAML keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_yaml(text: str) -> Any:
    """YAML text, a repeated key in a mapping being an error (`_DuplicateKey`, a YAMLError too)."""
    return yaml.load(text, Loader=_StrictLoader)


def load_yaml(path: str | os.PathLike, what: str = "recipe") -> dict:
    """A YAML file whose top level is a mapping; ConfigError (naming `what` and the file) if not."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {path}: no such file")
    try:
        tree = parse_yaml(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} {path}: not UTF-8 text (byte {e.start})") from None
    except _DuplicateKey as e:
        raise ConfigError(f"{what} {path}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{what} {path}: top level must be a mapping of sections")
    return tree


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """`key.sub=value` words as (dotted key, YAML-parsed value)."""
    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value")
        try:
            out.append((key, parse_yaml(raw) if raw else ""))
        except _DuplicateKey as e:
            raise ConfigError(f"override {key}: the value {e}") from None
        except yaml.YAMLError:
            raise ConfigError(f"override {key}: value {raw!r} is not valid YAML") from None
    return out


def set_dotted(tree: dict, dotted: str, value: Any) -> None:
    """tree[a][b][c] = value for dotted "a.b.c"; list items by index ("rewards.0.weight")."""
    node: Any = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[_list_index(node, part, dotted)]
        else:
            node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"{dotted}: {part} is a value, not a section")
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, dotted)] = value
    else:
        node[last] = value


def _list_index(node: list, part: str, dotted: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"{dotted}: {part!r} is not an index of a list of {len(node)}")
    return int(part)


def format_error(err: ValidationError) -> str:
    """The first validation error as `dotted.key: what is wrong (got value)`."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-"))
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    got = first.get("input")
    head, _, rest = msg.partition(": ")
    if rest == _BOOL_FOR_NUMBER and isinstance(got, dict):  # `Section`'s check names the key itself
        loc, msg, got = ".".join(p for p in (loc, head) if p), rest, got[head]
    shown = "" if first["type"] in ("extra_forbidden", "missing") or isinstance(got, dict) else f" (got {got!r})"
    return f"{loc}: {msg}{shown}" if loc else msg


def validate(model: type[BaseModel], tree: dict):
    """`model(**tree)`, any problem as a one-line ConfigError."""
    try:
        return model(**tree)
    except ValidationError as e:
        raise ConfigError(format_error(e)) from None
    except TypeError as e:
        raise ConfigError(str(e)) from None


def load_config(model: type[BaseModel], path: str | os.PathLike | None, overrides: list[str] = (),
                what: str = "recipe"):
    """YAML file + dotted overrides validated once as `model`; ConfigError (one line) on any problem."""
    tree = load_yaml(path, what) if path is not None else {}
    for key, value in parse_overrides(list(overrides)):
        set_dotted(tree, key, value)
    return validate(model, tree)


def make_output_dir(path: str, key: str) -> Path:
    """Create the output directory (and its parents); ConfigError naming `key` when a parent is a
    regular file or the place is not writable. Call it after every other check has passed."""
    out = Path(path).resolve()
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{key}: {path} cannot be created: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: {path} cannot be created: {existing} is not writable")
    out.mkdir(parents=True, exist_ok=True)
    return out
