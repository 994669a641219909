"""Reference role: the frozen initial policy, giving log π_ref of response tokens."""
from __future__ import annotations

import time

import torch

from core.models import load_policy
from core.protocol import TrainBatch
from learners.engine import response_logprobs
from learners.packing import in_micro_batches, tokens_computed


class ReferenceActor:
    def __init__(self, model_path: str, dtype: str, micro_batch_size: int, temperature: float,
                 num_threads: int | None = None, share_prompt: str = "auto"):
        if num_threads:
            torch.set_num_threads(num_threads)
        self.model = load_policy(model_path, dtype).eval()
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device)
        self.micro_batch_size = micro_batch_size
        self.temperature = temperature
        self.share_prompt = share_prompt  # auto | on | off (learners/packing.py)
        self.busy_s = 0.0

    @torch.no_grad()
    def logprobs(self, batch: TrainBatch) -> tuple[torch.Tensor, int]:
        """log π_ref of the response tokens [B, R], and the positions computed for them
        (micro-batches formed by length, shared prompts computed once: learners/packing.py)."""
        started = time.perf_counter()
        n = max(1, -(-len(batch) // self.micro_batch_size))
        out = in_micro_batches(
            lambda mb, share: response_logprobs(self.model, mb.to(self.device), self.temperature, share).cpu(),
            batch, n, self.share_prompt)
        self.busy_s += time.perf_counter() - started
        return out, tokens_computed(batch, n, self.share_prompt)

    def load_weights(self, *buckets: list) -> None:
        """Load the policy's weights, wire-form buckets (`core/wire.py`; Ray resolves the bucket
        refs passed as arguments): the reference follows the policy, as iterative
        self-rewarding's M_t does."""
        from core.wire import from_wire

        started = time.perf_counter()
        with torch.no_grad():
            params = dict(self.model.named_parameters())
            for bucket in buckets:
                for name, tensor in from_wire(bucket):
                    params[name].copy_(tensor)
        self.busy_s += time.perf_counter() - started
