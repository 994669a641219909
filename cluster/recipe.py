"""The recipe schema: one frozen section per concern, validated once (`load_recipe`).

No Ray here. Algorithm and reward knobs live in their own config classes, found through the
lazy registries, so validating a recipe imports only the algorithm and rewards it names. The
config base, the YAML loader and the one-line errors are `core/config.py`.
"""
from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, SerializeAsAny, field_validator, model_validator

from core.config import ConfigError, Section, load_config
from core.data import TaskConfig
from learners.algos.registry import ALGORITHMS
from rewards.base import PairwiseReward
from rewards.combine import CombineConfig, TermCombineConfig
from rewards.registry import REWARDS, reward_validators

__all__ = ["ConfigError", "RecipeConfig", "load_recipe", "dump_recipe"]


class RoleConfig(Section):
    """Workers and resources of one role; each worker is one Ray actor in the role's placement group."""

    num_workers: int = Field(1, ge=1)
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    # Custom Ray resources each worker needs, e.g. {node_a: 1} to pin a role to the nodes that
    # were started with `ray start --resources='{"node_a": 1}'`.
    resources: dict[str, float] = {}

    @field_validator("resources")
    @classmethod
    def _custom_only(cls, res: dict[str, float]) -> dict[str, float]:
        for name, amount in res.items():
            if name in ("CPU", "GPU", "memory") or amount < 0:
                raise ValueError(f"{name}: custom resources need a new name and an amount >= 0 "
                                 "(use num_cpus / num_gpus for CPU and GPU)")
        return res


class RestartingRoleConfig(RoleConfig):
    """A role whose actors hold nothing the run cannot rebuild: a dead one is restarted (and its
    requests sent again) up to `max_restarts` times per run (cluster/faults.py)."""

    max_restarts: int = Field(3, ge=0)


class ModelConfig(Section):
    # "default" is the embedded SmolLM2-135M-Instruct built by `rewardflow setup`; else a local HF dir.
    path: str = "default"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class RewardTermConfig(TermCombineConfig):
    """One reward term: how it combines (name, weight, normalize, clip, transform, ref: see
    `rewards.combine.TermCombineConfig`); `args` go to the reward's own config class."""

    args: SerializeAsAny[BaseModel] | None = Field(None, validate_default=True)

    _known, _args = reward_validators("name")


class RolloutConfig(RestartingRoleConfig):
    max_new_tokens: int = Field(64, ge=1)
    max_prompt_len: int = Field(256, ge=1)
    # Training samples several responses per prompt, so greedy (0) is not allowed here.
    temperature: float = Field(1.0, gt=0)
    # < 1 truncates the sampling distribution, which the learner's logprobs do not model.
    top_p: float = Field(1.0, gt=0, le=1)
    kv_cache_gib: float = Field(1.0, gt=0)
    gpu_memory_utilization: float = Field(0.4, gt=0, le=1)
    # Prompts per request: a step's prompts go out in chunks of this size to the least-loaded
    # rollout actor, and each chunk is scored as soon as it is generated. None: one chunk per actor.
    chunk_prompts: int | None = Field(None, ge=1)
    # Asynchronous loop only: a weight load starts at once instead of queueing behind the requests
    # already sent; responses in generation keep their tokens and go on under the new weights, so
    # one response may hold tokens of two versions (`async/interrupted_frac`).
    interrupt: bool = False


class RewardRoleConfig(RestartingRoleConfig):
    num_cpus: float = Field(0.1, ge=0)
    timeout_s: float = Field(10.0, gt=0)
    combine: CombineConfig = CombineConfig()


# Shared-prompt packing (learners/packing.py): the samples of one prompt run against a single
# copy of it, micro-batches are formed by length, so no padding is computed. auto: where adjacent
# rows share a prompt (GRPO-like groups, pairs). YAML reads on / off as booleans.
SharePrompt = Annotated[Literal["auto", "on", "off"],
                        BeforeValidator(lambda v: ("on" if v else "off") if isinstance(v, bool) else v)]


