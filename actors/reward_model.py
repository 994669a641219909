"""Reward-model trainer role (`rewardflow train-rm`): one DeepSpeed data-parallel rank per actor."""
from __future__ import annotations

import random
import time

from actors.rank import RankActor
from core.preference_data import PreferencePair


class RewardModelTrainerActor(RankActor):
    def __init__(self, rank: int, world_size: int, model_path: str, cfg, num_threads: int | None = None):
        super().__init__(rank, world_size, num_threads)
        self.model_path, self.cfg = model_path, cfg
        self.trainer = None

    def setup(self, master_addr: str, master_port: int) -> float:
        """Join the process group and build the DeepSpeed engine (a collective: all ranks at once)."""
        from learners.engine import ds_config
        from learners.reward_model import RewardModelTrainer, build_reward_model

        started = time.perf_counter()
        self.join(master_addr, master_port, self.cfg.seed)
        model, tokenizer = build_reward_model(self.model_path, self.cfg.model.dtype)
        config = ds_config(self.cfg.lr, self.cfg.zero_stage, self.cfg.grad_clip, self.cfg.weight_decay,
                           self.cfg.model.dtype)
        self.trainer = RewardModelTrainer(model, tokenizer, config, self.world_size, self.cfg.max_length)
        return time.perf_counter() - started

    def _batches(self, pairs: list[PreferencePair], order: list[int]):
        """This rank's share of each batch of `batch_size` pairs, and the batch size. Every rank
        gets the same number of batches (ZeRO-3 forwards are collective)."""
        from core.ops import split_bounds

        bs = self.cfg.batch_size
        for lo in range(0, len(order), bs):
            batch = [pairs[i] for i in order[lo:lo + bs]]
            bounds = split_bounds(len(batch), self.world_size)
            yield batch[bounds[self.rank]:bounds[self.rank + 1]], len(batch)

    def train_epoch(self, pairs: list[PreferencePair], epoch: int) -> dict[str, float]:
        """One pass over `pairs` in a seeded order shared by all ranks; returns this rank's sums
        (the driver adds the ranks). A last batch too short to give every rank a pair is dropped."""
        order = list(range(len(pairs)))
        random.Random(self.cfg.seed * 1000 + epoch).shuffle(order)
        sums = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0, "steps": 0.0}
        for part, size in self._batches(pairs, order):
            if size < self.world_size:
                break
            out = self.trainer.train_step(part, size)
            sums["loss_sum"] += out["loss_sum"]
            sums["correct"] += out["correct"]
            sums["count"] += len(part)
            sums["steps"] += 1
        return sums

    def evaluate(self, pairs: list[PreferencePair]) -> dict[str, float]:
        """This rank's sums over its share of `pairs`: BT loss, correct, margin, count. A rank
        left without pairs in the last batch scores a stand-in pair and drops it (its forward
        must still run under ZeRO-3)."""
        sums = {"loss_sum": 0.0, "correct": 0.0, "margin_sum": 0.0, "count": 0.0}
        for part, _ in self._batches(pairs, list(range(len(pairs)))):
            out = self.trainer.evaluate(part or pairs[:1])
            if part:
                sums["loss_sum"] += float(out["loss"].sum())
                sums["correct"] += float(out["correct"].sum())
                sums["margin_sum"] += float(out["margin"].sum())
                sums["count"] += len(part)
        return sums

    def save(self, out_dir: str) -> str | None:
        return self.trainer.save(out_dir, self.rank)
