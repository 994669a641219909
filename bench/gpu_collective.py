"""Benchmark/check of the collective weight path on a GPU: bucket export and the NCCL group.

    python bench/gpu_collective.py [--out FILE] [--repeats 5]

1. Bucket export, the learner side of `train.weight_sync: collective`: a randomly initialised
   model with SmolLM2-135M's architecture in `learners.engine.PolicyEngine` (bf16, world size 1)
   under ZeRO stages 0 and 3; its weights cut into `train.sync_bucket_mb` buckets
   (`weight_buckets`, `weight_specs`, `core.collective.plan_layout`) and packed into the send
   buffers on the device (`WeightSender.pack`, a ZeRO-3 gather per parameter). Reports seconds per
   full export and GB/s, with ZeRO 0 as the baseline of the same run.
2. The group: a second process joins learner rank 0 in a stateless group
   (`core.collective.open_store` / `join_group`) with NCCL on the same GPU; reports the set-up time
   (store, group, first collective) and a full broadcast of the weights through `WeightSender` /
   `WeightReceiver`, checked bit for bit on the receiving side. NCCL refuses two ranks on one
   device on most versions: the error is recorded, and the same broadcast runs over gloo from the
   GPU weights (staged through host buffers) as the fallback figure.
Writes a JSON report (--out) and prints it.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gpu_learner import smollm2_like  # noqa: E402
from core.collective import (  # noqa: E402
    WeightReceiver, WeightSender, join_group, open_store, plan_layout,
)
from learners.algos.grpo import GRPO, GRPOConfig  # noqa: E402
from learners.engine import PolicyEngine, ds_config, init_distributed  # noqa: E402

BUCKET_BYTES = 64 * 2**20


def build_engine(stage: int, dtype: str) -> PolicyEngine:
    return PolicyEngine(smollm2_like(), GRPO(GRPOConfig(lr=1e-5)), ds_config(1e-5, stage, 1.0, 0.0, dtype), world_size=1)


def plan(engine: PolicyEngine):
    buckets = engine.weight_buckets(BUCKET_BYTES)
    return buckets, [plan_layout(engine.weight_specs(names)) for names in buckets]


def sync_device(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def export_seconds(engine: PolicyEngine, repeats: int, device: str) -> dict:
    """Seconds to pack every bucket into device send buffers (no receivers: the pack alone)."""
    buckets, layouts = plan(engine)
    sender = WeightSender(None, None, layouts, 0, device, 60.0)
    times = []
    for i in range(repeats + 1):
        sync_device(device)
        started = time.perf_counter()
        for index, names in enumerate(buckets):
            sender.pack(index, engine.iter_weights(names))
            sender.packed.get()  # nobody sends here: drop the notice
        sync_device(device)
        if i:  # the first warms up
            times.append(time.perf_counter() - started)
    nbytes = sum(layout.nbytes for layout in layouts)
    mean = sum(times) / len(times)
    return {"buckets": len(buckets), "bytes": nbytes, "export_s": mean, "gb_per_s": nbytes / mean / 1e9,
            "times": times}


def checksums(named) -> dict[str, float]:
    return {name: float(t.double().sum()) for name, t in named}


def receiver(backend: str, device: str, host: str, port: int, layouts, repeats: int, out) -> None:
    """Rank 1 in its own process: join, receive `repeats + 1` versions, report the last's sums."""
    try:
        started = time.perf_counter()
        store, group = join_group(backend, None, host, port, 1, 2, 120.0)
        rx = WeightReceiver(store, group, layouts, 1, device)
        joined = time.perf_counter() - started
        sums = {}
        for version in range(repeats + 1):
            sums = checksums(rx.receive(version))
        out.put({"ok": True, "join_s": joined, "sums": sums})
    except Exception:  # reported to the parent
        out.put({"ok": False, "error": traceback.format_exc()[-2000:]})


def timed_syncs(sender, engine: PolicyEngine, buckets, repeats: int, started: float) -> tuple[float, list[float]]:
    """`repeats + 1` full syncs (pack every bucket, broadcast, wait): seconds from `started` to
    the end of the first (the communicator is made by the first collective), and each later one's."""
    times, first = [], None
    for version in range(repeats + 1):
        t = time.perf_counter()
        sender.begin(version)
        for index, names in enumerate(buckets):
            sender.pack(index, engine.iter_weights(names))
        sender.finish()
        if first is None:
            first = time.perf_counter() - started
        else:
            times.append(time.perf_counter() - t)
    return first, times


def broadcast_check(engine: PolicyEngine, backend: str, device: str, repeats: int) -> dict:
    buckets, layouts = plan(engine)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    started = time.perf_counter()
    store = open_store("127.0.0.1", 2, 120.0)
    proc = ctx.Process(target=receiver, args=(backend, device, "127.0.0.1", store.port, layouts, repeats, out))
    proc.start()
    try:
        store_s = time.perf_counter() - started
        store, group = join_group(backend, store, "", 0, 0, 2, 120.0)
        sender = WeightSender(store, group, layouts, 1, device, 120.0)
        first, times = timed_syncs(sender, engine, buckets, repeats, started)
        report = out.get(timeout=300)
    finally:
        proc.join(timeout=60)
        if proc.is_alive():
            proc.kill()
    if not report["ok"]:
        raise RuntimeError(report["error"])
    sent = {}
    for names in buckets:
        sent.update(checksums(engine.iter_weights(names)))
    nbytes = sum(layout.nbytes for layout in layouts)
    mean = sum(times) / len(times)
    return {"backend": backend, "buffers_on": device, "store_s": store_s, "receiver_join_s": report["join_s"],
            "setup_and_first_sync_s": first, "sync_s": mean, "gb_per_s": nbytes / mean / 1e9,
            "received_equal": report["sums"] == sent, "times": times}


def nccl_alone(engine: PolicyEngine, repeats: int) -> dict:
    """Rank 0 alone in an NCCL group (no receiver): the set-up path and a broadcast's cost on it."""
    buckets, layouts = plan(engine)
    started = time.perf_counter()
    store, group = join_group("nccl", open_store("127.0.0.1", 1, 120.0), "", 0, 0, 1, 120.0)
    sender = WeightSender(store, group, layouts, 0, "cuda", 120.0)
    first, times = timed_syncs(sender, engine, buckets, repeats, started)
    return {"setup_and_first_sync_s": first, "sync_s": sum(times) / len(times), "times": times}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dtype", default="bfloat16")
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    init_distributed(0, 1, "127.0.0.1", 29533)
    report: dict = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                    "torch": torch.__version__, "dtype": args.dtype, "bucket_mb": BUCKET_BYTES / 2**20}
    if device == "cuda":
        report["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    report["export"] = {}
    for stage in (0, 3):
        engine = build_engine(stage, args.dtype)
        report["export"][f"zero{stage}"] = export_seconds(engine, args.repeats, device)
        if stage == 0:
            report["params"] = sum(p.numel() for p in engine.engine.module.parameters())
            if device == "cuda":
                report["nccl_rank0_alone"] = nccl_alone(engine, args.repeats)
            backends = ["nccl", "gloo"] if device == "cuda" else ["gloo"]
            report["broadcast"] = {}
            for backend in backends:
                try:
                    report["broadcast"][backend] = broadcast_check(
                        engine, backend, device if backend == "nccl" else "cpu", args.repeats)
                except Exception as e:  # recorded: NCCL may refuse two ranks on one GPU
                    report["broadcast"][backend] = {"error": f"{type(e).__name__}: {str(e)[-1500:]}"}
        del engine
        if device == "cuda":
            torch.cuda.empty_cache()
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
