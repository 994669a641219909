"""DeepSpeed policy engine and the mini-batch update loop. No Ray here.

One `PolicyEngine` per data-parallel rank. The process group is gloo on CPU
(DS_ACCELERATOR=cpu) and nccl on GPUs; ZeRO stage 0-3 from config.
"""
from __future__ import annotations

import math
import os
from collections import defaultdict

import torch

from core.protocol import TrainBatch
from learners.algos.base import Algorithm
from learners.losses import Normaliser
from core.ops import entropy_from_logits, masked_sum, position_ids, token_logprobs


def init_distributed(rank: int, world_size: int, master_addr: str, master_port: int) -> None:
    import deepspeed

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK="0",
                      MASTER_ADDR=master_addr, MASTER_PORT=str(master_port))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)


def ds_config(lr: float, zero_stage: int, grad_clip: float, weight_decay: float, dtype: str) -> dict:
    return {
        "train_micro_batch_size_per_gpu": 1,  # we split micro-batches ourselves
        "gradient_accumulation_steps": 1,
        "gradient_clipping": grad_clip,
        "zero_optimization": {"stage": zero_stage},
        "optimizer": {"type": "AdamW", "params": {"lr": lr, "weight_decay": weight_decay,
                                                  "betas": [0.9, 0.999], "eps": 1e-8, "torch_adam": True}},
        "bf16": {"enabled": dtype == "bfloat16"},
        "fp16": {"enabled": dtype == "float16"},
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


def response_logits(model, batch: TrainBatch, temperature: float = 1.0) -> torch.Tensor:
    """Logits predicting each response token: [B, R, V].

    Prompts are left-padded, so positions come from the attention mask; only the last R + 1
    positions go through the LM head (`logits_to_keep`).
    """
    resp_len = batch.response_mask.shape[1]
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                position_ids=position_ids(batch.attention_mask), use_cache=False, logits_to_keep=resp_len + 1)
    logits = out.logits[:, :-1]
    return logits / temperature if temperature != 1.0 else logits


def response_values(model, batch: TrainBatch) -> torch.Tensor:
    """V(s_t) [B, R] from a token-classification value model: the value of the state before
    response token t is read where that token is predicted (the same positions as the logits)."""
    resp_len = batch.response_mask.shape[1]
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                position_ids=position_ids(batch.attention_mask))
    return out.logits[:, -(resp_len + 1):-1, 0].float()


def response_logprobs(model, batch: TrainBatch, temperature: float = 1.0) -> torch.Tensor:
    """log π(response token) [B, R] for the whole micro-batch."""
    logits = response_logits(model, batch, temperature)
    return token_logprobs(logits, batch.input_ids[:, batch.prompt_len:])


@torch.no_grad()
def probe_logprob_sum(model, probe_ids: list[int]) -> float:
    """Σ log p(probe_ids[t] | probe_ids[:t]) for t >= 1: the rollout actor's weight checksum."""
    ids = torch.tensor([probe_ids], device=next(model.parameters()).device)
    logits = model(input_ids=ids, use_cache=False).logits[:, :-1]
    return float(token_logprobs(logits, ids[:, 1:]).double().sum())


def num_micro_batches(shard_sizes: list[int], micro_batch_size: int) -> int:
    """Micro-batches per rank for one optimiser step: the same count on every rank (gradient
    collectives must line up) and never an empty micro-batch on the smallest shard."""
    return max(1, min(math.ceil(max(shard_sizes) / micro_batch_size), min(shard_sizes)))


class DeepSpeedModel:
    """A DeepSpeed-wrapped model on one data-parallel rank and the optimiser step over a shard;
    subclasses say what one micro-batch's loss is."""

    grad_norm_metric = "train/grad_norm"

    def __init__(self, model, algorithm: Algorithm, config: dict, world_size: int, device: str | None = None):
        import deepspeed

        self.engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
        self.algorithm = algorithm
        self.world_size = world_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")

    def micro_loss(self, mb: TrainBatch, norm: Normaliser, sums: dict[str, float]) -> torch.Tensor:
        """This micro-batch's share of the global loss; adds its metrics to `sums`."""
        raise NotImplementedError

    def train_step(self, shard: TrainBatch, norm: Normaliser, n_micro: int) -> dict[str, float]:
        """One optimiser step over this rank's shard of a mini-batch.

        Each micro-batch loss is its share of the global loss (global counts in `norm`), times
        world_size because DeepSpeed averages gradients over ranks: the summed gradient equals
        the gradient of the unsharded loss.
        """
        self.engine.train()
        sums: dict[str, float] = defaultdict(float)
        parts = shard.split(n_micro, self.algorithm.rows_per_unit)
        for i, mb in enumerate(parts):
            self.engine.set_gradient_accumulation_boundary(i == len(parts) - 1)
            loss = self.micro_loss(mb.to(self.device), norm, sums)
            self.engine.backward(loss * self.world_size)
        self.engine.step()
        grad_norm = self.engine.get_global_grad_norm()
        if grad_norm is not None:
            sums[self.grad_norm_metric] = float(grad_norm) / self.world_size  # summed over ranks later
        return dict(sums)


