"""The loopback multi-node cluster the cluster tests share: `ray start` head + two worker nodes."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


WORKER_NODES = ("node_a", "node_b")


@pytest.fixture(scope="module")
def ray_head():
    """A head and two worker nodes on loopback, each worker tagged with a custom resource."""
    port, dash = _free_port(), _free_port()
    # A loopback-only test cluster: token auth off for nodes and clients alike, whatever an earlier
    # in-process ray.init left in this process's environment.
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "WANDB_MODE": "disabled",
           "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    ray = str(BIN / "ray")
    subprocess.run([ray, "start", "--head", f"--port={port}", f"--dashboard-port={dash}",
                    "--dashboard-host=127.0.0.1", "--num-cpus=3", "--resources={\"head_node\": 1}",
                    "--include-dashboard=true", "--disable-usage-stats"],
                   check=True, env=env, capture_output=True, timeout=180)
    try:
        for name in WORKER_NODES:
            subprocess.run([ray, "start", f"--address=127.0.0.1:{port}", "--num-cpus=2",
                            f"--resources={{\"{name}\": 4}}", "--disable-usage-stats"],
                           check=True, env=env, capture_output=True, timeout=180)
        yield f"http://127.0.0.1:{dash}", env, f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)


