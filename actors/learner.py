"""Learner role: one DeepSpeed data-parallel rank per actor."""
from __future__ import annotations

import os
import time
from dataclasses import replace

from actors.rank import RankActor
from core.protocol import TrainBatch
from learners.losses import Normaliser


class LearnerActor(RankActor):
    def __init__(self, rank: int, world_size: int, model_path: str, learner_cfg, algo_cfg,
                 dtype: str, temperature: float, seed: int, num_threads: int | None = None):
        super().__init__(rank, world_size, num_threads)
        self.model_path, self.learner_cfg, self.algo_cfg = model_path, learner_cfg, algo_cfg
        self.dtype, self.temperature, self.seed = dtype, temperature, seed
        self.engine = None

    def setup(self, master_addr: str, master_port: int) -> float:
        """Join the process group and build the DeepSpeed engine (a collective: all ranks at once)."""
        from learners.engine import ds_config

        started = time.perf_counter()
        self.join(master_addr, master_port, self.seed)
        cfg = self.learner_cfg
        model = self.load_model()
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        config = ds_config(self.learning_rate(), cfg.zero_stage, cfg.grad_clip, cfg.weight_decay, self.dtype)
        self.engine = self.build_engine(model, config)
        return time.perf_counter() - started

    # -- what the critic role overrides -----------------------------------------------------
    def load_model(self):
        from core.models import load_policy

        return load_policy(self.model_path, self.dtype)

    def learning_rate(self) -> float:
        return self.algo_cfg.lr

    def build_engine(self, model, config: dict):
        from learners.algos.registry import build_algorithm
        from learners.engine import PolicyEngine

        return PolicyEngine(model, build_algorithm(self.algo_cfg), config, self.world_size, self.temperature,
                            share_prompt=self.learner_cfg.share_prompt)

    def update(self, shards: list[TrainBatch], norms: list[Normaliser], n_micro: list[int]) -> dict[str, float]:
        """All optimiser steps of one training step: epochs x mini-batches, this rank's shards;
        the metrics averaged over them, and the positions computed (`engine.tokens_metric`)."""
        started = time.perf_counter()
        shards = [self.engine.arrange(shard) for shard in shards]  # micro-batches by length
        passes = self.algo_cfg.epochs
        if self.engine.algorithm.needs().old_logprobs:
            # π_old for truncated importance sampling: these weights, before any update of this step.
            shards = [replace(shard, old_logprobs=self.engine.logprobs(shard, n)) for shard, n in zip(shards, n_micro)]
            passes += 1
        totals: dict[str, float] = {}
        for _ in range(self.algo_cfg.epochs):
            for shard, norm, n in zip(shards, norms, n_micro):
                for k, v in self.engine.train_step(shard, norm, n).items():
                    totals[k] = totals.get(k, 0.0) + v
        steps = self.algo_cfg.epochs * len(shards)
        tokens = passes * sum(self.engine.tokens_computed(shard, n) for shard, n in zip(shards, n_micro))
        self.busy_s += time.perf_counter() - started
        skipped = self.engine.skipped_metric  # optimiser steps skipped (non-finite): a count, not a mean
        return {**{k: v if k == skipped else v / steps for k, v in totals.items()},
                self.engine.tokens_metric: float(tokens)}

    def plan_weight_buckets(self, max_bytes: int) -> int:
        """Cut the weights into export buckets of at most `max_bytes`; returns how many."""
        self.buckets = self.engine.weight_buckets(max_bytes)
        return len(self.buckets)

    def export_weights(self, bucket: int | None = None) -> list | None:
        """Rank 0's weights in wire form: all of them, or one bucket of `plan_weight_buckets`
        (every rank must call: ZeRO-3 gathers are collective)."""
        from core.wire import to_wire

        # No extra copy: Ray copies the return value into the object store before this actor
        # runs its next call (the next bucket or update).
        weights = self.engine.named_weights(copy=False, names=None if bucket is None else self.buckets[bucket])
        return to_wire(weights) if self.rank == 0 else None

    # -- the collective weight broadcast (core/collective.py): rank 0 sends --------------------
    def weight_device(self) -> str:
        """Where this actor's weights live (`core.collective.device_id`)."""
        from core.collective import device_id

        return device_id()

    def plan_weight_layouts(self, max_bytes: int) -> list:
        """Rank 0: the byte layout of each export bucket (`plan_weight_buckets`), for the receivers."""
        from core.collective import plan_layout

        self.plan_weight_buckets(max_bytes)
        self.weight_layouts = [plan_layout(self.engine.weight_specs(names)) for names in self.buckets]
        return self.weight_layouts

    def open_weight_group(self, world: int, timeout_s: float, share: bool) -> tuple[str, int, str | None]:
        """Rank 0: the broadcast group's store, on this node; where receivers join it, and with
        `share` (receivers on this node), the shared-memory file of the send buffers they map
        (None if it does not fit: they join the group instead)."""
        from core.collective import open_store, shared_buckets

        host, _ = self.address()
        # An earlier group's store stays up: receivers still in an aborted sync of that group read
        # its abort key there (a closed store would leave them reconnecting until their timeout).
        self.old_weight_stores = [*getattr(self, "old_weight_stores", []), getattr(self, "weight_store", None)]
        self.weight_store = open_store(host, world, timeout_s)
        self.shared_buckets = shared_buckets(self.weight_layouts) if share else None
        return host, self.weight_store.port, self.shared_buckets[0] if self.shared_buckets else None

    def join_weight_group(self, backend: str, layouts: list, world: int, timeout_s: float,
                          group_ranks: list[int], local: list[int]) -> None:
        """Rank 0 joins; the `local` ranks read its shared buffers (`open_weight_group`)."""
        from core.collective import WeightSender, join_group, unlink

        path, buffers = self.shared_buckets or (None, None)
        try:
            store, group = join_group(backend, self.weight_store, "", 0, 0, world, timeout_s, group_ranks)
        finally:  # every member has checked in, so every reader has mapped it (or the forming failed)
            unlink(path)
        self.sender = WeightSender(store, group, layouts, world - 1, self.engine.device, timeout_s,
                                   buffers, tuple(local) if buffers is not None else ())

    def start_broadcast(self, version: int) -> None:
        """Pack every bucket and hand it to the sender thread, which broadcasts it once every
        receiver is ready; returns when the weights are packed, so training can go on (every rank
        calls: ZeRO-3 gathers are collective)."""
        sender = getattr(self, "sender", None)
        if sender is not None:
            sender.begin(version)
        for index, names in enumerate(self.buckets):
            weights = self.engine.iter_weights(names)
            if sender is None:
                for _ in weights:  # the other ranks take part in the gathers only
                    pass
            else:
                sender.pack(index, weights)

    def finish_broadcast(self) -> float | None:
        """Rank 0: wait for the last broadcast (raises `WeightSyncError` naming unfinished ranks)."""
        sender = getattr(self, "sender", None)
        return sender.finish() if sender is not None else None

    def share_weights(self) -> dict | None:
        """Rank 0 moves its parameters into one shared-memory file and returns its descriptor
        (`learners/shared_weights.py`; ZeRO stage 0 in float32 on CPU, which updates them in
        place); other ranks return None."""
        from learners.shared_weights import share_parameters

        return share_parameters(self.engine.engine.module) if self.rank == 0 else None

    def unlink_shared_weights(self, descriptor: dict) -> None:
        from learners.shared_weights import unlink

        unlink(descriptor)

    def save_state(self, ckpt_dir: str) -> None:
        """This rank's part of a resumable checkpoint: weights, optimiser and scheduler state
        (a DeepSpeed checkpoint; every rank calls)."""
        self.engine.engine.save_checkpoint(ckpt_dir, tag="state")

    def load_state(self, ckpt_dir: str) -> None:
        path, _ = self.engine.engine.load_checkpoint(ckpt_dir, tag="state")
        if path is None:
            raise FileNotFoundError(f"no learner checkpoint in {ckpt_dir}")

    def save(self, out_dir: str) -> str | None:
        from transformers import AutoTokenizer

        weights = self.engine.named_weights()
        if self.rank != 0:
            return None
        module = self.engine.engine.module
        module.save_pretrained(out_dir, state_dict=dict(weights), safe_serialization=True)
        AutoTokenizer.from_pretrained(self.model_path).save_pretrained(out_dir)
        return os.path.abspath(out_dir)
