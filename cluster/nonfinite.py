"""Updates skipped for a non-finite loss or gradient: what the loop counts, and when it stops.

The learner skips an optimiser step whose loss or global gradient norm is not finite, leaving
weights and optimiser state as they were (learners/engine.py `DeepSpeedModel.train_step`), and
reports how many it skipped per training step. One such step is noise; several in a row mean the
run has diverged or its data is broken, and going on would only log NaN: the loop stops after
`train.max_skipped_steps` of them, with one line naming the step and the cause.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

# Per trained model, as its engine reports them: skipped optimiser steps, loss, gradient norm.
SKIP_METRICS = {"learner": ("train/skipped_steps", "loss/total", "train/grad_norm"),
                "critic": ("train/critic_skipped_steps", "loss/value", "train/critic_grad_norm")}


class NonFiniteStop(RuntimeError):
    """Too many training steps in a row skipped their update; the message is one line."""


@dataclass
class SkippedSteps:
    """Training steps whose update (policy or critic) skipped at least one optimiser step."""

    limit: int  # train.max_skipped_steps
    in_a_row: int = 0
    total: int = 0  # skipped optimiser steps over the run, for the summary

    def observe(self, step: int, metrics: dict[str, float]) -> None:
        """Count training step `step` (1-based, as logged) from its metrics; raises
        `NonFiniteStop` when it is the `limit`-th in a row with a skipped update."""
        skipped = {role: metrics.get(keys[0], 0.0) for role, keys in SKIP_METRICS.items()}
        self.total += round(sum(skipped.values()))
        self.in_a_row = self.in_a_row + 1 if any(skipped.values()) else 0
        if self.in_a_row >= self.limit:
            causes = "; ".join(f"{role}: {cause(metrics, *SKIP_METRICS[role][1:])}"
                               for role, n in skipped.items() if n)
            raise NonFiniteStop(f"step {step}: {self.in_a_row} steps in a row skipped their update ({causes}); "
                                f"stopping at train.max_skipped_steps={self.limit}")


def cause(metrics: dict[str, float], loss_key: str, grad_norm_key: str) -> str:
    """Which was not finite, as logged: the loss (mean over the step's optimiser steps), or else
    the gradient norm."""
    loss = metrics.get(loss_key, 0.0)
    if not math.isfinite(loss):
        return f"non-finite loss, {loss_key}={loss}"
    return f"non-finite gradient, {grad_norm_key}={metrics.get(grad_norm_key, math.nan)}"
