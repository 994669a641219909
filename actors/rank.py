"""What every data-parallel DeepSpeed rank actor shares: its place in the process group."""
from __future__ import annotations

import socket

import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class RankActor:
    """One rank of a process group (the policy learner, the critic, the reward-model trainer).
    Rank 0's `address` is where every rank's `setup` joins the group."""

    def __init__(self, rank: int, world_size: int, num_threads: int | None = None):
        if num_threads:
            torch.set_num_threads(num_threads)
        self.rank, self.world_size = rank, world_size
        self.busy_s = 0.0  # seconds spent in this role's work (benchmarks read it)

    def address(self) -> tuple[str, int]:
        """Where rank 0 listens for the process group."""
        import ray

        return ray.util.get_node_ip_address(), free_port()

    def join(self, master_addr: str, master_port: int, seed: int) -> None:
        """Seed torch (the same fresh heads on every rank) and join the process group."""
        from learners.engine import init_distributed

        torch.manual_seed(seed)
        init_distributed(self.rank, self.world_size, master_addr, master_port)
