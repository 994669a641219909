"""Build the roles of a recipe on a Ray cluster and run the controller."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ray

from cluster.checkpoint import checkpoint_key, resolve_resume, wandb_run_id
from cluster.console import Console, run_console
from cluster.controller import Controller, Roles, write_summary
from cluster.faults import FaultLog, phase_timeouts
from cluster.metrics import RunLogger, StepFlops
from cluster.placement import ROLES, ResourceProbe, busy_seconds, check_address, job_ids, node_ids, start_ray
from cluster.recipe import RecipeConfig, dump_recipe
from core.config import ConfigError, make_output_dir
from core.data import load_rows, render_prompts, truncate_prompts
from core.models import load_checked_tokenizer, resolve_model_path
from core.protocol import Prompts
from learners.algos.registry import build_algorithm


def build_roles(cfg: RecipeConfig, model_path: str, needs, judge_len: int | None = None,
                say: Callable[[str], None] = lambda text: None) -> Roles:
    """`judge_len`: the longest self-judge prompt plus its answer, in tokens (`RunInputs`).
    `say` gets one line per role once its actors are constructed, and the weight-sync path.
    Every role's waits get their phase deadlines (`train.timeouts`)."""
    from cluster.groups import CriticGroup, LearnerGroup, ReferenceGroup, RewardGroup, RolloutGroup
    from cluster.weight_sync import make_weight_sync

    faults = FaultLog()
    started = time.perf_counter()
    learners = LearnerGroup(cfg, model_path)
    say_ready(say, "learner", learners, started)
    started = time.perf_counter()
    rollouts = RolloutGroup.for_recipe(cfg, model_path, reference_path=model_path if needs.mixture_sampling else None,
                                       min_model_len=judge_len, log=faults)
    say_ready(say, "rollout", rollouts, started)
    started = time.perf_counter()  # reward and reference actors start while the critic's ranks set up
    roles = Roles(
        rollouts=rollouts,
        rewards=RewardGroup(cfg, model_path, log=faults),
        learners=learners,
        reference=ReferenceGroup(cfg, model_path, log=faults) if needs.reference else None,
        critic=CriticGroup(cfg, model_path) if needs.critic else None,
        sync=make_weight_sync(cfg, learners, rollouts),
        faults=faults,
    )
    for name, group in roles.groups().items():
        if name in ("reward", "reference", "critic"):
            say_ready(say, name, group, started)
    set_timeouts(cfg, roles.groups().values())
    say(f"weight sync: {roles.sync.name}")
    return roles


def set_timeouts(cfg: RecipeConfig, groups) -> None:
    timeouts = phase_timeouts(cfg)
    for group in groups:
        target = getattr(group, "pool", group)  # stateless roles wait through their pool
        target.timeouts = timeouts


def learner_rebuilder(cfg: RecipeConfig, model_path: str, controller: Controller) -> Callable:
    """What the controller calls when a learner or critic rank died: the old ranks' actors and
    placement groups go, new ranks start (weights from `model.path`; the controller then loads
    the checkpoint), and a new weight sync joins them to the rollout actors."""
    def rebuild():
        from cluster.groups import CriticGroup, LearnerGroup
        from cluster.weight_sync import make_weight_sync

        old = controller.roles
        old.learners.stop()
        if old.critic is not None:
            old.critic.stop()
        learners = LearnerGroup(cfg, model_path)
        critic = CriticGroup(cfg, model_path) if old.critic is not None else None
        set_timeouts(cfg, [g for g in (learners, critic) if g is not None])
        return learners, critic, make_weight_sync(cfg, learners, old.rollouts)

    return rebuild


def say_ready(say: Callable[[str], None], name: str, group, started: float) -> None:
    """Wait until every actor of `group` is constructed, then say so with the seconds since `started`."""
    ray.get([a.__ray_call__.remote(lambda self: None) for a in group.actors])
    n = len(group.actors)
    say(f"{name}: {n} actor{'s' if n != 1 else ''} ready ({time.perf_counter() - started:.1f} s)")


@dataclass(frozen=True)
class RunInputs:
    """What a run reads from outside, each piece checked before Ray starts."""

    resume: tuple[Path, dict] | None
    model_path: str
    pad_id: int
    train_prompts: Prompts
    eval_prompts: Prompts
    out_dir: Path
    judge_len: int | None = None  # self-judging: the longest judge prompt plus its answer, in tokens


def read_inputs(cfg: RecipeConfig) -> RunInputs:
    """Checkpoint, prompt files, model and tokenizer, cluster address, output directory: any
    problem is one ConfigError line, and the output directory is created only once all passed."""
    resume = resolve_resume(cfg)
    rows = load_rows(cfg.task)
    model_path = resolve_model_path(cfg.model.path)
    tokenizer = load_checked_tokenizer(model_path, "model.path")
    prompts = []
    for split, part in zip(("train", "eval"), rows):
        rendered, cut = truncate_prompts(render_prompts(part, tokenizer, cfg.task), cfg.rollout.max_prompt_len)
        if cut:
            print(f"rewardflow: warning: {cut} of {len(part)} {split} prompts are longer than rollout.max_prompt_len="
                  f"{cfg.rollout.max_prompt_len} tokens; their start is cut (the end, with the question, is kept)",
                  file=sys.stderr, flush=True)
        prompts.append(rendered)
    judge_len = check_judge_len(cfg, tokenizer, model_path)
    check_address(cfg)
    if cfg.train.checkpoint_every:
        checkpoint_key(create=True)  # checkpoints are signed: an unusable key fails before Ray starts
    out_dir = make_output_dir(cfg.train.output_dir, "train.output_dir")
    return RunInputs(resume, model_path, tokenizer.pad_token_id, prompts[0], prompts[1], out_dir, judge_len)


