"""Build the roles of a recipe on a Ray cluster and run the controller."""
from __future__ import annotations

import time
from pathlib import Path

import ray

from cluster.checkpoint import resolve_resume
from cluster.recipe import RecipeConfig, dump_recipe
from cluster.controller import Controller, Roles, write_summary
from core.data import load_rows, render_prompts
from cluster.metrics import RunLogger
from cluster.placement import ROLES, busy_seconds, node_ids, start_ray
from learners.algos.registry import build_algorithm
from core.models import load_tokenizer, resolve_model_path


def build_roles(cfg: RecipeConfig, model_path: str, needs) -> Roles:
    from cluster.groups import CriticGroup, LearnerGroup, ReferenceGroup, RewardGroup, RolloutGroup
    from cluster.weight_sync import make_weight_sync

    if needs.judge:
        raise NotImplementedError("a policy-as-judge phase (self-rewarding) is not built yet; "
                                  "use a judge reward in `rewards:` instead")
    learners = LearnerGroup(cfg, model_path)
    rollouts = RolloutGroup.for_recipe(cfg, model_path, reference_path=model_path if needs.mixture_sampling else None)
    return Roles(
        rollouts=rollouts,
        rewards=RewardGroup(cfg, model_path),
        learners=learners,
        reference=ReferenceGroup(cfg, model_path) if needs.reference else None,
        critic=CriticGroup(cfg, model_path) if needs.critic else None,
        sync=make_weight_sync(cfg, learners, rollouts),
    )


def train(cfg: RecipeConfig) -> dict:
    """Run one recipe to completion; returns the summary also written to summary.json."""
    started = time.perf_counter()
    resume = resolve_resume(cfg)  # a bad checkpoint is a one-line error before anything starts
    model_path = resolve_model_path(cfg.model.path)
    out_dir = Path(cfg.train.output_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(model_path)
    train_rows, eval_rows = load_rows(cfg.task)
    max_len = cfg.rollout.max_prompt_len
    train_prompts = render_prompts(train_rows, tokenizer, cfg.task, max_len)
    eval_prompts = render_prompts(eval_rows, tokenizer, cfg.task, max_len)
    algorithm = build_algorithm(cfg.algo)
    needs = algorithm.needs()
    optional = {"reference": needs.reference, "critic": needs.critic}
    roles_used = [r for r in ROLES if optional.get(r, True)]
    address = start_ray(cfg, roles_used)
    logger = None
    try:
        logger = RunLogger(cfg.logging, dump_recipe(cfg), str(out_dir), cfg.train.steps)
        roles = build_roles(cfg, model_path, needs)
        startup_s = time.perf_counter() - started
        controller = Controller(cfg, roles, algorithm, train_prompts, eval_prompts,
                                tokenizer.pad_token_id, logger)
        checksums_start = roles.rollouts.checksums()
        if resume is not None:
            path, state = resume
            roles.learners.load_state(str(path / "learner"))
            if roles.critic is not None:
                roles.critic.load_state(str(path / "critic"))
            controller.restore(state)
            checksums_resumed = roles.rollouts.checksums()
        placement = {name: node_ids(group.actors) for name, group in roles.groups().items()}
        summary = controller.run()
        if cfg.train.save_final:
            summary["final_checkpoint"] = roles.learners.save(str(out_dir / "final"))
        summary.update(startup_s=startup_s, total_wall_s=time.perf_counter() - started, ray_address=address,
                       rollout_checksums={"start": checksums_start, "end": roles.rollouts.checksums(),
                                          **({"resumed": checksums_resumed} if resume else {})},
                       placement=placement, weight_sync=roles.sync.name, resumed_from=str(resume[0]) if resume else None,
                       busy_s={name: busy_seconds(group.actors) for name, group in roles.groups().items()})
        summary["summary_path"] = str(write_summary(str(out_dir), summary))
        return summary
    finally:
        if logger is not None:
            logger.close()
        ray.shutdown()