class LearnerConfig(RoleConfig):
    zero_stage: int = Field(0, ge=0, le=3)
    micro_batch_size: int = Field(8, ge=1)
    grad_clip: float = Field(1.0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    gradient_checkpointing: bool = False
    share_prompt: SharePrompt = "auto"  # the policy's and the critic's forward and backward (not sft)


class ReferenceConfig(RestartingRoleConfig):
    num_cpus: float = Field(0.1, ge=0)
    micro_batch_size: int = Field(16, ge=1)
    share_prompt: SharePrompt = "auto"


class TimeoutsConfig(Section):
    """Seconds a phase of the loop may wait for an actor before the run stops with an error
    naming the role and the phase; None: a default from the recipe's sizes (cluster/faults.py)."""

    generate: float | None = Field(None, gt=0)
    score: float | None = Field(None, gt=0)
    judge: float | None = Field(None, gt=0)
    reference: float | None = Field(None, gt=0)
    critic: float | None = Field(None, gt=0)
    update: float | None = Field(None, gt=0)
    weight_sync: float | None = Field(None, gt=0)
    eval: float | None = Field(None, gt=0)
    checkpoint: float | None = Field(None, gt=0)


class TrainConfig(Section):
    steps: int = Field(20, ge=1)
    prompts_per_step: int = Field(16, ge=1)
    seed: int = 0
    sync_every: int = Field(1, ge=1)
    # Weights travel to rollout actors in buckets of this size: the reload starts on the first
    # while the learner exports the next.
    sync_bucket_mb: float = Field(64.0, gt=0)
    # auto: rollout actors read the learner's parameters from shared memory where that is safe
    # (synchronous loop, one node, ZeRO 0, float32, CPU), else learner rank 0 broadcasts them in
    # buckets over the run's own process group (collective: gloo on CPU, NCCL on GPUs);
    # object_store puts the buckets in the Ray object store instead.
    weight_sync: Literal["auto", "collective", "object_store", "shared_memory"] = "auto"
    # A collective sync fails, naming the rollout actor, when a transfer (or the wait for the
    # last receiver once the first is ready) takes longer than this.
    sync_timeout_s: float = Field(300.0, gt=0)
    # Rollouts for steps t+1..t+k are generated while step t trains (0: synchronous, on-policy).
    max_staleness: int = Field(0, ge=0)
    eval_every: int = Field(0, ge=0)  # 0: eval before and after only
    eval_max_new_tokens: int = Field(32, ge=1)
    output_dir: str = "runs/grpo_arith"
    save_final: bool = True
    # Every N steps: learner (and critic) weights with optimiser state plus the loop's state in
    # output_dir/checkpoints/step_N (0: never); the newest `keep_checkpoints` are kept.
    checkpoint_every: int = Field(0, ge=0)
    keep_checkpoints: int = Field(1, ge=1)
    # Continue a run from a checkpoint: a step_N directory, or "latest" (newest in output_dir).
    resume: str | None = None
    # An optimiser step with a non-finite loss or gradient is skipped (weights and optimiser state
    # unchanged, `train/skipped_steps`); this many training steps in a row with a skipped update
    # stop the run (cluster/nonfinite.py).
    max_skipped_steps: int = Field(3, ge=1)
    # A learner (or critic) rank that dies: the run restarts those ranks from the newest
    # checkpoint, at most this many times (needs checkpoint_every > 0).
    max_failures: int = Field(2, ge=0)
    timeouts: TimeoutsConfig = TimeoutsConfig()


class LoggingConfig(Section):
    # None: "online" with WANDB_API_KEY set, else "offline".
    wandb_mode: Literal["online", "offline", "disabled"] | None = None
    project: str = "rewardflow"
    run_name: str | None = None
    table_rows: int = Field(8, ge=0)
    progress_bar: bool = True
    # False: the console shows start-up phases, the progress bar, errors and the summary; the
    # actors' and the driver's other output goes to <output_dir>/logs/ (cluster/console.py).
    # True (`rewardflow train --verbose`): everything on the console too. Logs are written either way.
    verbose: bool = False


class ClusterConfig(Section):
    # None: RAY_ADDRESS if set, else a new local cluster.
    address: str | None = None
    # Logical CPUs of a new local cluster; None: max(cores, what the recipe asks for), since the
    # synchronous loop's phases take turns on the same cores.
    num_cpus: float | None = Field(None, gt=0)
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"


class RecipeConfig(Section):
    model: ModelConfig = ModelConfig()
    task: TaskConfig = TaskConfig()
    algo: SerializeAsAny[BaseModel]
    rewards: list[RewardTermConfig] = Field(min_length=1)
    rollout: RolloutConfig = RolloutConfig()
    reward: RewardRoleConfig = RewardRoleConfig()
    reference: ReferenceConfig = ReferenceConfig()
    learner: LearnerConfig = LearnerConfig()
    critic: LearnerConfig = LearnerConfig()  # only for algorithms that declare a critic (PPO)
    train: TrainConfig = TrainConfig()
    logging: LoggingConfig = LoggingConfig()
    cluster: ClusterConfig = ClusterConfig()

    @model_validator(mode="after")
    def _consistent(self):
        names = [t.name for t in self.rewards]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"rewards: {', '.join(dup)} listed twice; each term needs a distinct reward")
        self.reward.combine.check_terms(names)
        algorithm = ALGORITHMS[self.algo.name](self.algo)
        _check_term_kinds(self.rewards, self.algo.name, algorithm.needs().pairs)
        units = algorithm.train_rows(self.train.prompts_per_step) // algorithm.rows_per_unit
        roles = ["learner", "critic"] if algorithm.needs().critic else ["learner"]
        for role in roles:
            ranks = getattr(self, role).num_workers * self.algo.mini_batches
            if units < ranks:
                raise ValueError(f"train.prompts_per_step: {units} training units per step cannot feed "
                                 f"{getattr(self, role).num_workers} {role} ranks x {self.algo.mini_batches} mini-batches")
        if self.train.weight_sync == "shared_memory" and (why := shared_memory_blocker(self)):
            raise ValueError(f"train.weight_sync: shared_memory impossible: {why}")
        # Iterative self-rewarding: an iteration is the train.sync_every steps between syncs.
        iterations = getattr(self.algo, "iterations", None)
        if iterations is not None and self.train.steps != iterations * self.train.sync_every:
            raise ValueError(f"algo.iterations: {iterations} iterations of train.sync_every={self.train.sync_every} "
                             f"steps each need train.steps={iterations * self.train.sync_every} "
                             f"(got {self.train.steps})")
        if self.rollout.interrupt and self.train.max_staleness == 0:
            raise ValueError("rollout.interrupt: needs the asynchronous loop (train.max_staleness > 0); the "
                             "synchronous loop never loads weights while it generates")
        return self

    @field_validator("algo", mode="before")
    @classmethod
    def _build_algo(cls, data: Any):
        if isinstance(data, BaseModel):
            return data
        if not isinstance(data, dict) or "name" not in data:
            raise ValueError("algo needs a name, e.g. algo.name=grpo")
        if data["name"] not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {data['name']!r}; known: {ALGORITHMS.known()}")
        return ALGORITHMS[data["name"]].Config(**data)


