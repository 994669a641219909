"""Benchmark: `rewardflow serve-reward math_correct` under N concurrent clients on 127.0.0.1.

    .venv/bin/python bench/reward_server.py [--clients 1 4 16] [--batch 8] [--seconds 8] [--no-write]

Starts the server as a subprocess on a free loopback port, then for each N runs N asyncio + httpx
clients, each sending `POST /v1/score` batches back to back until `--seconds` or `--max-requests`
runs out, and reports requests/s, samples/s and p50/p99 request latency. The baseline, measured in
the same run, is in-process scoring of the same batches through the same `IsolatedRunner` path the
server uses (no HTTP). The server's values are checked against the in-process values.
Appends a section to docs/benchmarks.md unless --no-write.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rewards.base import Sample  # noqa: E402
from rewards.isolation import IsolatedRunner  # noqa: E402
from rewards.math_correct import MathCorrect, MathCorrectConfig  # noqa: E402
from rewards.remote import TOKEN_ENV  # noqa: E402

HOST = "127.0.0.1"


@dataclass
class Run:
    label: str
    requests: int
    samples: int
    wall_s: float
    latencies_s: list[float]

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.wall_s

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.wall_s

    def latency_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q)) * 1e3


def make_batches(n_batches: int, batch: int, seed: int = 0) -> list[list[Sample]]:
    """Arithmetic answers like a rollout's: about half right, some with extra words."""
    rng = random.Random(seed)
    out = []
    for _ in range(n_batches):
        rows = []
        for _ in range(batch):
            a, b = rng.randint(1, 99), rng.randint(1, 99)
            given = a + b if rng.random() < 0.5 else a + b + rng.randint(1, 9)
            response = rng.choice([f"{given}", f"{a} + {b} = {given}", f"The answer is \\boxed{{{given}}}."])
            rows.append(Sample(f"What is {a} + {b}?", response, str(a + b), len(response) // 3))
        out.append(rows)
    return out


def in_process(batches: list[list[Sample]], seconds: float, max_requests: int) -> Run:
    reward, runner = MathCorrect(MathCorrectConfig()), IsolatedRunner(timeout_s=10)
    latencies = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds and len(latencies) < max_requests:
        t0 = time.perf_counter()
        for s in batches[len(latencies) % len(batches)]:
            runner.call(reward, s)
        latencies.append(time.perf_counter() - t0)
    n = len(latencies)
    return Run("in-process", n, n * len(batches[0]), time.perf_counter() - start, latencies)


def local_values(batches: list[list[Sample]]) -> list[list[float]]:
    reward, runner = MathCorrect(MathCorrectConfig()), IsolatedRunner(timeout_s=10)
    return [[runner.call(reward, s)[0] for s in batch] for batch in batches]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(port: int, token: str, max_batch: int) -> subprocess.Popen:
    exe = Path(sys.executable).parent / "rewardflow"
    cmd = [str(exe), "serve-reward", "math_correct", "--host", HOST, "--port", str(port), f"max_batch={max_batch}"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, TOKEN_ENV: token})


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 120) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return time.perf_counter() - start
        except httpx.TransportError:
            time.sleep(0.2)
    raise TimeoutError(f"server not healthy after {timeout_s}s")


def encode(batch: list[Sample]) -> bytes:
    return json.dumps({"samples": [asdict(s) for s in batch]}).encode()


async def client(http: httpx.AsyncClient, bodies: list[bytes], deadline: float, budget: list[int],
                 latencies: list[float]) -> None:
    i = 0
    while time.perf_counter() < deadline and budget[0] > 0:
        budget[0] -= 1
        t0 = time.perf_counter()
        resp = await http.post("/v1/score", content=bodies[i % len(bodies)])
        resp.raise_for_status()
        latencies.append(time.perf_counter() - t0)
        i += 1


