"""FLOPs of a training step's phases, and the machine's measured matmul peak to set them against.

The counts are each phase's floor: the matmul work every distinct position of the step needs once,
whatever the implementation computes on top (padding, a prompt prefilled once per sample instead
of once per group). Dividing a phase's floor by its seconds times the measured peak gives the
fraction of the machine it reached (`perf/<phase>_peak_frac`, cluster/metrics.py).

    N_body  parameters a position meets in the transformer body: every weight but the input
            embedding table and the LM head (`core.models.matmul_params`)
    N_head  the LM head (vocab x hidden); tied to the embedding or not, it is one matmul
    P       prompt tokens, each prompt once per group (its samples share it)
    R       response tokens

    forward (generate, reference):  2·N_body·(P + R) + 2·N_head·R
    critic forward (values):        2·N_body·(P + R)                 (scalar head: negligible)
    update, per pass:               6·N_body·(P + R) + 6·N_head·R    (+ the critic's 6·N_body·(P + R))

2 FLOPs per parameter per position forward, 4 more backward (Kaplan et al. 2020, "Scaling Laws
for Neural Language Models", §2.1). Only response positions go through the LM head: a prompt
position predicts no sampled token (vLLM's prefill and the learner's `logits_to_keep` skip it).
Left out: the attention-score term, 2·n_layer·n_ctx·d_attn per position forward (Kaplan Table 1),
about 1% of 2·N for the default model at ~80 positions (30 layers, d_attn 576); embedding lookups,
norms, activations and the softmax over the vocabulary.
"""
from __future__ import annotations

import time
from collections.abc import Sequence

FORWARD_FLOPS = 2  # per parameter per position
TRAIN_FLOPS = 6  # forward 2 + backward 4

PHASES = ("generate", "reference", "critic", "update")


def step_tokens(prompt_lens: Sequence[int], response_lens: Sequence[int], group_ids: Sequence[int]) -> tuple[int, int]:
    """(P, R): prompt tokens counted once per group, and all response tokens.

    prompt_lens, response_lens, group_ids: [B], one entry per sample; samples of a group share
    its prompt (the same length)."""
    first: dict[int, int] = {}
    for g, n in zip(group_ids, prompt_lens):
        first.setdefault(int(g), int(n))
    return sum(first.values()), int(sum(response_lens))


def phase_flops(body_params: int, head_params: int, prompt_tokens: int, response_tokens: int,
                reference: bool, critic: bool, update_passes: float) -> dict[str, float]:
    """Floor FLOPs of each phase of one step (module docstring); 0 for a phase that does not run.

    update_passes: passes of the training step over the batch (`algo.epochs`, plus 1/3 for a
    forward-only pass computing old logprobs)."""
    positions = prompt_tokens + response_tokens
    forward = FORWARD_FLOPS * (body_params * positions + head_params * response_tokens)
    critic_forward = FORWARD_FLOPS * body_params * positions if critic else 0
    train = TRAIN_FLOPS * (body_params * positions + head_params * response_tokens)
    return {
        "generate": float(forward),
        "reference": float(forward if reference else 0),
        "critic": float(critic_forward),
        "update": float(update_passes * (train + 3 * critic_forward)),
    }


def matmul_peak(dtype: str = "float32", device: str = "cpu", size: int | None = None,
                seconds: float = 1.0) -> float:
    """The peak a phase's floor is set against, in FLOP/s: the fastest of repeated
    [size, size] x [size, size] matmuls (2·size³ FLOPs each) in `dtype` over about `seconds`.

    On a GPU, the device's. On a CPU, one thread's times torch's thread count: a matmul spread
    over every thread waits for the slowest, so on a shared machine it reads whatever else runs
    there (half the peak on this project's 2 cores with other jobs busy), while one thread far
    more often gets a core to itself for a few milliseconds. On 2 idle cores the product reads
    about 5% above the two-thread matmul (one busy core clocks higher)."""
    import torch

    on_gpu = device.startswith("cuda")
    threads = 1 if on_gpu else torch.get_num_threads()
    size = size or (8192 if on_gpu else 512)
    a = torch.randn(size, size, device=device).to(getattr(torch, dtype))
    b = torch.randn(size, size, device=device).to(getattr(torch, dtype))
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    if not on_gpu:
        torch.set_num_threads(1)
    try:
        torch.mm(a, b)  # warm-up
        sync()
        best, deadline, count = 0.0, time.perf_counter() + seconds, 0
        while count < 3 or time.perf_counter() < deadline:
            started = time.perf_counter()
            torch.mm(a, b)
            sync()
            best, count = max(best, 2 * size**3 / (time.perf_counter() - started)), count + 1
    finally:
        if not on_gpu:
            torch.set_num_threads(threads)
    return best * threads
