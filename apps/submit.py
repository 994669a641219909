"""`rewardflow submit`: run a recipe as a Ray job, and follow, query or stop a submitted job.

The job takes the project with it: the current directory is the job's Ray `working_dir` (less
`EXCLUDES` and what its .gitignore / .rayignore files leave out), so the cluster runs this
checkout's code. The recipe, with the overrides applied, travels as one YAML file under
`.rewardflow_submit/<id>/`, and so does every file it names that exists here (`task.file.path`,
`task.file.eval_path`, a reward's ratings or preference file, a judge template): a file inside
the directory that the upload keeps is named by its relative path, any other is copied into
`.rewardflow_submit/<id>/` and named there. That directory is removed once the upload is done.
Directories (`model.path`, `train.resume`) are not copied, and those named by a relative path,
like a relative `train.output_dir`, are given their absolute path here: the job must reach them
at that path (same image or a shared filesystem).
"""
from __future__ import annotations

import contextlib
import functools
import os
import shlex
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

STAGE = ".rewardflow_submit"
# gitignore patterns, relative to the working directory ("/runs": only the top-level runs).
EXCLUDES = [".venv", "venv", ".git", "__pycache__", ".cache", ".pytest_cache", ".ruff_cache", ".mypy_cache",
            ".hypothesis", "*.egg-info", "/runs", "/wandb", "/outputs"]
PATH_KEYS = ("path", "template", "resume")  # and every key ending in "_path"
RECIPE_NAME = "recipe.yaml"


def submit(recipe: str, overrides: list[str], address: str, output_dir: str) -> str:
    """Upload the working directory with the staged recipe and files, submit the job; its id.
    `output_dir`: the validated recipe's `train.output_dir`."""
    from ray.job_submission import JobSubmissionClient

    root = Path.cwd().resolve()
    staged_recipe, tree, copies = plan_upload(recipe, overrides, root, output_dir)
    try:
        write_stage(root, staged_recipe, tree, copies)
        entry = shlex.join(["rewardflow", "train", staged_recipe])
        runtime_env = {"working_dir": str(root), "excludes": EXCLUDES}
        return JobSubmissionClient(address).submit_job(entrypoint=entry, runtime_env=runtime_env)
    finally:
        shutil.rmtree((root / staged_recipe).parent, ignore_errors=True)
        with contextlib.suppress(OSError):
            (root / STAGE).rmdir()  # unless another submit is staging there


def plan_upload(recipe: str, overrides: list[str], root: Path, output_dir: str) -> tuple[str, dict, dict[Path, str]]:
    """The staged recipe's path (under a fresh `.rewardflow_submit/<id>/`), its tree as the job
    reads it, and the files to copy there; ConfigError if the upload would leave one out."""
    stage = PurePosixPath(STAGE, uuid.uuid4().hex[:8])
    travels = upload_filter(root)
    tree, copies = ship_paths(merged_recipe(recipe, overrides), root, stage, travels)
    if note := pin_output_dir(tree, output_dir):
        print(f"rewardflow: {note}", file=sys.stderr, flush=True)
    staged_recipe = str(stage / RECIPE_NAME)
    check_uploaded([staged_recipe, *copies.values()], travels)
    return staged_recipe, tree, copies


def merged_recipe(recipe: str, overrides: list[str]) -> dict:
    """The recipe's YAML tree with the overrides applied (as `load_recipe` reads it)."""
    from core.config import load_yaml, parse_overrides, set_dotted

    tree = load_yaml(recipe)
    for key, value in parse_overrides(list(overrides)):
        set_dotted(tree, key, value)
    return tree


def path_like(key: Any, value: str) -> bool:
    """A value under a path-like key (`path`, `*_path`, `template`, `resume`), or one that looks like a
    path anywhere (it has a "/" or starts with "~")."""
    return (isinstance(key, str) and (key in PATH_KEYS or key.endswith("_path"))) or "/" in value \
        or value.startswith("~")


def names_a_file(key: Any, value: str) -> bool:
    """A path-like string that names an existing file here."""
    return path_like(key, value) and os.path.isfile(os.path.expanduser(value))


def names_a_relative_dir(key: Any, value: str) -> bool:
    """A path-like string that names an existing directory here by a relative path."""
    return path_like(key, value) and not os.path.isabs(os.path.expanduser(value)) and os.path.isdir(value)