def _check_term_kinds(terms: list[RewardTermConfig], algo: str, pairs: bool) -> None:
    """Reject terms the reward actors cannot run for this algorithm."""
    for i, t in enumerate(terms):
        if issubclass(REWARDS[t.name], PairwiseReward) and not pairs:
            raise ValueError(f"rewards.{i}.name: {t.name} compares two responses; algo.name={algo} trains on "
                             "single samples (only algorithms that train on pairs use pairwise rewards)")


def load_recipe(path: str | os.PathLike | None, overrides: list[str] = ()) -> RecipeConfig:
    """Read a YAML recipe, apply `key.sub=value` overrides, validate once. Raises ConfigError."""
    return load_config(RecipeConfig, path, overrides)


def shared_memory_blocker(cfg: RecipeConfig) -> str | None:
    """Why the recipe cannot use `SharedMemorySync` (None: it can, if the roles share a node)."""
    if cfg.train.max_staleness > 0:
        return "the asynchronous loop (train.max_staleness > 0) trains while rollout actors reload"
    if cfg.learner.zero_stage != 0:
        return "ZeRO stages 1-3 keep the parameters in their own buffers (learner.zero_stage must be 0)"
    if cfg.model.dtype != "float32":
        return "DeepSpeed's bf16/fp16 optimisers keep the parameters in their own buffers (model.dtype must be float32)"
    if cfg.learner.num_gpus or cfg.rollout.num_gpus:
        return "GPU parameters are not in host memory"
    return None


def dump_recipe(cfg: RecipeConfig) -> dict:
    """Plain dict of the validated recipe (for summary.json and wandb)."""
    return cfg.model_dump(mode="json")