def check_judge_len(cfg: RecipeConfig, tokenizer, model_path: str) -> int | None:
    """Tokens a self-judge request needs (template, question, response, answer), checked
    against the model's context; None without a judge phase."""
    from transformers import AutoConfig

    judge = build_algorithm(cfg.algo).needs().judge
    if judge is None:
        return None
    from rewards.self_judge import render_judge_prompt

    frame = tokenizer.apply_chat_template(
        [{"role": "user", "content": render_judge_prompt(judge.template_text(), "", "")}],
        tokenize=False, add_generation_prompt=True)
    r = cfg.rollout
    needed = len(tokenizer(frame, add_special_tokens=False)["input_ids"]) + r.max_prompt_len + r.max_new_tokens \
        + judge.max_new_tokens
    limit = getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", None)
    if limit is not None and needed > limit:
        raise ConfigError(f"algo.judge: a judge request needs up to {needed} tokens (template, "
                          f"rollout.max_prompt_len, rollout.max_new_tokens, judge.max_new_tokens), more than the "
                          f"model's {limit} positions; shorten algo.judge.template or those lengths")
    return needed


def train(cfg: RecipeConfig) -> dict:
    """Run one recipe to completion; returns the summary also written to summary.json. The
    console shows start-up phases, the progress bar and errors; the rest goes to
    `<output_dir>/logs/` (cluster/console.py). Unless `logging.verbose`, an error after the
    inputs are read is raised as a one-line `RunFailed`, its traceback in `logs/driver.log`."""
    started = time.perf_counter()
    inputs = read_inputs(cfg)
    with run_console(inputs.out_dir / "logs", cfg.logging.verbose) as console:
        console.say(f"logs in {console.log_dir}" + ("" if cfg.logging.verbose else " (--verbose shows them here)"))
        return run(cfg, inputs, console, started)


def run(cfg: RecipeConfig, inputs: RunInputs, console: Console, started: float) -> dict:
    """`train` once its inputs are read: Ray, the roles, the controller's loop, the summary."""
    resume, model_path, out_dir = inputs.resume, inputs.model_path, inputs.out_dir
    algorithm = build_algorithm(cfg.algo)
    needs = algorithm.needs()
    optional = {"reference": needs.reference, "critic": needs.critic}
    roles_used = [r for r in ROLES if optional.get(r, True)]
    ray_started = time.perf_counter()
    address = start_ray(cfg, roles_used, console.runtime_env(), log_to_driver=cfg.logging.verbose)
    console.say(f"Ray {'started locally' if address == 'local' else 'at ' + address}, "
                f"{ray.cluster_resources().get('CPU', 0):g} CPUs ({time.perf_counter() - ray_started:.1f} s)")
    logger = None
    try:
        logger = RunLogger(cfg.logging, dump_recipe(cfg), str(out_dir), cfg.train.steps, wandb_run_id(resume),
                           bar_file=console.stream)
        if logger.location:
            console.say(f"wandb run: {logger.location}")
        roles = build_roles(cfg, model_path, needs, inputs.judge_len, console.say)
        startup_s = time.perf_counter() - started
        controller = Controller(cfg, roles, algorithm, inputs.train_prompts, inputs.eval_prompts,
                                inputs.pad_id, logger)
        controller.rebuild_learners = learner_rebuilder(cfg, model_path, controller)
        controller.flops = StepFlops.for_run(cfg, model_path, needs, roles.learners)
        checksums_start = roles.rollouts.checksums()
        if resume is not None:
            path, state = resume
            roles.learners.load_state(str(path / "learner"))
            if roles.critic is not None:
                roles.critic.load_state(str(path / "critic"))
            controller.restore(state)
            checksums_resumed = roles.rollouts.checksums()
        placement = {name: node_ids(group.actors) for name, group in roles.groups().items()}
        logger.describe({**job_ids(), "placement": placement})
        logger.add_source(ResourceProbe(roles.groups()))
        first = f"resumed at step {controller.start_step}" if resume else "evaluating the policy"
        console.say(f"started in {startup_s:.1f} s; {first}, then training to step {cfg.train.steps}")
        summary = controller.run()
        roles = controller.roles  # new learner ranks if one died
        if cfg.train.save_final:
            summary["final_checkpoint"] = roles.learners.save(str(out_dir / "final"))
        summary.update(startup_s=startup_s, total_wall_s=time.perf_counter() - started, ray_address=address,
                       rollout_checksums={"start": checksums_start, "end": roles.rollouts.checksums(),
                                          **({"resumed": checksums_resumed} if resume else {})},
                       placement=placement, weight_sync=roles.sync.name, resumed_from=str(resume[0]) if resume else None,
                       wandb_run_id=logger.run_id,
                       busy_s={name: busy_seconds(group.actors) for name, group in roles.groups().items()})
        summary["summary_path"] = str(write_summary(str(out_dir), summary))
        return summary
    finally:
        if logger is not None:
            logger.close()
        ray.shutdown()