def ship_paths(tree: Any, root: Path, stage: PurePosixPath,
               travels: Callable[[str], bool]) -> tuple[Any, dict[Path, str]]:
    """`tree` with each file it names (`names_a_file`) renamed as the job sees it, relative to
    the working directory `root`, and each directory named by a relative path made absolute (the
    upload may leave out its contents: weights, `runs/`); and the files to copy, source -> path
    under `stage`."""
    copies: dict[Path, str] = {}

    def visit(node: Any, key: Any) -> Any:
        if isinstance(node, dict):
            return {k: visit(v, k) for k, v in node.items()}
        if isinstance(node, list):
            return [visit(v, key) for v in node]
        if isinstance(node, str) and names_a_file(key, node):
            return shipped_path(Path(node).expanduser().resolve(), root, stage, travels, copies)
        if isinstance(node, str) and names_a_relative_dir(key, node):
            return str(Path(node).resolve())
        return node

    return visit(tree, None), copies


def shipped_path(src: Path, root: Path, stage: PurePosixPath, travels: Callable[[str], bool],
                 copies: dict[Path, str]) -> str:
    """`src` as the job names it: its relative path when the upload takes it along, else a
    copy's path under `stage` (recorded in `copies`; one copy per file, names kept distinct)."""
    if src in copies:
        return copies[src]
    if src.is_relative_to(root) and travels(rel := src.relative_to(root).as_posix()):
        return rel
    taken = {*copies.values(), str(stage / RECIPE_NAME)}
    name, n = src.name, 2
    while str(stage / name) in taken:
        name, n = f"{n}-{src.name}", n + 1
    copies[src] = str(stage / name)
    return copies[src]


def upload_filter(root: Path, excludes: list[str] = EXCLUDES) -> Callable[[str], bool]:
    """Whether a path relative to `root` goes with the working directory: Ray's upload skips
    what `excludes`, or a .gitignore / .rayignore file of `root` or a directory on the way,
    matches (each directory on the way and the path itself, as Ray walks the tree)."""
    from ray._private.thirdparty.pathspec import PathSpec

    names = [".rayignore"] + ([] if os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE") == "1" else [".gitignore"])

    @functools.cache
    def specs_at(parts: tuple[str, ...]) -> list:
        found = [root.joinpath(*parts, name) for name in names]
        specs = [PathSpec.from_lines("gitwildmatch", f.read_text().splitlines()) for f in found if f.is_file()]
        return specs + ([PathSpec.from_lines("gitwildmatch", excludes)] if not parts else [])

    def travels(rel: str) -> bool:
        parts = PurePosixPath(rel).parts
        return not any(spec.match_file("/".join(parts[d:i]))
                       for i in range(1, len(parts) + 1) for d in range(i) for spec in specs_at(parts[:d]))

    return travels


def check_uploaded(paths: list[str], travels: Callable[[str], bool]) -> None:
    """ConfigError when the upload would leave out a staged file (a .gitignore pattern such as
    `*.jsonl`)."""
    from core.config import ConfigError

    left = [p for p in paths if not travels(p)]
    if left:
        raise ConfigError(f"submit: the upload would leave out {', '.join(left)} (.gitignore or .rayignore); "
                          f"add the line '!{STAGE}/**' at the end of .gitignore")


def write_stage(root: Path, recipe: str, tree: dict, copies: dict[Path, str]) -> None:
    """The merged recipe and the copied files, under `root`."""
    import yaml

    (root / recipe).parent.mkdir(parents=True)
    for src, dest in copies.items():
        shutil.copy2(src, root / dest)
    (root / recipe).write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")


def pin_output_dir(tree: dict, output_dir: str) -> str | None:
    """A relative `train.output_dir` (the recipe's or the default) set to its absolute path here,
    since the job's own directory is a temporary copy; the note that says so (None if absolute)."""
    if os.path.isabs(os.path.expanduser(output_dir)):
        return None
    tree.setdefault("train", {})["output_dir"] = absolute = str(Path(output_dir).resolve())
    return f"train.output_dir={output_dir} is relative: the job writes to {absolute} on the cluster"


def follow(address: str, job_id: str) -> int:
    """Print the job's logs until it ends; 0 if it succeeded."""
    import asyncio

    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(address)

    async def tail():
        async for lines in client.tail_job_logs(job_id):
            print(lines, end="", flush=True)

    asyncio.run(tail())
    status = client.get_job_status(job_id)
    print(f"rewardflow: job {job_id} {status.value}")
    return 0 if status == JobStatus.SUCCEEDED else 1


def status(address: str, job_id: str) -> int:
    from ray.job_submission import JobSubmissionClient

    print(f"rewardflow: job {job_id} {JobSubmissionClient(address).get_job_status(job_id).value}")
    return 0


def stop(address: str, job_id: str) -> int:
    from ray.job_submission import JobSubmissionClient

    stopped = JobSubmissionClient(address).stop_job(job_id)
    print(f"rewardflow: job {job_id} {'stopping' if stopped else 'was not running'}")
    return 0
