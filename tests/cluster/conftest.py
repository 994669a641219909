"""The loopback multi-node cluster the cluster tests share: `ray start` head + two worker nodes.

The cluster is this fixture's own: its nodes live under a fresh temporary directory (under
RAY_TMPDIR when set), each node in its own `--temp-dir`, every port is a free one, and teardown
ends only the processes of that directory, so other Ray sessions on the machine are left alone
(`ray stop` would end them all)."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

BIN = Path(sys.executable).parent
# Loopback test clusters run without Ray's token authentication, the in-process local ones too: a
# process that once started a cluster with a token keeps demanding it, and then loses the actors
# it creates on a token-less cluster it attaches to later (test_collective_sync.py).
os.environ["RAY_AUTH_MODE"] = "disabled"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


WORKER_NODES = ("node_a", "node_b")


def _node_args(root: Path, name: str) -> list[str]:
    """Per node: its own temp dir (nodes sharing one would share `runtime_resources`, and each
    node's runtime-env agent deletes and unpacks a job's working_dir again there, under the
    feet of the job's driver) and its own dashboard agent port (the default, 52365, may be
    another session's)."""
    return [f"--temp-dir={root / name}", f"--dashboard-agent-listen-port={_free_port()}", "--disable-usage-stats"]


def stop_nodes(root: Path) -> None:
    """End every process whose command line names `root` (the nodes' Ray processes, their
    workers), with their children (job drivers, vLLM engines); not this process or its parents."""
    me = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.pid not in me and str(root) in " ".join(proc.info["cmdline"] or []):
                found.update({p.pid: p for p in (proc, *proc.children(recursive=True)) if p.pid not in me})
        except psutil.Error:
            continue
    for proc in found.values():
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(list(found.values()), timeout=15)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass


@pytest.fixture(scope="module")
def ray_head():
    """A head and two worker nodes on loopback, each worker tagged with a custom resource."""
    port, dash = _free_port(), _free_port()
    # A loopback-only test cluster: token auth off for nodes and clients alike, whatever an earlier
    # in-process ray.init left in this process's environment.
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "WANDB_MODE": "disabled",
           "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    if os.environ.get("RAY_TMPDIR"):
        os.makedirs(os.environ["RAY_TMPDIR"], exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="rf", dir=os.environ.get("RAY_TMPDIR")))  # short: socket paths
    ray = str(BIN / "ray")
    try:
        subprocess.run([ray, "start", "--head", f"--port={port}", f"--dashboard-port={dash}",
                        "--dashboard-host=127.0.0.1", "--num-cpus=3", "--resources={\"head_node\": 1}",
                        "--include-dashboard=true", f"--ray-client-server-port={_free_port()}",
                        *_node_args(root, "head")],
                       check=True, env=env, capture_output=True, timeout=180)
        for name in WORKER_NODES:
            subprocess.run([ray, "start", f"--address=127.0.0.1:{port}", "--num-cpus=2",
                            f"--resources={{\"{name}\": 4}}", *_node_args(root, name)],
                           check=True, env=env, capture_output=True, timeout=180)
        yield f"http://127.0.0.1:{dash}", env, f"127.0.0.1:{port}"
    finally:
        stop_nodes(root)
        shutil.rmtree(root, ignore_errors=True)
