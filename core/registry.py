"""A registry of plug-ins by name, each imported on first use.

Entries are `"package.module:Class"` strings, so looking a name up (or validating a recipe that
names one algorithm and two rewards) imports only those modules, not every plug-in and its
optional dependencies (httpx, math-verify, vLLM).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib import import_module


class LazyRegistry(Mapping):
    def __init__(self, kind: str, entries: dict[str, str]):
        self.kind = kind
        self._entries = dict(entries)
        self._loaded: dict[str, type] = {}

    def __getitem__(self, name: str) -> type:
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._entries))}")
        if name not in self._loaded:
            module, _, attr = self._entries[name].partition(":")
            self._loaded[name] = getattr(import_module(module), attr)
        return self._loaded[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def known(self) -> str:
        return ", ".join(sorted(self._entries))
