"""Skipped updates (non-finite loss or gradient): the count the loop keeps and where it stops the
run (cluster/nonfinite.py, `Controller.run`). The learner side is tests/unit/learners/test_nonfinite_step.py."""
import math
from types import SimpleNamespace

import numpy as np
import pytest

from cluster.controller import Controller, Roles
from cluster.nonfinite import NonFiniteStop, SkippedSteps
from cluster.recipe import ConfigError, load_recipe
from core.protocol import Prompts
from learners.algos.registry import build_algorithm

OK = {"train/skipped_steps": 0.0, "loss/total": 0.5, "train/grad_norm": 1.0}
NAN_LOSS = {"train/skipped_steps": 1.0, "loss/total": math.nan, "train/grad_norm": math.inf}
INF_GRAD = {"train/skipped_steps": 1.0, "loss/total": 0.5, "train/grad_norm": math.inf}


def test_the_limit_counts_steps_in_a_row_and_the_message_names_step_and_cause():
    skips = SkippedSteps(limit=3)
    for step, metrics in enumerate([NAN_LOSS, NAN_LOSS, OK, INF_GRAD, OK, NAN_LOSS, INF_GRAD], start=1):
        skips.observe(step, metrics)  # never 3 in a row
    assert (skips.in_a_row, skips.total) == (2, 5)
    with pytest.raises(NonFiniteStop) as err:
        skips.observe(8, {**INF_GRAD, "train/skipped_steps": 2.0})  # two mini-batches skipped in this step
    assert str(err.value) == ("step 8: 3 steps in a row skipped their update (learner: non-finite gradient, "
                              "train/grad_norm=inf); stopping at train.max_skipped_steps=3")
    assert skips.total == 7


def test_the_stop_reaches_the_console_as_one_whole_line(tmp_path):
    from cluster.console import failure_line

    skips = SkippedSteps(limit=1)
    with pytest.raises(NonFiniteStop) as err:  # the longest cause: both models
        skips.observe(12, {**NAN_LOSS, "train/critic_skipped_steps": 1.0, "loss/value": math.nan})
    line = failure_line(err.value, tmp_path)
    assert line.startswith(f"NonFiniteStop: {err.value} (traceback: ")  # not cut short
    assert "\n" not in line and "learner: non-finite loss, loss/total=nan; critic: non-finite loss" in line


def test_a_skipped_critic_update_counts_too_and_is_named():
    skips = SkippedSteps(limit=1)
    with pytest.raises(NonFiniteStop, match=r"step 4: .*\(critic: non-finite loss, loss/value=nan\)"):
        skips.observe(4, {**OK, "train/critic_skipped_steps": 1.0, "loss/value": math.nan})


def test_max_skipped_steps_is_validated():
    assert load_recipe("recipes/grpo_arith.yaml").train.max_skipped_steps == 3
    with pytest.raises(ConfigError, match="train.max_skipped_steps: Input should be greater than or equal to 1"):
        load_recipe("recipes/grpo_arith.yaml", ["train.max_skipped_steps=0"])


class RecordingLogger:
    run_id = "fake"

    def __init__(self):
        self.logged: list[tuple[int, dict]] = []

    def log(self, step, metrics):
        self.logged.append((step, dict(metrics)))

    def start_progress(self):
        pass

    def advance(self, metrics):
        pass


def _controller(per_step: list[dict], limit: int):
    """The real loop (`Controller.run`) over fake phases: step s returns `per_step[s]`; evaluation
    and checkpoints are recorded, not run."""
    cfg = load_recipe("recipes/grpo_arith.yaml", [
        f"train.steps={len(per_step)}", f"train.max_skipped_steps={limit}", "train.checkpoint_every=1",
        "train.eval_every=1"])
    prompts = Prompts(ids=["p0"], texts=["p0"], token_ids=[np.array([5])], answers=["0"])
    fake = SimpleNamespace(last_reload_s=0.0, state=dict, start=lambda version: None, finish=lambda: None)
    roles = Roles(rollouts=fake, rewards=fake, learners=fake, reference=None, sync=fake)
    controller = Controller(cfg, roles, build_algorithm(cfg.algo), prompts, prompts, 0, RecordingLogger())
    controller.done = []  # what the loop wrote besides metrics, in order
    controller.evaluate = lambda: controller.done.append("eval") or 0.0
    controller.train_step = lambda step: {**per_step[step], "timing/step": 1.0}
    controller.save_checkpoint = lambda steps_done, wall_s: controller.done.append(f"checkpoint {steps_done}")
    return controller


def test_the_loop_stops_at_the_limit_before_writing_anything_for_that_step():
    # steps 1-5: fine, skipped, fine, skipped, skipped -> the 2nd in a row (step 5) stops the run
    controller = _controller([OK, NAN_LOSS, OK, NAN_LOSS, INF_GRAD, OK], limit=2)
    with pytest.raises(NonFiniteStop, match=r"^step 5: 2 steps in a row skipped their update \(learner: "
                                            r"non-finite gradient, train/grad_norm=inf\)"):
        controller.run()
    logged = controller.logger.logged
    assert [s for s, _ in logged] == [0, 1, 2, 3, 4, 5]  # step 0: eval before training; step 5 shows its NaN
    assert [m["train/skipped_steps"] for _, m in logged[1:]] == [0.0, 1.0, 0.0, 1.0, 1.0]
    assert controller.done == ["eval", *(x for s in (1, 2, 3, 4) for x in ("eval", f"checkpoint {s}"))]
    assert controller.skipped.total == 3


def test_a_run_with_sporadic_skips_finishes_with_their_total_in_the_summary():
    controller = _controller([NAN_LOSS, OK, INF_GRAD, OK], limit=2)
    summary = controller.run()
    assert summary["skipped_steps"] == 2 and summary["steps"] == 4
    assert controller.state(4, 0.0)["skipped_steps"] == 2
