"""Supervised fine-tuning role (`rewardflow sft`): one DeepSpeed data-parallel rank per actor."""
from __future__ import annotations

import os
import time

from actors.rank import RankActor
from learners.losses import Normaliser
from learners.sft import TokenizedExample


class SFTTrainerActor(RankActor):
    def __init__(self, rank: int, world_size: int, model_path: str, learner_cfg, lr: float, dtype: str,
                 seed: int, pad_id: int, num_threads: int | None = None):
        super().__init__(rank, world_size, num_threads)
        self.model_path, self.learner_cfg, self.lr, self.dtype = model_path, learner_cfg, lr, dtype
        self.seed, self.pad_id = seed, pad_id
        self.engine = None

    def setup(self, master_addr: str, master_port: int) -> float:
        """Join the process group and build the DeepSpeed engine (a collective: all ranks at once)."""
        from core.models import load_policy
        from learners.engine import ds_config
        from learners.sft import SFTEngine

        started = time.perf_counter()
        self.join(master_addr, master_port, self.seed)
        cfg = self.learner_cfg
        model = load_policy(self.model_path, self.dtype)
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        config = ds_config(self.lr, cfg.zero_stage, cfg.grad_clip, cfg.weight_decay, self.dtype)
        self.engine = SFTEngine(model, config, self.world_size)
        return time.perf_counter() - started

    def train_step(self, examples: list[TokenizedExample], norm: Normaliser, n_micro: int) -> dict[str, float]:
        """One optimiser step on this rank's share of the step's examples; returns this rank's
        shares of the metrics (the driver adds the ranks)."""
        from learners.sft import collate

        started = time.perf_counter()
        out = self.engine.train_step(collate(examples, self.pad_id), norm, n_micro)
        self.busy_s += time.perf_counter() - started
        return out

    def evaluate(self, examples: list[TokenizedExample], n_micro: int, keep: bool = True) -> dict[str, float]:
        """Σ nll and Σ target tokens over `examples`; zeros when not `keep` (a rank without a share
        of the eval set runs a stand-in forward: under ZeRO-3 every rank must)."""
        from learners.sft import collate

        sums = self.engine.nll_sums(collate(examples, self.pad_id), n_micro)
        return sums if keep else {k: 0.0 for k in sums}

    def save(self, out_dir: str) -> str | None:
        """An HF checkpoint with the start model's tokenizer (every rank calls: ZeRO-3 gathers the
        weights collectively); rank 0 writes it."""
        from transformers import AutoTokenizer

        weights = self.engine.named_weights()
        if self.rank != 0:
            return None
        self.engine.engine.module.save_pretrained(out_dir, state_dict=dict(weights), safe_serialization=True)
        AutoTokenizer.from_pretrained(self.model_path).save_pretrained(out_dir)
        return os.path.abspath(out_dir)
