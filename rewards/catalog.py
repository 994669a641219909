"""The reward registry as a table: each reward's name, its four taxonomy tags and when to use it.

`rewardflow rewards list` prints it; `docs/rewards.md` holds the same rows (`--markdown`).
"""
from __future__ import annotations

from rewards.base import Reward
from rewards.registry import REWARDS

COLUMNS = ("name", "basis", "format", "expression", "granularity", "use")
# A reward whose taxonomy is only known once built (a hosted reward reports its own).
AT_RUNTIME = "per instance"


def reward_row(name: str, cls: type[Reward]) -> tuple[str, ...]:
    t = getattr(cls, "taxonomy", None)
    tags = (t.basis.value, t.format.value, t.expression.value, t.granularity.value) if t else (AT_RUNTIME,) * 4
    return (name, *tags, cls.summary)


def reward_table(markdown: bool = False) -> str:
    """The registry, one row per reward in registry order: aligned text, or a Markdown table."""
    rows = [COLUMNS, *(reward_row(n, c) for n, c in REWARDS.items())]
    if markdown:
        lines = [f"| {' | '.join(r)} |" for r in rows]
        return "\n".join([lines[0], "|" + "---|" * len(COLUMNS), *lines[1:]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(r, widths)), r[-1]]) for r in rows)
