"""Config base: frozen sections, one YAML loader, dotted overrides, one-line errors.

Every config of the project (the recipe in `cluster/recipe.py`, `train-rm`, `serve-reward`)
is a tree of `Section`s read by `load_config`: a YAML file plus `key.sub=value` overrides,
validated once, frozen afterwards. Any problem is a `ConfigError` whose message is one line
that names the key.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(ValueError):
    """A config problem, reported as one line that names the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def load_yaml(path: str | os.PathLike, what: str = "recipe") -> dict:
    """A YAML file whose top level is a mapping; ConfigError (naming `what` and the file) if not."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {path}: no such file")
    try:
        tree = yaml.safe_load(p.read_text())
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
            out.append((key, yaml.safe_load(raw) if raw else ""))
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
