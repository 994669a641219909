"""Rewards that run in `IsolatedRunner`'s worker process (`isolate_process`), for
test_isolation.py. Their own module: the worker imports it to unpickle them, so it imports
nothing heavy (no torch)."""
import os
import threading

from rewards.base import PairwiseReward, Reward


class InWorker(Reward):
    """Scores the pid of the process it runs in; some responses misbehave instead."""
    isolate_process = True

    def score(self, sample):
        if sample.response == "raise":
            raise RuntimeError("boom")
        if sample.response == "exit":
            os._exit(3)
        if sample.response == "spin":
            while True:
                pass
        return float("nan") if sample.response == "nan" else float(os.getpid())


class LongerInWorker(PairwiseReward):
    isolate_process = True

    def prefer(self, a, b):
        return 1.0 if len(a.response) > len(b.response) else 0.0


class Unpicklable(Reward):
    isolate_process = True

    def __init__(self):
        super().__init__(None)
        self.lock = threading.Lock()

    def score(self, sample):
        return 1.0
