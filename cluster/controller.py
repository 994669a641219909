"""The training loop: one method per phase, in the order of the paper's pseudo-code.

    generate -> score -> reference / critic forward -> algorithm.prepare -> learner (+ critic) update
             -> weight sync -> log / eval / checkpoint

The loop branches on what the algorithm declares it needs (`algorithm.needs()`), never on its name.
Asynchrony is a property of this loop (`train.max_staleness`, see cluster/pipeline.py), not a
second copy of it.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cluster import checkpoint
from cluster.faults import FaultLog, RankDied, RoleFailed
from cluster.metrics import PhaseTimer, RunLogger, StepFlops
from cluster.nonfinite import NonFiniteStop, SkippedSteps
from cluster.pipeline import InFlight, RolloutPipeline, check_staleness, token_version_metrics
from cluster.recipe import RecipeConfig, dump_recipe
from core.data import PromptStream
from core.protocol import Prompts, Rollouts, RolloutTensors, SamplingSpec, Scores, TrainBatch
from learners.algos.base import Algorithm
from rewards.self_judge import JUDGE_TERM, MAX_SCORE, aggregate_judgments, parse_score

if TYPE_CHECKING:  # the role groups import Ray; the loop itself runs on any objects with these methods
    from cluster.groups import CriticGroup, LearnerGroup, ReferenceGroup, RewardGroup, RolloutGroup
    from cluster.weight_sync import WeightSync


@dataclass(frozen=True)
class Roles:
    """The run's role groups; reference and critic only when the algorithm declares them."""

    rollouts: RolloutGroup
    rewards: RewardGroup
    learners: LearnerGroup
    reference: ReferenceGroup | None
    sync: WeightSync
    critic: CriticGroup | None = None
    faults: FaultLog = field(default_factory=FaultLog)  # restarts and re-issues, shared with the role groups

    def groups(self) -> dict[str, object]:
        """The roles that run, by config section name."""
        named = {"rollout": self.rollouts, "reward": self.rewards, "learner": self.learners,
                 "reference": self.reference, "critic": self.critic}
        return {k: v for k, v in named.items() if v is not None}