class PolicyEngine(DeepSpeedModel):
    """The policy and the algorithm's loss."""

    def __init__(self, model, algorithm: Algorithm, config: dict, world_size: int,
                 temperature: float = 1.0, device: str | None = None):
        super().__init__(model, algorithm, config, world_size, device)
        self.temperature = temperature

    @torch.no_grad()
    def logprobs(self, shard: TrainBatch, n_micro: int) -> torch.Tensor:
        """log π(response tokens) [B, R] with the current weights (same micro-batches as training)."""
        self.engine.eval()
        return torch.cat([response_logprobs(self.engine, mb.to(self.device), self.temperature).cpu()
                          for mb in shard.split(n_micro, self.algorithm.rows_per_unit)])

    def micro_loss(self, mb: TrainBatch, norm: Normaliser, sums: dict[str, float]) -> torch.Tensor:
        logits = response_logits(self.engine, mb, self.temperature)
        logprobs = token_logprobs(logits, mb.input_ids[:, mb.prompt_len:])
        loss, metrics = self.algorithm.loss(mb, logprobs, norm)
        with torch.no_grad():
            ent = entropy_from_logits(logits.detach())
            sums["train/entropy"] += float(masked_sum(ent, mb.response_mask) / max(norm.num_tokens, 1))
            # Training/inference mismatch: |log π_learner - log π_rollout| per token.
            gap = (logprobs.detach() - mb.rollout_logprobs).abs()
            sums["train/logprob_mismatch"] += float(masked_sum(gap, mb.response_mask) / max(norm.num_tokens, 1))
        for k, v in metrics.items():
            sums[k] += float(v)
        sums["loss/total"] += float(loss.detach())
        return loss

    def named_weights(self, copy: bool = True, names: set[str] | None = None) -> list[tuple[str, torch.Tensor]]:
        """Full (gathered) weights on CPU, in model order (all of them, or those in `names`); a
        collective under ZeRO-3, so every rank calls it with the same names.

        copy=False may return the parameters' own CPU storage (no ZeRO-3 gather needed): only for
        a caller that copies them before the next optimiser step, as the object store does.
        """
        zero3 = self.engine.zero_optimization_stage() == 3
        return [(name, t.to("cpu", copy=copy or zero3)) for name, t in self.iter_weights(names)]

    def iter_weights(self, names: set[str] | None = None):
        """(name, full weight on this rank's device) in model order; under ZeRO-3 each is gathered
        (a collective: every rank iterates the same names) and valid only until the next item."""
        import deepspeed

        zero3 = self.engine.zero_optimization_stage() == 3
        for name, p in self.engine.module.named_parameters():
            if names is not None and name not in names:
                continue
            if zero3:
                with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
                    yield name, p.detach()
            else:
                yield name, p.detach()

    def weight_specs(self, names: set[str]) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
        """(name, dtype, full shape) of the weights in `names`, in model order (no gather)."""
        return [(name, p.dtype, tuple(getattr(p, "ds_shape", p.shape)))
                for name, p in self.engine.module.named_parameters() if name in names]

    def weight_buckets(self, max_bytes: int) -> list[set[str]]:
        """Parameter names cut into buckets of at most `max_bytes`: consecutive parameters in
        model order, then each larger parameter (an embedding) as a bucket of its own, last, so
        the reader starts on a small first bucket while the large ones are still being exported."""
        buckets: list[set[str]] = []
        large: list[set[str]] = []
        size = max_bytes
        for name, p in self.engine.module.named_parameters():
            nbytes = getattr(p, "ds_numel", p.numel()) * p.element_size()  # ZeRO-3: full size
            if nbytes > max_bytes:
                large.append({name})
                continue
            if size + nbytes > max_bytes:
                buckets.append(set())
                size = 0
            buckets[-1].add(name)
            size += nbytes
        return buckets + large


class CriticEngine(DeepSpeedModel):
    """The value model and the algorithm's value loss."""

    grad_norm_metric = "train/critic_grad_norm"

    @torch.no_grad()
    def values(self, shard: TrainBatch, n_micro: int) -> torch.Tensor:
        self.engine.eval()
        return torch.cat([response_values(self.engine, mb.to(self.device)).cpu()
                          for mb in shard.split(n_micro)])

    def micro_loss(self, mb: TrainBatch, norm: Normaliser, sums: dict[str, float]) -> torch.Tensor:
        loss, metrics = self.algorithm.critic_loss(mb, response_values(self.engine, mb), norm)
        for k, v in metrics.items():
            sums[k] += float(v)
        return loss

    def named_weights(self) -> list[tuple[str, torch.Tensor]]:
        raise TypeError("the critic's weights are not exported")
