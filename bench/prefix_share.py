"""Benchmark: shared-prompt packing (learners/packing.py) off vs on, learner and reference.

    .venv/bin/python bench/prefix_share.py [--models tiny default] [--repeats 3]

A synthetic GRPO-shaped batch (8 prompts x 8 samples, prompts of 60-100 tokens, responses of
5-48 tokens, random ids) goes through the learner exactly as the learner actor runs it
(`PolicyEngine` on one gloo DeepSpeed rank, ZeRO 0, float32: `arrange`, then `train_step` over
`learner.micro_batch_size` rows per micro-batch: forward, backward and the AdamW step) and
through the reference actor's `logprobs` (`reference.micro_batch_size` rows per micro-batch).
Sharing off and on alternate within one run; each time is the median of the repeats. Before
timing, both paths' GRPO loss on the same weights and the reference logprobs are compared.
Printed: tokens computed per step (`learners.packing.tokens_computed`) and seconds, off vs on.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DS_ACCELERATOR", "cpu")

from core.protocol import Rollouts, RolloutTensors, TrainBatch  # noqa: E402
from learners.engine import num_micro_batches  # noqa: E402
from learners.packing import tokens_computed  # noqa: E402

MODES = ("off", "auto")


def grpo_batch(vocab: int, prompts: int = 8, group: int = 8, seed: int = 0) -> TrainBatch:
    """`prompts` x `group` rows: prompts of 60-100 ids, responses of 5-48, random advantages."""
    rng = np.random.default_rng(seed)
    prompt_ids = [rng.integers(10, vocab, rng.integers(60, 101)) for _ in range(prompts)]
    rows = [(g, prompt_ids[g], rng.integers(10, vocab, rng.integers(5, 49))) for g in range(prompts) for _ in range(group)]
    n = len(rows)
    rollouts = Rollouts(
        prompt_ids=[p for _, p, _ in rows], response_ids=[r for _, _, r in rows],
        rollout_logprobs=[-10.0 - rng.random(len(r)) for _, _, r in rows], response_texts=[""] * n,
        finish_reasons=["stop"] * n, group_ids=np.array([g for g, _, _ in rows]), policy_versions=np.zeros(n, int),
        prompt_texts=[""] * n, answers=[""] * n)
    tensors = RolloutTensors.from_rollouts(rollouts, pad_id=0)
    tensors = replace(tensors, ref_logprobs=tensors.rollout_logprobs - 0.1)
    return tensors.batch(torch.as_tensor(rng.standard_normal(n), dtype=torch.float32))


def model_path(name: str) -> str:
    from core.models import build_tiny_model, cache_dir, ensure_default_model

    if name == "tiny":
        return str(build_tiny_model(cache_dir() / "tiny-llama-test"))
    return str(ensure_default_model()) if name == "default" else name


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process: steadier on a machine shared with other jobs)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench_model(name: str, repeats: int, learner_mbs: int, reference_mbs: int) -> dict:
    from actors.reference import ReferenceActor
    from core.models import load_policy
    from learners.algos.grpo import GRPO, GRPOConfig
    from learners.engine import PolicyEngine, ds_config

    path = model_path(name)
    reference = ReferenceActor(path, "float32", reference_mbs, 1.0)
    batch = grpo_batch(reference.model.config.vocab_size)
    algo = GRPO(GRPOConfig(lr=1e-7, kl_coef=0.04))
    engine = PolicyEngine(load_policy(path), algo, ds_config(1e-7, 0, 1.0, 0.0, "float32"), world_size=1)
    norm = algo.normaliser(batch, 48)
    n_learner = num_micro_batches([len(batch)], learner_mbs)
    n_reference = max(1, -(-len(batch) // reference_mbs))

    # Agreement on the same weights, before any optimiser step.
    engine.engine.eval()
    losses, ref_lps = {}, {}
    with torch.no_grad():
        for mode in MODES:
            engine.share_prompt = reference.share_prompt = mode
            sums: dict[str, float] = defaultdict(float)
            losses[mode] = sum(float(engine.micro_loss(mb, norm, sums))
                               for mb in engine.arrange(batch).split(n_learner))
            ref_lps[mode] = reference.logprobs(batch)[0] * batch.response_mask

    times: dict[str, dict[str, list[tuple[float, float]]]] = {m: {"learner": [], "reference": []} for m in MODES}
    for _ in range(repeats):
        for mode in MODES:
            engine.share_prompt = reference.share_prompt = mode
            times[mode]["learner"].append(timed(lambda: engine.train_step(engine.arrange(batch), norm, n_learner)))
            times[mode]["reference"].append(timed(lambda: reference.logprobs(batch)))
    return {
        "model": name, "rows": len(batch), "batch_width": batch.input_ids.shape[1],
        "real_tokens": int(batch.attention_mask.sum()),
        "micro_batches": {"learner": n_learner, "reference": n_reference},
        "tokens": {mode: {"learner": tokens_computed(batch, n_learner, mode, algo.rows_per_unit),
                          "reference": tokens_computed(batch, n_reference, mode)} for mode in MODES},
        "median_s": {mode: {k: statistics.median(w for w, _ in v) for k, v in t.items()} for mode, t in times.items()},
        "median_cpu_s": {mode: {k: statistics.median(c for _, c in v) for k, v in t.items()} for mode, t in times.items()},
        "all_s": times,
        "loss_off_vs_on": [losses["off"], losses["auto"]],
        "ref_logprob_max_abs_diff": float((ref_lps["off"] - ref_lps["auto"]).abs().max()),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["tiny", "default"], help="tiny, default, or a model dir")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--learner-micro-batch-size", type=int, default=16)  # recipes/grpo_arith.yaml
    ap.add_argument("--reference-micro-batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from learners.engine import init_distributed

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    init_distributed(0, 1, "127.0.0.1", port)
    for name in args.models:
        r = bench_model(name, args.repeats, args.learner_micro_batch_size, args.reference_micro_batch_size)
        print(json.dumps(r), flush=True)
        for role in ("learner", "reference"):
            off, on = r["tokens"]["off"][role], r["tokens"]["auto"][role]
            t_off, t_on = r["median_s"]["off"][role], r["median_s"]["auto"][role]
            c_off, c_on = r["median_cpu_s"]["off"][role], r["median_cpu_s"]["auto"][role]
            print(f"{name} {role}: tokens {off} -> {on} ({on / off:.2f}x); wall {t_off:.2f} s -> {t_on:.2f} s "
                  f"({t_off / t_on:.2f}x faster); CPU {c_off:.2f} s -> {c_on:.2f} s ({c_off / c_on:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
