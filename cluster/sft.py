"""The supervised fine-tuning ranks (`rewardflow sft`) as one typed group."""
from __future__ import annotations

from actors.sft import SFTTrainerActor
from cluster.groups import RankGroup
from cluster.placement import threads_for
from core.ops import split_bounds
from learners.engine import num_micro_batches
from learners.losses import Normaliser
from learners.sft import TokenizedExample


class SFTTrainerGroup(RankGroup):
    """Data-parallel ranks of the policy under SFT: each step's examples are sharded across the
    ranks and normalised by the step's global target-token count, so the loss and its gradient do
    not depend on the number of ranks or micro-batches."""

    def __init__(self, cfg, model_path: str, pad_id: int):
        lc = cfg.learner
        super().__init__(SFTTrainerActor, "learner", lc, cfg.cluster.placement_strategy, lambda i: (
            i, lc.num_workers, model_path, lc, cfg.lr, cfg.model.dtype, cfg.seed, pad_id, threads_for()))
        self.micro_batch_size = lc.micro_batch_size

    def _shards(self, examples: list[TokenizedExample]) -> tuple[list[list[TokenizedExample]], int]:
        """Contiguous shards, one per rank, and the micro-batch count every rank uses."""
        bounds = split_bounds(len(examples), self.world_size)
        shards = [examples[lo:hi] for lo, hi in zip(bounds, bounds[1:])]
        return shards, num_micro_batches([len(s) for s in shards], self.micro_batch_size)

    def train_step(self, examples: list[TokenizedExample]) -> dict[str, float]:
        """One optimiser step on `examples` (at least one per rank); metrics summed over ranks:
        `loss/sft` is the token-mean loss of the whole step's batch."""
        norm = Normaliser(num_tokens=sum(e.num_targets for e in examples), num_seqs=len(examples))
        shards, n_micro = self._shards(examples)
        return self.finish_summed([a.train_step.remote(s, norm, n_micro) for a, s in zip(self.actors, shards)])

    def nll_sums(self, examples: list[TokenizedExample]) -> dict[str, float]:
        """Σ nll and Σ target tokens over `examples` with the current weights. A rank left
        without examples (fewer than ranks) scores a stand-in and reports zeros."""
        shards, n_micro = self._shards(examples)
        return self.finish_summed([a.evaluate.remote(s or examples[:1], n_micro, bool(s))
                                   for a, s in zip(self.actors, shards)])

    def save(self, out_dir: str) -> str:
        return self.call("save", out_dir)[0]
