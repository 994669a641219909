"""`rewardflow submit`: run a recipe as a Ray job, and follow, query or stop a submitted job.

The recipe is validated here first; the job runs `rewardflow train` with the recipe's absolute
path and the overrides, so the recipe and the files it names must be readable on the cluster
(same image or a shared filesystem).
"""
from __future__ import annotations

import os
import shlex


def submit(recipe: str, overrides: list[str], address: str) -> str:
    """Submit the job; returns its id."""
    from ray.job_submission import JobSubmissionClient

    entry = shlex.join(["rewardflow", "train", os.path.abspath(recipe), *overrides])
    return JobSubmissionClient(address).submit_job(entrypoint=entry)


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