async def load(url: str, token: str, bodies: list[bytes], clients: int, batch: int,
               seconds: float, max_requests: int) -> Run:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as http:
        await asyncio.gather(*(http.post("/v1/score", content=bodies[0]) for _ in range(clients)))
        latencies: list[float] = []
        budget = [max_requests]
        start = time.perf_counter()
        deadline = start + seconds
        await asyncio.gather(*(client(http, bodies[k:] + bodies[:k], deadline, budget, latencies)
                               for k in range(clients)))
        wall = time.perf_counter() - start
    n = len(latencies)
    return Run(f"N={clients}", n, n * batch, wall, latencies)


def remote_values(url: str, token: str, bodies: list[bytes]) -> list[list[float]]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        return [http.post("/v1/score", content=b).json()["values"] for b in bodies]


def machine() -> str:
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.machine()} CPU, {os.cpu_count()} cores, {mem_gib:.0f} GiB, no GPU"


def row(run: Run, baseline: Run, single: Run | None) -> str:
    vs_single = f"{run.samples_per_s / single.samples_per_s:.2f}x" if single else "-"
    return (f"| {run.label} | {run.requests} | {run.requests_per_s:,.1f} | {run.samples_per_s:,.1f} | "
            f"{run.latency_ms(50):.1f} | {run.latency_ms(99):.1f} | "
            f"{run.samples_per_s / baseline.samples_per_s:.2f}x | {vs_single} |")


def report(argv: list[str], args, baseline: Run, runs: list[Run], startup_s: float, same: bool) -> str:
    single = next((r for r in runs if r.label == "N=1"), None)
    rows = "\n".join([row(baseline, baseline, None), *(row(r, baseline, single) for r in runs)])
    cmd = " ".join(["python bench/reward_server.py", *argv])
    return f"""
## Reward server on loopback, {args.batch} samples per request ({datetime.date.today().isoformat()})

- command: `{cmd}`
- machine: {machine()}; server and clients share it
- server: `rewardflow serve-reward math_correct --host 127.0.0.1` (one uvicorn worker, bearer token,
  samples scored one at a time through `IsolatedRunner`); start-up to healthy {startup_s:.1f} s
- clients: N asyncio tasks over one httpx.AsyncClient (N keep-alive connections), each sending its
  next batch as soon as the last one is answered, for {args.seconds:g} s or {args.max_requests} requests
- baseline: the same batches scored in-process through the same `IsolatedRunner` path, same run
- the server's values equal the in-process values for the same batches: {"yes" if same else "NO"}

| clients | requests | requests/s | samples/s | p50 ms | p99 ms | samples/s vs in-process | samples/s vs N=1 |
|---|---|---|---|---|---|---|---|
{rows}
"""


def run_server_loads(args, batches, port: int) -> tuple[list[Run], float, list[list[float]]]:
    token, url = secrets.token_urlsafe(16), f"http://{HOST}:{port}"
    bodies = [encode(b) for b in batches]
    proc = start_server(port, token, args.batch)
    try:
        startup_s = wait_healthy(url, proc)
        values = remote_values(url, token, bodies)
        runs = [asyncio.run(load(url, token, bodies, n, args.batch, args.seconds, args.max_requests))
                for n in args.clients]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return runs, startup_s, values


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--batch", type=int, default=8, help="samples per request")
    p.add_argument("--seconds", type=float, default=8.0, help="time budget per client count")
    p.add_argument("--max-requests", type=int, default=5000, help="request budget per client count")
    p.add_argument("--no-write", action="store_true", help="print only; do not append to docs/benchmarks.md")
    return p.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    batches = make_batches(64, args.batch)
    baseline = in_process(batches, args.seconds, args.max_requests)
    runs, startup_s, served_values = run_server_loads(args, batches, free_port())
    text = report(argv, args, baseline, runs, startup_s, served_values == local_values(batches))
    if not args.no_write:
        with open(ROOT / "docs/benchmarks.md", "a") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
