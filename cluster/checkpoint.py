"""Run checkpoints: what a restarted loop needs to continue where the last one stopped.

    <output_dir>/checkpoints/step_<N>/
        state.json     the loop's state after N steps (cluster.controller.Controller.state) + recipe,
                       and the wandb run id, so that a resumed run continues the same wandb run
        learner/       DeepSpeed checkpoint of the policy: weights, optimiser, scheduler (every rank)
        critic/        the same for the value model, when the algorithm has one
        manifest.json  every other file's size and SHA-256, signed (HMAC-SHA256) with this user's key

A checkpoint is written under a temporary name and renamed when complete, so a crash while
saving never leaves a directory that looks resumable. The ranks write to one path: on several
nodes it must be a shared filesystem.

DeepSpeed loads its checkpoints with `torch.load(weights_only=False)` (DESIGN.md §8): a planted
file in a checkpoint is code run by every learner rank. So `train.resume` accepts only what a run
of this user wrote: `commit` signs the manifest with a key kept outside every run directory
(`<cache_dir>/checkpoint.key`, 32 random bytes, mode 0600, made once), and `resolve_resume`
checks the signature and every file's digest before Ray starts, without unpickling anything. A
checkpoint with a missing or forged manifest, or with a file added, removed or changed, is refused
with one line. Caveats: the driver signs and verifies, so the key lives on the driver's machine
(resuming from another machine needs the same key there) and the driver must see the ranks' files,
i.e. `output_dir` on a shared filesystem; the check is made once, before the ranks load, so it
does not stop someone who can write to `output_dir` while the resumed run starts.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import shutil
from pathlib import Path

from cluster.recipe import ConfigError, RecipeConfig, dump_recipe
from core.models import cache_dir

STATE = "state.json"
MANIFEST = "manifest.json"
KEY_FILE = "checkpoint.key"
KEY_BYTES = 32
# What Controller.restore reads from state.json, besides the recipe.
STATE_KEYS = ("step", "prompts_consumed", "samples_seen", "rewards", "eval_accuracy_before",
              "accuracy_curve", "wall_s")
# Settings a resumed run must share with the run it continues: they decide which prompts the
# remaining steps draw and what the saved optimiser state belongs to.
MUST_MATCH = ("model.path", "task", "algo.name", "train.seed", "train.prompts_per_step")


def checkpoint_root(cfg: RecipeConfig) -> Path:
    return Path(cfg.train.output_dir).resolve() / "checkpoints"


def complete_checkpoints(root: Path) -> list[Path]:
    """Finished step_N directories under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_")
             and p.name[5:].isdigit() and (p / STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def begin(root: Path, steps_done: int) -> Path:
    """An empty temporary directory for the checkpoint after `steps_done` steps."""
    tmp = root / f"step_{steps_done}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def commit(tmp: Path, state: dict, cfg: RecipeConfig) -> Path:
    """Write the state and the signed manifest, publish the checkpoint under its final name, drop
    the oldest beyond `train.keep_checkpoints`."""
    (tmp / STATE).write_text(json.dumps({**state, "recipe": dump_recipe(cfg)}, indent=2))
    write_manifest(tmp, checkpoint_key(create=True))
    final = tmp.with_name(tmp.name.removesuffix(".tmp"))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in complete_checkpoints(final.parent)[:-cfg.train.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    return final


# -- signing --------------------------------------------------------------------------------

def key_path() -> Path:
    return cache_dir() / KEY_FILE


def checkpoint_key(create: bool = False) -> bytes | None:
    """This user's checkpoint signing key; made (atomically, mode 0600) when absent and `create`,
    else None when absent. Raises ConfigError for a key other users can read or a damaged one."""
    path = key_path()
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_BYTES))
        try:
            os.link(tmp, path)  # never replaces a key another process made meanwhile
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    if not path.exists():
        return None
    if path.stat().st_mode & 0o077:
        raise ConfigError(f"checkpoint key {path} is accessible to other users; chmod 600 it")
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise ConfigError(f"checkpoint key {path} is damaged ({len(key)} bytes, expected {KEY_BYTES})")
    return key


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()  # streamed in chunks


