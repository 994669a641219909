"""The run report's figures (apps/report.py). Each is drawn on matplotlib's Agg canvas (no display,
no pyplot state shared between calls) and returned as PNG bytes. The data comes in as plain lists;
what to plot is the report's business, how it looks is this module's."""
from __future__ import annotations

import math
from io import BytesIO

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

# name -> (x values, y values); a NaN y leaves a gap.
Series = dict[str, tuple[list[float], list[float]]]
SIZE = (7.5, 3.4)  # inches, at DPI: ~750 x 340 pixels per figure
DPI = 100


def _text(label: str) -> str:
    """A label from the run drawn as it is: `$` would start matplotlib's math mode (and a stray one
    raises), a leading `_` would hide it from the legend."""
    return label.replace("$", r"\$").lstrip("_") or "?"


def _axes(title: str, xlabel: str, ylabel: str):
    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if xlabel == "step":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, ax


def _png(fig: Figure, ax) -> bytes:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    out = BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def lines(title: str, xlabel: str, ylabel: str, series: Series) -> bytes:
    """One line per series; markers when a series has few points (an eval curve)."""
    fig, ax = _axes(title, xlabel, ylabel)
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, label=_text(name), marker="o" if len(xs) <= 20 else None, markersize=3, linewidth=1.4)
    return _png(fig, ax)


def stacked_bars(title: str, xlabel: str, ylabel: str, xs: list[float], stacks: dict[str, list[float]]) -> bytes:
    """One bar per x, its parts stacked in the order given; a missing (NaN) or negative part is 0."""
    fig, ax = _axes(title, xlabel, ylabel)
    bottom = [0.0] * len(xs)
    for name, ys in stacks.items():
        heights = [y if math.isfinite(y) and y > 0 else 0.0 for y in ys]
        ax.bar(xs, heights, bottom=bottom, label=_text(name), width=0.8)
        bottom = [b + h for b, h in zip(bottom, heights)]
    return _png(fig, ax)


def bars(title: str, ylabel: str, values: dict[str, float], ymax: float | None = None) -> bytes:
    """One labelled bar per name, its value written above it."""
    fig, ax = _axes(title, "", ylabel)
    drawn = ax.bar([_text(n) for n in values], list(values.values()), color="tab:blue", width=0.6)
    ax.bar_label(drawn, fmt="%.2f", fontsize=8)
    if ymax is not None:
        ax.set_ylim(0, max(ymax, *values.values()) * 1.1)
    return _png(fig, ax)
