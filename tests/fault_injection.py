"""Fault injection for the real stack: SIGKILL (or SIGSTOP) the Ray actor processes of one
class, started by this process's Ray session, once a run has logged a given step; resize a role
through `rewardflow scale`. Used by tests/cluster/test_faults.py and bench/recovery.py."""
import json
import os
import signal
import threading
import time

import psutil


def steps_logged(out_dir) -> int:
    """The newest step in the run's metrics.jsonl (0 before the first)."""
    path = out_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [json.loads(line).get("step", 0) for line in path.read_text().splitlines() if line.strip()]
    return max(steps, default=0)


def actor_processes(cls_name: str) -> list[psutil.Process]:
    """The live worker processes of this test's Ray actors of class `cls_name` (their title is
    `ray::<cls>...`): children of the raylet of the session this process started (other Ray
    sessions on the machine are left alone)."""
    import ray

    session = ray._private.worker.global_worker.node.get_session_dir_path()
    found = []
    for raylet in psutil.process_iter(["cmdline"]):
        try:
            cmd = raylet.info["cmdline"] or []
            if not (cmd and cmd[0].endswith("raylet") and any(session in arg for arg in cmd)):
                continue
            children = raylet.children(recursive=True)
        except psutil.Error:
            continue
        for proc in children:
            try:
                if " ".join(proc.cmdline()).startswith(f"ray::{cls_name}"):
                    found.append(proc)
            except psutil.Error:  # one that just ended
                continue
    return found


class Saboteur(threading.Thread):
    """Once the run has logged step `after`, SIGKILL one actor of each class in `plan[after]`;
    or, for ("scale", role, n), request the new size through `rewardflow scale`."""

    def __init__(self, out_dir, plan: dict[int, list]):
        super().__init__(daemon=True)
        self.out_dir, self.plan = out_dir, dict(plan)
        self.done: list[tuple[int, str]] = []
        self.stopped: list[int] = []  # pids frozen with SIGSTOP
        self.at: list[float] = []  # time.time() of each entry of `done`
        self.stop = threading.Event()

    def run(self) -> None:
        while self.plan and not self.stop.is_set():
            step = steps_logged(self.out_dir)
            for after in sorted(k for k in self.plan if k <= step):
                for what in self.plan.pop(after):
                    if isinstance(what, tuple):
                        from apps.scale import request_scale

                        request_scale(str(self.out_dir), what[1], what[2])
                        self.done.append((step, f"scale {what[1]} {what[2]}"))
                        self.at.append(time.time())
                        continue
                    sig, _, cls_name = what.rpartition(":")  # "STOP:RewardActor" freezes it instead
                    procs = actor_processes(cls_name)
                    if procs:
                        os.kill(procs[0].pid, signal.SIGSTOP if sig == "STOP" else signal.SIGKILL)
                        self.done.append((step, what))
                        self.at.append(time.time())
                        self.stopped += [p.pid for p in procs[:1]] if sig == "STOP" else []
            time.sleep(0.2)