def _files(ckpt: Path) -> dict[str, Path]:
    """Every entry under `ckpt` but the manifest, by POSIX path relative to it. Links and other
    non-regular entries are listed too, so that verification refuses them."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(ckpt):
        here = Path(dirpath)
        for name in filenames + [d for d in dirnames if (here / d).is_symlink()]:
            rel = (here / name).relative_to(ckpt).as_posix()
            if rel != MANIFEST:
                found[rel] = here / name
    return found


def _sign(key: bytes, files: dict) -> str:
    body = json.dumps(files, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def write_manifest(ckpt: Path, key: bytes) -> None:
    files = {rel: {"size": p.stat().st_size, "sha256": _sha256(p)} for rel, p in sorted(_files(ckpt).items())}
    (ckpt / MANIFEST).write_text(json.dumps({"files": files, "hmac": _sign(key, files)}, indent=1))


def verify_manifest(ckpt: Path) -> None:
    """Raises ConfigError naming the checkpoint, or its first offending file, unless every file
    under `ckpt` is one its signed manifest lists, with that size and digest."""
    why = "(not written by this run)"
    try:
        manifest = json.loads((ckpt / MANIFEST).read_text())
        files, signature = manifest["files"], manifest["hmac"]
    except FileNotFoundError:
        raise ConfigError(f"train.resume: {ckpt} has no {MANIFEST} {why}") from None
    except (OSError, ValueError, TypeError, KeyError):
        raise ConfigError(f"train.resume: {ckpt}/{MANIFEST} is not a checkpoint manifest {why}") from None
    key = checkpoint_key()
    if key is None:
        raise ConfigError(f"train.resume: {ckpt} cannot be checked: no checkpoint key at {key_path()} {why}")
    if not isinstance(signature, str) or not hmac.compare_digest(_sign(key, files).encode(), signature.encode()):
        raise ConfigError(f"train.resume: {ckpt}/{MANIFEST} is not signed with {key_path()} {why}")
    present = _files(ckpt)
    for rel in sorted(present.keys() | files.keys()):
        if rel not in files:
            raise ConfigError(f"train.resume: {ckpt}/{rel} is not in the checkpoint's manifest {why}")
        if rel not in present:
            raise ConfigError(f"train.resume: {ckpt}/{rel} is missing (listed in the checkpoint's manifest)")
        p = present[rel]
        if p.is_symlink() or not p.is_file() or p.stat().st_size != files[rel]["size"]:
            raise ConfigError(f"train.resume: {ckpt}/{rel} does not match the checkpoint's manifest {why}")
    for rel in sorted(files):  # sizes first: a changed size is found without reading gigabytes
        if _sha256(present[rel]) != files[rel]["sha256"]:
            raise ConfigError(f"train.resume: {ckpt}/{rel} does not match the checkpoint's manifest {why}")


# -- resuming -------------------------------------------------------------------------------

def _get(tree: dict, dotted: str):
    for key in dotted.split("."):
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


def read_state(ckpt: Path) -> dict:
    """state.json of a checkpoint, with every key a restart reads; ConfigError otherwise."""
    where = ckpt / STATE
    try:
        state = json.loads(where.read_text())
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ConfigError(f"train.resume: {where} is not JSON ({e})") from None
    if not isinstance(state, dict):
        raise ConfigError(f"train.resume: {where} is not a JSON object")
    missing = [k for k in (*STATE_KEYS, "recipe") if k not in state]
    if missing:
        raise ConfigError(f"train.resume: {where} lacks {', '.join(missing)}")
    if not isinstance(state["recipe"], dict) or type(state["step"]) is not int or state["step"] < 0:
        raise ConfigError(f"train.resume: {where} has a malformed step or recipe")
    if not isinstance(state.get("wandb_run_id"), (str, type(None))):
        raise ConfigError(f"train.resume: {where} has a malformed wandb_run_id")
    return state


def wandb_run_id(resume: tuple[Path, dict] | None) -> str | None:
    """The wandb run a resumed run continues (`resolve_resume`'s result); None for a new run or a
    checkpoint written before the id was kept."""
    return resume[1].get("wandb_run_id") if resume is not None else None


def resolve_resume(cfg: RecipeConfig) -> tuple[Path, dict] | None:
    """(checkpoint directory, its state) for `train.resume`, checked against its signed manifest
    and this recipe; None when not resuming. Raises ConfigError with one line naming what is wrong."""
    where = cfg.train.resume
    if where is None:
        return None
    if where == "latest":
        found = complete_checkpoints(checkpoint_root(cfg))
        if not found:
            raise ConfigError(f"train.resume=latest: no checkpoint in {checkpoint_root(cfg)}")
        path = found[-1]
    else:
        path = Path(where).resolve()
        if not (path / STATE).is_file():
            raise ConfigError(f"train.resume: {where} is not a checkpoint directory (no {STATE})")
    verify_manifest(path)
    state = read_state(path)
    ours = dump_recipe(cfg)
    for key in MUST_MATCH:
        theirs, mine = _get(state["recipe"], key), _get(ours, key)
        if theirs != mine:
            raise ConfigError(f"train.resume: the checkpoint was written with {key}={theirs!r}, this recipe has {mine!r}")
    if state["step"] >= cfg.train.steps:
        raise ConfigError(f"train.resume: the checkpoint is at step {state['step']}, "
                          f"train.steps={cfg.train.steps} leaves nothing to train")
    return path, state