class Controller:
    def __init__(self, cfg: RecipeConfig, roles: Roles, algorithm: Algorithm, train: Prompts,
                 evals: Prompts, pad_id: int, logger: RunLogger):
        self.cfg, self.roles, self.algorithm = cfg, roles, algorithm
        self.needs = algorithm.needs()
        self.train_prompts = train
        self.stream = PromptStream(train, cfg.train.seed)
        self.evals, self.pad_id, self.logger = evals, pad_id, logger
        self.version = 0  # the newest policy version queued on the rollout actors
        self.samples_seen = 0
        self.start_step = 0  # > 0 when resumed from a checkpoint
        self.acc_before: float | None = None
        self.curve: list[dict] = []  # held-out accuracy against wall-clock, across restarts
        self.wall_before = 0.0  # wall seconds of the runs this one continues
        # Weights are synced every `sync_every` steps, which adds up to sync_every - 1 versions.
        self.staleness_bound = cfg.train.max_staleness + cfg.train.sync_every - 1
        self.pipeline = RolloutPipeline(self.staleness_bound, self.request_rollouts)
        self.skipped = SkippedSteps(cfg.train.max_skipped_steps)
        # -- faults (cluster/faults.py) --
        self.trained_version = 0  # the learner's weights: the version its last update produced
        self.batches: dict[int, list[str]] = {}  # step -> ids of the prompts it trained on
        self.learner_failures = 0
        self.initial_state: dict | None = None  # the loop before step 0 (a learner restart without a checkpoint)
        # Set by cluster/launch.py: stops the learner (and critic) ranks, starts new ones and a
        # weight sync to them; returns (learners, critic, sync).
        self.rebuild_learners = None
        self.flops: StepFlops | None = None  # perf/<phase> FLOPs against the peak; set by cluster/launch.py
        self.scale_file = Path(cfg.train.output_dir) / "control" / SCALE_FILE
        self.scale_seen: int | None = None
        roles.faults.checkpoint = self.newest_checkpoint
        pool = getattr(roles.rollouts, "pool", None)
        if pool is not None:  # a restarted or added rollout actor gets the current weights first
            pool.after_restart = self.catch_up

    # -- phases ---------------------------------------------------------------------------
    def request_rollouts(self, step: int) -> InFlight:
        """Generate (and, chunk by chunk as generations finish, score) one step's prompts."""
        r = self.cfg.rollout
        # Each response's randomness is a function of (train.seed, step, its place in the batch),
        # not of the engine's history: a resumed run samples what the uninterrupted one did.
        spec = SamplingSpec(n=self.needs.samples_per_prompt, max_new_tokens=r.max_new_tokens,
                            temperature=r.temperature, top_p=r.top_p, seed=step_seed(self.cfg.train.seed, step),
                            mixture_coef=self.algorithm.mixture_coef(step) if self.needs.mixture_sampling else None,
                            greedy_per_prompt=self.needs.greedy_sample)
        prompts = self.stream.next_batch(self.cfg.train.prompts_per_step)
        pending = self.roles.rollouts.submit(prompts, spec, r.chunk_prompts, min_version=self.version)
        return InFlight(step, prompts, pending, self.roles.rewards.submit(pending))

    def self_judge(self, item: InFlight, rollouts: Rollouts, scores: Scores) -> tuple[Scores, dict[str, float]]:
        """The policy judges its own responses on the rollout engines, with the weights they hold
        now; each response's mean parsed score joins the scores as `self_judge` (NaN: none)."""
        judge = self.needs.judge
        questions = [item.prompts.questions[g] for g in rollouts.group_ids]
        found = self.roles.rollouts.judge(questions, rollouts.response_texts, judge, self.cfg.rollout.chunk_prompts)
        means, stats = aggregate_judgments([[parse_score(t) for t in texts] for texts in found.texts])
        judged = means[~np.isnan(means)]
        metrics = {"judge/parse_rate": stats["parse_rate"], "judge/unjudged": float(stats["unjudged"]),
                   "judge/policy_version": float(min(found.versions)), "judge/checksum": found.checksums[0],
                   **{f"judge/score_{s}": float(np.mean(np.rint(judged) == s)) if len(judged) else 0.0
                      for s in range(MAX_SCORE + 1)}}
        return replace(scores, terms={**scores.terms, JUDGE_TERM: means}), metrics

    def reference_forward(self, tensors: RolloutTensors) -> RolloutTensors:
        return replace(tensors, ref_logprobs=self.roles.reference.logprobs(tensors.probe()))

    def critic_forward(self, tensors: RolloutTensors) -> RolloutTensors:
        return replace(tensors, values=self.roles.critic.values(tensors.probe()))

    def update(self, batch: TrainBatch) -> dict[str, float]:
        """Policy and critic (if any) train on the same batch at the same time."""
        max_new = self.cfg.rollout.max_new_tokens
        critic = self.roles.critic.start_update(batch, self.algorithm, max_new) if self.needs.critic else None
        metrics = self.roles.learners.update(batch, self.algorithm, max_new)
        if critic is not None:
            metrics.update(self.roles.critic.finish_update(critic))
        return metrics

    def sync_weights(self, version: int) -> None:
        """Queue the learner's weights on every rollout actor; they load them between requests.
        The synchronous loop waits for the reload, the asynchronous one does not."""
        self.version = version
        self.roles.sync.start(version)
        if self.cfg.train.max_staleness == 0:
            self.roles.sync.finish()
        if self.needs.reference_follows_policy:  # iterative self-rewarding: M_t is the next reference
            self.roles.reference.load_weights(self.roles.learners.export_weights())
            self.roles.learners.check_export()

    def catch_up(self, slots: list[int]) -> None:
        """New rollout actors (`slots`; none after a removal) get the learner's current weights
        before any request (`WeightSync.catch_up`); where the sync reached every actor, that is
        the newest version queued on them."""
        if self.roles.sync.catch_up(slots, self.trained_version):
            self.version = max(self.version, self.trained_version)

    def evaluate(self) -> float:
        """Greedy accuracy on the held-out split."""
        spec = SamplingSpec(n=1, max_new_tokens=self.cfg.train.eval_max_new_tokens, temperature=0.0)
        rollouts = self.roles.rollouts.generate(self.evals, spec, min_version=self.version, phase="eval")
        return float(np.mean(self.roles.rewards.accuracy(rollouts).values))

    # -- loop -----------------------------------------------------------------------------
    def train_step(self, step: int) -> dict[str, float]:
        """Step `step` trains the policy from version `step` to `step + 1`."""
        timer = PhaseTimer()
        started = time.perf_counter()
        self.poll_scale()
        self.pipeline.fill(self.version, self.cfg.train.steps)
        item = self.pipeline.pop(step)
        with timer.phase("generate"):  # waiting for rollouts: ~0 when they were made during the last update
            rollouts = item.rollouts.result()
        with timer.phase("score"):
            scores = item.scores.result()
        judge_metrics: dict[str, float] = {}
        with timer.phase("judge"):
            if self.needs.judge is not None:
                scores, judge_metrics = self.self_judge(item, rollouts, scores)
        staleness = check_staleness(step, rollouts.policy_versions, self.staleness_bound)
        tensors = RolloutTensors.from_rollouts(rollouts, self.pad_id)
        with timer.phase("reference"):
            if self.needs.reference:
                tensors = self.reference_forward(tensors)
        with timer.phase("critic"):
            if self.needs.critic:
                tensors = self.critic_forward(tensors)
        batch, prep_metrics = self.algorithm.prepare(rollouts, scores, tensors)
        with timer.phase("update"):
            train_metrics = self.update(batch)
        self.trained_version = step + 1
        self.batches[step] = list(item.prompts.ids)
        with timer.phase("weight_sync"):
            if (step + 1) % self.cfg.train.sync_every == 0:
                self.sync_weights(step + 1)
        step_s = time.perf_counter() - started
        self.samples_seen += len(rollouts)
        if step % max(1, self.cfg.train.steps // 4) == 0:
            self.logger.samples_table(step, rollouts, scores)
        return {
            **rollout_metrics(rollouts, scores), **judge_metrics, **prep_metrics, **train_metrics, **timer.times,
            **({"train/mixture_coef": self.algorithm.mixture_coef(step)} if self.needs.mixture_sampling else {}),
            **({"perf/reference_tokens": float(self.roles.reference.tokens)} if self.needs.reference else {}),
            "async/staleness": float(staleness),
            **token_version_metrics(step, rollouts),
            "async/in_flight": float(len(self.pipeline)),
            **self.faults_metrics(),
            "timing/reload": self.roles.sync.last_reload_s,
            "timing/step": step_s,
            "timing/other": step_s - sum(timer.times.values()),
            "perf/samples_per_s": len(rollouts) / step_s,
            "perf/tokens_per_s": sum(len(r) for r in rollouts.response_ids) / step_s,
            **(self.flops.metrics(rollouts, timer.times) if self.flops else {}),
        }

    # -- checkpoints ----------------------------------------------------------------------
    def state(self, steps_done: int, wall_s: float) -> dict:
        """The loop after `steps_done` steps, for a restart. Rollouts already requested for later
        steps are not part of it: a restarted loop requests them again, from the same prompts."""
        return {"step": steps_done, "prompts_consumed": steps_done * self.cfg.train.prompts_per_step,
                "samples_seen": self.samples_seen, "rewards": self.roles.rewards.state(),
                "eval_accuracy_before": self.acc_before, "accuracy_curve": self.curve, "wall_s": wall_s,
                "wandb_run_id": self.logger.run_id, "skipped_steps": self.skipped.total}

    def restore(self, state: dict) -> None:
        """Continue after state["step"] steps (the learner, and critic, already hold that step's
        weights): the same prompt order, reward statistics and accuracy curve; the rollout actors
        get the restored weights first."""
        self.start_step = self.pipeline.next_step = state["step"]
        self.stream.skip(state["prompts_consumed"])
        self.samples_seen = state["samples_seen"]
        self.skipped.total = state.get("skipped_steps", 0)
        self.roles.rewards.load_state(state["rewards"])
        self.acc_before, self.curve, self.wall_before = state["eval_accuracy_before"], state["accuracy_curve"], state["wall_s"]
        self.trained_version = state["step"]
        self.sync_weights(state["step"])

    def newest_checkpoint(self) -> str | None:
        found = checkpoint.complete_checkpoints(checkpoint.checkpoint_root(self.cfg)) if self.cfg.train.checkpoint_every else []
        return str(found[-1]) if found else None

    # -- faults ---------------------------------------------------------------------------
    def faults_metrics(self) -> dict[str, float]:
        out = self.roles.faults.metrics()
        pool = getattr(self.roles.rollouts, "pool", None)
        if pool is not None:
            out["faults/rollout_workers"] = float(len(pool.live()))
        return out

    def recover_learners(self, error: Exception) -> int:
        """A learner (or critic) rank died: new ranks continue from the newest checkpoint (or from
        the start, before the first one), with the same prompt order; the rollouts requested
        after it are dropped and requested again. Returns the step to go on from."""
        cfg = self.cfg.train
        if not cfg.checkpoint_every or self.rebuild_learners is None:
            raise RoleFailed(f"{error}; the run cannot restart the learner without checkpoints "
                             "(set train.checkpoint_every)") from None
        if self.learner_failures >= cfg.max_failures:
            raise RoleFailed(f"{error}; {self.learner_failures} learner restarts of {cfg.max_failures} allowed "
                             f"(train.max_failures); {self.roles.faults.resume_hint()}") from None
        self.learner_failures += 1
        self.roles.faults.restarts["learner"] += 1
        print(f"rewardflow: {error}; restarting the learner from "
              f"{self.newest_checkpoint() or 'the start (no checkpoint yet)'}", file=sys.stderr, flush=True)
        learners, critic, sync = self.rebuild_learners()
        self.roles = replace(self.roles, learners=learners, critic=critic, sync=sync)
        newest = self.newest_checkpoint()
        if newest is not None:
            state = checkpoint.read_state(Path(newest))
            learners.load_state(str(Path(newest) / "learner"))
            if critic is not None:
                critic.load_state(str(Path(newest) / "critic"))
        else:
            state = self.initial_state
        self.stream = PromptStream(self.train_prompts, cfg.seed)
        self.pipeline = RolloutPipeline(self.staleness_bound, self.request_rollouts)
        start_step, wall_before = self.start_step, self.wall_before
        self.restore(state)
        self.start_step, self.wall_before = start_step, wall_before
        self.batches = {s: ids for s, ids in self.batches.items() if s < state["step"]}
        return state["step"]

    def poll_scale(self) -> None:
        """Apply the newest `rewardflow scale` request (`<output_dir>/control/scale.json`): added
        actors get the current weights first and join the balancing; removed ones take no new
        requests and end once their requests are done. A bad request is reported, not fatal."""
        groups = {"rollout": self.roles.rollouts, "reward": self.roles.rewards}
        try:
            seen = self.scale_file.stat().st_mtime_ns
        except OSError:
            seen = None
        if seen is not None and seen != self.scale_seen:
            self.scale_seen = seen
            try:
                request = read_scale_request(self.scale_file)
            except ValueError as e:
                print(f"rewardflow: ignoring {self.scale_file}: {e}", file=sys.stderr, flush=True)
                request = {}
            for role, workers in request.items():
                pool = getattr(groups[role], "pool", None)
                if pool is None:
                    continue
                live = len(pool.live())
                if workers > live:
                    pool.grow(workers - live)
                elif workers < live:
                    pool.drain(live - workers)
        for role, group in groups.items():
            pool = getattr(group, "pool", None)
            if pool is not None and pool.reap() and role == "rollout":
                self.catch_up([])  # the collective re-forms its group without them

    def check_skipped(self, step: int, metrics: dict[str, float]) -> None:
        """Count the step's skipped updates (cluster/nonfinite.py); the `train.max_skipped_steps`-th
        in a row is logged, so its non-finite metrics show, and stops the run before anything
        else (eval, checkpoint, final weights) is written."""
        try:
            self.skipped.observe(step + 1, metrics)
        except NonFiniteStop:
            self.logger.log(step + 1, metrics)
            raise

    def save_checkpoint(self, steps_done: int, wall_s: float) -> Path:
        tmp = checkpoint.begin(checkpoint.checkpoint_root(self.cfg), steps_done)
        self.roles.learners.save_state(str(tmp / "learner"))
        if self.roles.critic is not None:
            self.roles.critic.save_state(str(tmp / "critic"))
        return checkpoint.commit(tmp, self.state(steps_done, wall_s), self.cfg)

    # -- the run --------------------------------------------------------------------------
    def run(self) -> dict:
        cfg = self.cfg.train
        started = time.perf_counter() - self.wall_before
        if self.start_step == 0:
            self.acc_before = self.evaluate()
            self.logger.log(0, {"eval/accuracy": self.acc_before})
            self.curve = [{"step": 0, "wall_s": 0.0, "eval_accuracy": self.acc_before}]
            self.initial_state = self.state(0, 0.0)
        step_times: list[dict] = []
        metrics: dict[str, float] = {}
        self.logger.start_progress()
        step = self.start_step
        while step < cfg.steps:
            try:
                metrics = self.train_step(step)
                self.check_skipped(step, metrics)
                if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
                    metrics["eval/accuracy"] = self.evaluate()
                    self.curve.append({"step": step + 1, "wall_s": time.perf_counter() - started,
                                       "eval_accuracy": metrics["eval/accuracy"]})
                if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
                    self.save_checkpoint(step + 1, time.perf_counter() - started)
            except RankDied as error:
                step = self.recover_learners(error)
                continue
            step_times.append({k: v for k, v in metrics.items() if k.startswith("timing/")})
            self.logger.log(step + 1, metrics)
            self.logger.advance(metrics)
            step += 1
        if cfg.steps % cfg.sync_every:
            self.sync_weights(cfg.steps)  # eval and save the weights that were trained
        self.roles.sync.finish()
        acc_after = self.evaluate()
        self.logger.log(cfg.steps, {"eval/accuracy": acc_after})
        wall = time.perf_counter() - started
        self.curve.append({"step": cfg.steps, "wall_s": wall, "eval_accuracy": acc_after})
        return {
            "steps": cfg.steps,
            "start_step": self.start_step,
            "wall_s": wall,
            "samples_per_s": self.samples_seen / wall,
            "eval_accuracy_before": self.acc_before,
            "eval_accuracy_after": acc_after,
            "accuracy_curve": self.curve,
            "final_metrics": metrics,
            "skipped_steps": self.skipped.total,  # optimiser steps skipped for a non-finite loss or gradient
            "faults": {**self.faults_metrics(), "learner_restarts": self.learner_failures},
            # the prompt ids each step trained on, in step order: every batch of the stream once
            "prompt_batches": [self.batches[s] for s in sorted(self.batches)],
            "mean_step_timing_s": {k: float(np.mean([t[k] for t in step_times])) for k in step_times[0]},
            "recipe": dump_recipe(self.cfg),
        }


SCALE_FILE = "scale.json"
SCALABLE_ROLES = ("rollout", "reward")


def read_scale_request(path: Path) -> dict[str, int]:
    """{role: workers} from a `rewardflow scale` request; ValueError (one line) if malformed."""
    try:
        request = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"not readable JSON ({type(e).__name__})") from None
    if not isinstance(request, dict):
        raise ValueError("expected an object {role: workers}")
    for role, workers in request.items():
        if role not in SCALABLE_ROLES:
            raise ValueError(f"role {role!r} cannot be scaled (only {', '.join(SCALABLE_ROLES)})")
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 1024:
            raise ValueError(f"{role}: workers must be an integer in 1..1024, got {workers!r}")
    return request


def step_seed(seed: int, step: int) -> int:
    """The sampling seed of step `step` (`SamplingSpec.seed`)."""
    return int(np.random.SeedSequence([seed % 2**64, step]).generate_state(1)[0])


def rollout_metrics(rollouts: Rollouts, scores: Scores) -> dict[str, float]:
    lengths = np.array([len(r) for r in rollouts.response_ids])
    out = {
        "reward/total": float(np.mean(scores.values)),
        "reward/errors": float(scores.num_errors),
        "rollout/response_len": float(lengths.mean()),
        "rollout/truncated_frac": float(np.mean([f == "length" for f in rollouts.finish_reasons])),
    }
    # A term may be NaN where it has no value (`self_judge`: no parsable judgment).
    out.update({f"reward/{k}": float(np.nanmean(v)) for k, v in scores.terms.items() if np.isfinite(v).any()})
    return out


def write_summary(out_dir: str, summary: dict) -> Path:
    path = Path(out_dir) / "summary.json"
    path.write_text(json.dumps(summary, indent=2))
    return path
