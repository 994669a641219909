"""deploy/: the `ray up` YAMLs pass Ray's own offline checks (its JSON schema, then its config
preparation and `validate_config`), and broken copies fail them; the Slurm script's dry run
prints the cluster it would start, in order, and runs nothing."""
import copy
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

import click
import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from cluster.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
RAY_UP = {"local": ROOT / "deploy/ray-up/local.yaml", "aws": ROOT / "deploy/ray-up/aws.yaml"}
SBATCH = ROOT / "deploy/slurm/rewardflow.sbatch"
RECIPE = "recipes/grpo_arith.yaml"
# Resource name -> where the launcher YAML declares it: the local provider has one node type, so
# its start commands declare them; on AWS each node type's `resources` reach its `ray start`.
CUSTOM = {"learner_node": "head", "rollout_node": "worker"}
INVALID = (jsonschema.ValidationError, ValueError, click.ClickException)


def check_launcher_config(config: dict) -> dict:
    """What `ray up` checks before it touches a machine, offline: ray's JSON schema on the file as
    written, then Ray's preparation (provider defaults merged, node types filled in) and
    `validate_config` on the result. Raises one of INVALID."""
    schema = json.loads((resources.files("ray.autoscaler") / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _load(name: str) -> dict:
    return yaml.safe_load(RAY_UP[name].read_text())


def _commands(config: dict, *keys: str) -> list[str]:
    return [cmd for key in keys for cmd in config.get(key, [])]


@pytest.mark.parametrize("name", RAY_UP)
def test_launcher_yaml_passes_rays_checks(name):
    prepared = check_launcher_config(_load(name))
    assert prepared["provider"]["type"] == name
    assert "boto3" not in sys.modules  # the AWS checks make no cloud call


def misspelt_key(c):
    c["max_worker"] = c.pop("max_workers", 2)


def max_workers_text(c):
    c["max_workers"] = "two"


def no_head_ip(c):  # passes the schema: only Ray's preparation of a local config catches it
    del c["provider"]["head_ip"]


def head_type_missing(c):  # passes the schema: only `validate_config` catches it
    c["head_node_type"] = "gpu_head"


@pytest.mark.parametrize("name,breaks", [
    ("local", misspelt_key), ("local", max_workers_text), ("local", no_head_ip),
    ("aws", misspelt_key), ("aws", max_workers_text), ("aws", head_type_missing),
], ids=lambda x: getattr(x, "__name__", x))
def test_broken_launcher_yaml_fails_the_same_check(name, breaks):
    config = _load(name)
    breaks(config)
    with pytest.raises(INVALID):
        check_launcher_config(config)


@pytest.mark.parametrize("name", RAY_UP)
def test_nodes_declare_the_custom_resources_and_keep_the_dashboard_internal(name):
    config = _load(name)
    head = " ".join(config["head_start_ray_commands"])
    workers = " ".join(config["worker_start_ray_commands"])
    if name == "local":
        declared = {"head": head, "worker": workers}
        assert all(f'"{res}"' in declared[where] for res, where in CUSTOM.items())
    else:
        node_types = config["available_node_types"]
        worker_types = [t for t in node_types if t != config["head_node_type"]]
        for res, where in CUSTOM.items():
            assert [t for t in worker_types if res in node_types[t]["resources"]]
        assert "--resources" not in head + workers  # it would give every node type the same ones
    assert "--dashboard-host=127.0.0.1" in head
    everything = " ".join(_commands(config, "setup_commands", "head_setup_commands", "worker_setup_commands",
                                    "head_start_ray_commands", "worker_start_ray_commands"))
    assert "0.0.0.0" not in everything
    # The pinning overrides the file's comments show are valid recipe overrides.
    overrides = re.findall(r"'(\w+\.resources=\{\w+: 1\})'", RAY_UP[name].read_text())
    cfg = load_recipe(RECIPE, overrides)
    assert {next(iter(cfg.rollout.resources)), next(iter(cfg.learner.resources))} == set(CUSTOM)


def _make_dry_run(command: str, tmp_path: Path) -> str:
    """The commands `make` would run for the `make ...` part of a setup command (into a scratch
    VENV, nothing executed)."""
    part = next(p for p in command.split("&&") if " make " in f" {p} ")
    words = shlex.split(part)
    args = words[words.index("make") + 1:]
    out = subprocess.run(["make", "-n", "-C", str(ROOT), *args, f"VENV={tmp_path}/venv"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.skipif(not shutil.which("make"), reason="needs make")
@pytest.mark.parametrize("name", RAY_UP)
def test_nodes_install_through_the_makefile(name, tmp_path):
    config = _load(name)
    assert config["file_mounts"] == {"~/rewardflow": "."}
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    setup = _commands(config, "setup_commands")
    installs = [c for c in setup if "make venv" in c]
    assert len(installs) == 1
    extra = re.search(r"EXTRA=(\w+)", installs[0]).group(1)
    assert extra in extras
    assert f"-e '.[{extra}]'" in _make_dry_run(installs[0], tmp_path)
    for key in ("head_setup_commands", "worker_setup_commands"):  # `rewardflow setup` on every node
        assert any("bin/rewardflow setup" in _make_dry_run(c, tmp_path) for c in config[key] if "make" in c)
    # No dependency list of its own: the only other pip install is the autoscaler's boto3 on AWS.
    for cmd in _commands(config, "setup_commands", "head_setup_commands", "worker_setup_commands"):
        if "pip install" in cmd:
            assert name == "aws" and shlex.split(cmd)[-1].startswith("boto3")


# --- Slurm ---------------------------------------------------------------------------------

FAKES = ("srun", "ray", "scontrol", "rewardflow", "python", "timeout", "sleep", "hostname")


def _sbatch(tmp_path: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """The script under bash, with every command it could run replaced by one that leaves a mark."""
    bin_dir, marker = tmp_path / "bin", tmp_path / "executed"
    bin_dir.mkdir(exist_ok=True)
    for name in FAKES:
        fake = bin_dir / name
        fake.write_text(f'#!/bin/sh\necho "{name} $*" >> {shlex.quote(str(marker))}\n')
        fake.chmod(0o755)
    base = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run([shutil.which("bash"), str(SBATCH), *args], cwd=ROOT, env={**base, **env},
                          capture_output=True, text=True, timeout=60)


OVERRIDES = ["train.steps=2", "rollout.resources={rollout_node: 1}", "train.output_dir=/shared/runs/it's"]


@pytest.mark.parametrize("how", ["DRY_RUN=1", "--dry-run"])
def test_slurm_dry_run_prints_head_workers_then_training(how, tmp_path):
    env = {"SLURM_JOB_NODELIST": "n1,n2,n3", "DRY_RUN": "1"} if how == "DRY_RUN=1" else {"SLURM_JOB_NODELIST": "n1,n2,n3"}
    flag = [how] if how == "--dry-run" else []
    proc = _sbatch(tmp_path, [*flag, RECIPE, *OVERRIDES], env)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "executed").exists(), (tmp_path / "executed").read_text()
    lines = [shlex.split(line) for line in proc.stdout.splitlines()]
    starts = [(i, w) for i, w in enumerate(lines) if w[:1] == ["srun"] and "ray" in w]
    assert [w[w.index("-w") + 1] for _, w in starts] == ["n1", "n2", "n3"]
    head, workers = starts[0][1], [w for _, w in starts[1:]]
    assert head[head.index("ray"):head.index("ray") + 3] == ["ray", "start", "--head"]
    assert '--resources={"learner_node": 100}' in head and "--dashboard-host=127.0.0.1" in head
    for worker in workers:
        assert worker[worker.index("ray"):worker.index("ray") + 3] == ["ray", "start", "--address=HEAD_IP:6379"]
        assert '--resources={"rollout_node": 100}' in worker
        assert worker[-2:] == ["--block", "&"]
    train = lines[-1]
    assert train == ["env", "RAY_ADDRESS=HEAD_IP:6379", "rewardflow", "train", RECIPE, *OVERRIDES]
    assert starts[-1][0] < len(lines) - 1


@pytest.mark.parametrize("args", [[], ["--dry-run"]])
def test_slurm_without_a_recipe_prints_usage_and_exits_2(args, tmp_path):
    proc = _sbatch(tmp_path, args, {"SLURM_JOB_NODELIST": "n1,n2", "DRY_RUN": "1"})
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("usage: ")
    assert proc.stdout == ""
    assert not (tmp_path / "executed").exists()


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck not installed")
def test_slurm_script_is_shellcheck_clean():
    proc = subprocess.run(["shellcheck", str(SBATCH)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout
