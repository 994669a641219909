"""`rewardflow submit` ships the project: which files travel, how the recipe names them, what is
staged and uploaded (apps/submit.py), without a cluster."""
import json
from pathlib import Path, PurePosixPath
from typing import ClassVar

import pytest
import yaml

from apps import submit
from cluster.recipe import load_recipe
from core.config import ConfigError
from core.data import load_rows

STAGE = PurePosixPath(".rewardflow_submit/abc")


@pytest.fixture
def project(tmp_path):
    """A working directory with a .gitignore, and a client-side directory outside it."""
    root, outside = tmp_path / "project", tmp_path / "client"
    (root / "data").mkdir(parents=True)
    (root / "runs" / "old").mkdir(parents=True)
    (root / ".gitignore").write_text("secret/\n*.parquet\n")
    (root / "data" / "prompts.jsonl").write_text("{}\n")
    (root / "runs" / "old" / "prompts.jsonl").write_text("{}\n")
    outside.mkdir()
    (outside / "prompts.jsonl").write_text("{}\n")
    (outside / "sub").mkdir()
    (outside / "sub" / "prompts.jsonl").write_text("{}\n")
    return root, outside


def test_upload_filter_follows_excludes_gitignore_and_rayignore(project, monkeypatch):
    root, _ = project
    (root / "deploy").mkdir()
    (root / "deploy" / ".gitignore").write_text("local.yaml\n")
    (root / ".rayignore").write_text("bench/\n")
    travels = submit.upload_filter(root)
    assert travels("data/prompts.jsonl") and travels("cluster/runs/x.py") and travels("deploy/ray.yaml")
    for left_out in (".venv/lib/x.py", "runs/old/prompts.jsonl", "apps/__pycache__/cli.pyc", ".git/HEAD",
                     "secret/key", "data/big.parquet", "deploy/local.yaml", "bench/run.py", "x.egg-info/PKG"):
        assert not travels(left_out), left_out
    monkeypatch.setenv("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "1")  # Ray's switch: .gitignore files not read
    travels = submit.upload_filter(root)
    assert travels("secret/key") and not travels("bench/run.py") and not travels("runs/old/prompts.jsonl")


def test_files_outside_the_upload_are_staged_and_the_recipe_renamed(project):
    root, outside = project
    tree = {
        "model": {"path": str(outside)},  # a directory: left as it is
        "task": {"kind": "file", "file": {"path": str(outside / "prompts.jsonl"), "prompt_column": "question",
                                          "eval_path": str(root / "data" / "prompts.jsonl")}},
        "rewards": [{"name": "human_rating", "args": {"path": str(outside / "sub" / "prompts.jsonl")}},
                    {"name": "x", "args": {"ratings": str(outside / "prompts.jsonl")}},  # the same file again
                    {"name": "y", "args": {"template": str(root / "runs" / "old" / "prompts.jsonl")}}],
        "train": {"output_dir": str(outside / "out"), "resume": "no/such/file.jsonl", "steps": 2},
    }
    shipped, copies = submit.ship_paths(tree, root, STAGE, submit.upload_filter(root))
    assert shipped["model"]["path"] == str(outside)
    assert shipped["task"]["file"] == {"path": f"{STAGE}/prompts.jsonl", "prompt_column": "question",
                                       "eval_path": "data/prompts.jsonl"}  # travels with the directory
    assert [r["args"] for r in shipped["rewards"]] == [
        {"path": f"{STAGE}/2-prompts.jsonl"}, {"ratings": f"{STAGE}/prompts.jsonl"},
        {"template": f"{STAGE}/3-prompts.jsonl"}]  # runs/ is left out of the upload: copied
    assert shipped["train"] == tree["train"]
    assert copies == {outside / "prompts.jsonl": f"{STAGE}/prompts.jsonl",
                      outside / "sub" / "prompts.jsonl": f"{STAGE}/2-prompts.jsonl",
                      root / "runs" / "old" / "prompts.jsonl": f"{STAGE}/3-prompts.jsonl"}


def test_directories_named_by_a_relative_path_become_absolute(project, monkeypatch):
    """The upload may leave a directory's contents out (weights, runs/): the job reaches it by its
    absolute path instead."""
    root, outside = project
    monkeypatch.chdir(root)
    tree = {"model": {"path": "runs/old"}, "train": {"resume": "data", "output_dir": str(outside)},
            "task": {"instruction": "data"}}  # not path-like: left alone
    shipped, copies = submit.ship_paths(tree, root, STAGE, submit.upload_filter(root))
    assert shipped == {"model": {"path": str(root / "runs" / "old")}, "train": {"resume": str(root / "data"),
                       "output_dir": str(outside)}, "task": {"instruction": "data"}}
    assert copies == {}


def test_only_path_like_values_are_taken_for_files(project, monkeypatch):
    root, outside = project
    monkeypatch.chdir(outside)
    (outside / "question").write_text("not a prompt file")
    (outside / "recipe.yaml").write_text("a file named like the staged recipe")
    tree = {"task": {"file": {"path": "prompts.jsonl", "prompt_column": "question"}},
            "algo": {"judge": {"template": "recipe.yaml"}}}
    shipped, _ = submit.ship_paths(tree, root, STAGE, submit.upload_filter(root))
    assert shipped == {"task": {"file": {"path": f"{STAGE}/prompts.jsonl", "prompt_column": "question"}},
                       "algo": {"judge": {"template": f"{STAGE}/2-recipe.yaml"}}}
    assert submit.names_a_file("whatever", str(outside / "question"))  # a "/" makes it a path
    assert not submit.names_a_file("path", str(outside))  # a directory


def test_a_staged_file_the_gitignore_would_drop_is_an_error(project):
    root, _ = project
    travels = submit.upload_filter(root)
    submit.check_uploaded([f"{STAGE}/recipe.yaml", f"{STAGE}/prompts.jsonl"], travels)
    (root / ".gitignore").write_text("*.jsonl\n")
    with pytest.raises(ConfigError, match=r"leave out \.rewardflow_submit/abc/prompts\.jsonl .*'!\.rewardflow_submit/\*\*'"):
        submit.check_uploaded([f"{STAGE}/recipe.yaml", f"{STAGE}/prompts.jsonl"], submit.upload_filter(root))
    (root / ".gitignore").write_text("*.jsonl\n!.rewardflow_submit/**\n")
    submit.check_uploaded([f"{STAGE}/prompts.jsonl"], submit.upload_filter(root))


def _prompt_file(path: Path, n: int = 6) -> Path:
    path.write_text("\n".join(json.dumps({"question": f"Shipped {i} + {i}?", "answer": str(2 * i)})
                              for i in range(n)))
    return path


def test_staged_recipe_loads_in_the_working_directory(project, monkeypatch):
    """The merged recipe, written under the staging directory, validates as the job will read it
    there, and its prompt file is the staged copy."""
    root, outside = project
    recipe = outside / "mine.yaml"
    recipe.write_text(Path("recipes/grpo_arith.yaml").read_text())
    prompts = _prompt_file(outside / "prompts.jsonl")
    overrides = ["task.kind=file", f"task.file={{path: {prompts}, prompt_column: question, eval_size: 2}}",
                 "train.steps=3"]
    tree, copies = submit.ship_paths(submit.merged_recipe(str(recipe), overrides), root, STAGE,
                                     submit.upload_filter(root))
    submit.write_stage(root, f"{STAGE}/recipe.yaml", tree, copies)
    monkeypatch.chdir(root)
    cfg = load_recipe(f"{STAGE}/recipe.yaml")
    assert cfg.train.steps == 3 and cfg.task.file.path == f"{STAGE}/prompts.jsonl"
    assert cfg.rewards == load_recipe(str(recipe), overrides).rewards
    train, held_out = load_rows(cfg.task)
    assert [r.question for r in train + held_out] == [f"Shipped {i} + {i}?" for i in range(6)]


class FakeClient:
    """JobSubmissionClient stand-in: records what it is given and what the upload would see."""
    seen: ClassVar[dict] = {}

    def __init__(self, address):
        FakeClient.seen = {"address": address}

    def submit_job(self, entrypoint, runtime_env):
        root = Path(runtime_env["working_dir"])
        recipe = entrypoint.split()[-1]
        FakeClient.seen.update(entrypoint=entrypoint, runtime_env=runtime_env,
                               recipe=yaml.safe_load((root / recipe).read_text()),
                               staged=sorted(p.name for p in (root / recipe).parent.iterdir()))
        return "raysubmit_fake"


def test_submit_uploads_the_directory_with_the_staged_recipe_then_cleans_up(project, monkeypatch, capsys):
    import ray.job_submission

    root, outside = project
    prompts = _prompt_file(outside / "prompts.jsonl")
    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", FakeClient)
    monkeypatch.chdir(root)
    recipe = Path(__file__).parents[3] / "recipes" / "grpo_arith.yaml"
    job = submit.submit(str(recipe), ["task.kind=file", f"task.file.path={prompts}"], "http://head:8265",
                        "runs/grpo_arith")  # the recipe's train.output_dir, relative
    seen = FakeClient.seen
    assert job == "raysubmit_fake" and seen["address"] == "http://head:8265"
    assert seen["runtime_env"] == {"working_dir": str(root.resolve()), "excludes": submit.EXCLUDES}
    words = seen["entrypoint"].split()
    assert words[:2] == ["rewardflow", "train"] and words[2].startswith(".rewardflow_submit/")
    assert words[2].endswith("/recipe.yaml") and len(words) == 3
    assert seen["staged"] == ["prompts.jsonl", "recipe.yaml"]
    assert seen["recipe"]["task"]["file"]["path"] == str(PurePosixPath(words[2]).parent / "prompts.jsonl")
    assert seen["recipe"]["train"]["output_dir"] == str(root.resolve() / "runs" / "grpo_arith")
    assert "train.output_dir=runs/grpo_arith is relative" in capsys.readouterr().err
    assert not (root / ".rewardflow_submit").exists()


def test_a_relative_output_dir_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tree = {"train": {"steps": 2}}
    assert submit.pin_output_dir(tree, "/shared/runs/x") is None and tree == {"train": {"steps": 2}}
    note = submit.pin_output_dir(tree, "runs/x")
    assert tree == {"train": {"steps": 2, "output_dir": str(tmp_path / "runs" / "x")}}
    assert note == f"train.output_dir=runs/x is relative: the job writes to {tmp_path / 'runs' / 'x'} on the cluster"
    empty = {}
    submit.pin_output_dir(empty, "runs/grpo_arith")  # the schema's default: the recipe does not name it
    assert empty == {"train": {"output_dir": str(tmp_path / "runs" / "grpo_arith")}}
