"""`ray job submit -- rewardflow train ...` against a head started with `ray start --head`."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster.test_e2e import tiny_overrides

pytestmark = pytest.mark.cluster
BIN = Path(sys.executable).parent


def _node_of_resource(gcs: str, env: dict) -> dict[str, str]:
    """custom resource name -> id of the (alive) node that has it, asked from a fresh driver."""
    code = ("import json, ray; ray.init(address=%r, log_to_driver=False); "
            "print(json.dumps({r: n['NodeID'] for n in ray.nodes() if n['Alive'] for r in n['Resources']}))" % gcs)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_ray_job_submit_runs_a_training_job(ray_head, tiny_model_path, tmp_path):
    """The job also trains on a user prompt file (JSONL), so that loader runs on the real stack."""
    address, env, _ = ray_head
    out = tmp_path / "job"
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)})
                                 for i in range(12)))
    cmd = [str(BIN / "ray"), "job", "submit", f"--address={address}", "--",
           "rewardflow", "train", str(Path("recipes/grpo_arith.yaml").resolve()),
           *tiny_overrides(tiny_model_path, out), "train.steps=1", "train.save_final=false",
           "task.kind=file", f"task.file={{path: {prompts}, prompt_column: question, eval_size: 4}}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout.lower()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 1
    assert summary["ray_address"] not in ("local", None)
    assert summary["recipe"]["task"]["file"]["path"] == str(prompts)
    assert summary["final_metrics"]["rollout/response_len"] > 0


def test_rewardflow_submit_follows_the_job_to_success(ray_head, tiny_model_path, tmp_path):
    address, env, _ = ray_head
    out = tmp_path / "submitted"
    cmd = [str(BIN / "rewardflow"), "submit", "recipes/grpo_arith.yaml", "--address", address,
           *tiny_overrides(tiny_model_path, out), "train.steps=1", "train.save_final=false"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1].endswith("SUCCEEDED")
    assert json.loads((out / "summary.json").read_text())["steps"] == 1



def test_submit_ships_a_recipe_and_prompt_file_that_exist_only_on_the_client(ray_head, tiny_model_path, tmp_path):
    """The recipe and its prompt file live in a client-side directory outside the checkout, named by
    absolute paths, and are deleted once the job is submitted: the job trains on the copies that
    travelled with its working directory."""
    address, env, _ = ray_head
    client, out = tmp_path / "client", tmp_path / "shipped"
    client.mkdir()
    recipe = client / "my_recipe.yaml"
    recipe.write_text(Path("recipes/grpo_arith.yaml").read_text())
    prompts = client / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"question": f"Client-only: what is {i} + {i}?", "answer": str(2 * i)})
                                 for i in range(12)))
    proc = _rewardflow("submit", str(recipe), "--address", address, "--no-wait",
                       *tiny_overrides(tiny_model_path, out), "train.steps=1", "train.save_final=false",
                       "task.kind=file", f"task.file={{path: {prompts}, prompt_column: question, eval_size: 4}}", env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not Path(".rewardflow_submit").exists()  # the staging directory is gone once uploaded
    job_id = proc.stdout.strip().splitlines()[-1].split()[2]
    recipe.unlink()
    prompts.unlink()
    followed = _rewardflow("submit", "--follow", job_id, "--address", address, env=env)
    assert followed.stdout.strip().splitlines()[-1] == f"rewardflow: job {job_id} SUCCEEDED", \
        followed.stdout[-3000:] + followed.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 1 and summary["ray_address"] not in ("local", None)
    task = summary["recipe"]["task"]
    assert task["kind"] == "file" and task["file"]["path"].startswith(".rewardflow_submit/")
    assert task["file"]["path"].endswith("/prompts.jsonl")
    shown = [json.loads(line)["prompt"] for line in (out / "samples.jsonl").read_text().splitlines()]
    assert shown and all("Client-only: what is" in p for p in shown)

def test_roles_placed_on_distinct_nodes_of_a_multi_node_cluster(ray_head, tiny_model_path, tmp_path):
    """Per-role custom resources put rollout, learner and reward on three different nodes."""
    address, env, gcs = ray_head
    out = tmp_path / "multinode"
    cmd = [str(BIN / "ray"), "job", "submit", f"--address={address}", "--",
           "rewardflow", "train", str(Path("recipes/grpo_arith.yaml").resolve()),
           *tiny_overrides(tiny_model_path, out), "train.steps=1", "train.save_final=false",
           "rollout.resources={node_a: 1}", "learner.resources={node_b: 1}", "reference.resources={node_b: 1}",
           "reward.resources={head_node: 0.5}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    placement = json.loads((out / "summary.json").read_text())["placement"]
    nodes = _node_of_resource(gcs, env)
    assert placement["rollout"] == [nodes["node_a"]]
    assert placement["learner"] == [nodes["node_b"]]
    assert placement["reference"] == [nodes["node_b"]]
    assert placement["reward"] == [nodes["head_node"]]
    assert len({nodes["node_a"], nodes["node_b"], nodes["head_node"]}) == 3


def _rewardflow(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "rewardflow"), *args], env=env, capture_output=True, text=True, timeout=600)


def test_submit_stop_ends_a_running_job(ray_head, tiny_model_path, tmp_path):
    address, env, _ = ray_head
    proc = _rewardflow("submit", "recipes/grpo_arith.yaml", "--address", address, "--no-wait",
                       *tiny_overrides(tiny_model_path, tmp_path / "stopped"), "train.steps=50", env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    job_id = proc.stdout.strip().splitlines()[-1].split()[2]
    stopped = _rewardflow("submit", "--stop", job_id, "--address", address, env=env)
    assert stopped.returncode == 0 and stopped.stdout.strip() == f"rewardflow: job {job_id} stopping"
    for _ in range(60):
        status = _rewardflow("submit", "--status", job_id, "--address", address, env=env).stdout.strip()
        if status.endswith(("STOPPED", "FAILED", "SUCCEEDED")):
            break
        time.sleep(2)
    assert status == f"rewardflow: job {job_id} STOPPED"
