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
from learners.packing import PackedRows, arrange, in_micro_batches, pack, shares_prompt, split_tokens
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


def response_token_stats(model, batch: TrainBatch, temperature: float = 1.0, share_prompt: bool = False,
                         entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(response token) [B, R] and, with entropy=True, the entropy of the distribution that
    predicts it [B, R] (no gradient; else None).

    Unshared: from `response_logits`. share_prompt: the rows packed by `learners.packing.pack`
    (each shared prompt once, rows as wide as the micro-batch's longest packed row); only the
    last S + 1 packed columns go through the LM head and the softmax, and no [B, R, V] tensor is
    formed. The same values up to float summation order.
    """
    tokens = batch.input_ids[:, batch.prompt_len:]
    if not share_prompt:
        logits = response_logits(model, batch, temperature)
        with torch.no_grad():
            ent = entropy_from_logits(logits.detach()) if entropy else None
        return token_logprobs(logits, tokens), ent
    packed = pack(batch)
    out = model(**packed_inputs(model, packed), use_cache=False, logits_to_keep=packed.response_width + 1)
    kept = out.logits[:, :-1]
    kept = kept / temperature if temperature != 1.0 else kept
    with torch.no_grad():
        ent = packed.entropy(kept.detach()) if entropy else None
    return packed.token_logprobs(kept, tokens), ent


def response_values(model, batch: TrainBatch, share_prompt: bool = False) -> torch.Tensor:
    """V(s_t) [B, R] from a token-classification value model: the value of the state before
    response token t is read where that token is predicted (the same positions as the logits;
    share_prompt as in `response_token_stats`)."""
    if share_prompt:
        packed = pack(batch)
        out = model(**packed_inputs(model, packed))
        return packed.unpack(out.logits[:, packed.prompt_width - 1:-1, 0]).float()
    resp_len = batch.response_mask.shape[1]
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                position_ids=position_ids(batch.attention_mask))
    return out.logits[:, -(resp_len + 1):-1, 0].float()


def response_logprobs(model, batch: TrainBatch, temperature: float = 1.0, share_prompt: bool = False) -> torch.Tensor:
    """log π(response token) [B, R] for the whole micro-batch."""
    return response_token_stats(model, batch, temperature, share_prompt)[0]


def packed_inputs(model, packed: PackedRows) -> dict[str, torch.Tensor]:
    """Model inputs of packed rows, the [N, 1, L, L] mask in the form the attention takes
    (transformers uses a 4D mask as given): boolean for sdpa, additive for eager."""
    config = getattr(model, "module", model).config
    impl = getattr(config, "_attn_implementation", None) or "eager"
    if impl == "sdpa":
        mask = packed.sees
    elif impl == "eager":
        dtype = next(model.parameters()).dtype
        mask = torch.zeros(packed.sees.shape, dtype=dtype, device=packed.sees.device)
        mask = mask.masked_fill(~packed.sees, torch.finfo(dtype).min)
    else:
        raise ValueError(f"share_prompt needs sdpa or eager attention, the model uses {impl!r} "
                         "(set share_prompt=off)")
    return {"input_ids": packed.input_ids, "attention_mask": mask, "position_ids": packed.position_ids}


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
    skipped_metric = "train/skipped_steps"  # optimiser steps skipped for a non-finite loss or gradient
    tokens_metric = "perf/learner_tokens"  # positions run through the model per training step

    def __init__(self, model, algorithm: Algorithm, config: dict, world_size: int, device: str | None = None,
                 share_prompt: str = "auto"):
        import deepspeed

        self.engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
        self.algorithm = algorithm
        self.world_size = world_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.share_prompt = share_prompt  # auto | on | off (learners/packing.py)

    def arrange(self, shard: TrainBatch) -> TrainBatch:
        """The shard's rows in the order `train_step` and `logprobs` should cut them: by length,
        a shared prompt's rows together, where prompts are shared (`learners.packing.arrange`)."""
        return arrange(shard, self.share_prompt, self.algorithm.rows_per_unit)[0]

    def tokens_computed(self, shard: TrainBatch, n_micro: int) -> int:
        """Positions one forward pass over an arranged shard in `n_micro` micro-batches computes."""
        return split_tokens(shard, n_micro, self.share_prompt, self.algorithm.rows_per_unit)

    def micro_loss(self, mb: TrainBatch, norm: Normaliser, sums: dict[str, float]) -> torch.Tensor:
        """This micro-batch's share of the global loss; adds its metrics to `sums`."""
        raise NotImplementedError

    def train_step(self, shard: TrainBatch, norm: Normaliser, n_micro: int) -> dict[str, float]:
        """One optimiser step over this rank's shard of a mini-batch.

        Each micro-batch loss is its share of the global loss (global counts in `norm`), times
        world_size because DeepSpeed averages gradients over ranks: the summed gradient equals
        the gradient of the unsharded loss.

        A non-finite loss on any rank, or a non-finite global gradient norm, skips the step on
        every rank: weights and optimiser state stay as they were, the gradients are dropped,
        and `skipped_metric` counts it.
        """
        self.engine.train()
        sums: dict[str, float] = defaultdict(float)
        parts = shard.split(n_micro, self.algorithm.rows_per_unit)
        for i, mb in enumerate(parts):
            self.engine.set_gradient_accumulation_boundary(i == len(parts) - 1)
            loss = self.micro_loss(mb.to(self.device), norm, sums)
            # A non-finite loss makes its gradient NaN (even where autograd would give a finite
            # one): the gradient reduction then carries it to every rank's norm check.
            self.engine.backward(loss * (self.world_size if torch.isfinite(loss.detach()) else math.nan))
        applied, grad_norm = self.optimiser_step()
        if grad_norm is not None:
            sums[self.grad_norm_metric] = float(grad_norm) / self.world_size  # summed over ranks later
        sums[self.skipped_metric] = 0.0 if applied else 1.0 / self.world_size
        return dict(sums)

    def optimiser_step(self) -> tuple[bool, float | None]:
        """`engine.step()` where the global gradient norm is finite: (applied, that norm).

        DeepSpeed's optimiser wrappers (ZeRO 1-3, bf16, fp16) take the global norm themselves
        and, when it is not finite, skip the update and clear the gradients (their fp16 overflow
        path). The bare torch AdamW of ZeRO 0 in float32 has no such path: here every rank
        agrees on the norm of the (all-reduced) gradients and, when it is not finite, drops
        them without calling the optimiser, counting the step as DeepSpeed's overflow path does."""
        import torch.distributed as dist

        engine = self.engine
        if hasattr(engine.optimizer, "overflow"):
            engine.step()
            return engine.was_step_applied(), engine.get_global_grad_norm()
        grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
        grad_norm = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
        finite = torch.tensor([float(math.isfinite(grad_norm))], device=self.device)
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if finite.item():
            engine.step()
            return True, grad_norm
        engine.zero_grad()
        engine.skipped_steps += 1
        engine.global_steps += 1
        engine.micro_steps += 1
        engine.global_samples += engine.train_batch_size()
        return False, grad_norm


class PolicyEngine(DeepSpeedModel):
    """The policy and the algorithm's loss."""

    def __init__(self, model, algorithm: Algorithm, config: dict, world_size: int,
                 temperature: float = 1.0, device: str | None = None, share_prompt: str = "auto"):
        super().__init__(model, algorithm, config, world_size, device, share_prompt)
        self.temperature = temperature

    @torch.no_grad()
    def logprobs(self, shard: TrainBatch, n_micro: int) -> torch.Tensor:
        """log π(response tokens) [B, R] with the current weights (same micro-batches as training)."""
        self.engine.eval()
        return torch.cat([response_logprobs(self.engine, mb.to(self.device), self.temperature,
                                            shares_prompt(mb, self.share_prompt)).cpu()
                          for mb in shard.split(n_micro, self.algorithm.rows_per_unit)])

    def micro_loss(self, mb: TrainBatch, norm: Normaliser, sums: dict[str, float]) -> torch.Tensor:
        logprobs, ent = response_token_stats(self.engine, mb, self.temperature, shares_prompt(mb, self.share_prompt),
                                             entropy=True)
        loss, metrics = self.algorithm.loss(mb, logprobs, norm)
        with torch.no_grad():
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
    skipped_metric = "train/critic_skipped_steps"
    tokens_metric = "perf/critic_tokens"

    @torch.no_grad()
    def values(self, shard: TrainBatch, n_micro: int) -> torch.Tensor:
        """V(s_t) [B, R] in the shard's row order (micro-batches formed by length, `arrange`)."""
        self.engine.eval()
        return in_micro_batches(lambda mb, share: response_values(self.engine, mb.to(self.device), share).cpu(),
                                shard, n_micro, self.share_prompt)

    def micro_loss(self, mb: TrainBatch, norm: Normaliser, sums: dict[str, float]) -> torch.Tensor:
        values = response_values(self.engine, mb, shares_prompt(mb, self.share_prompt))
        loss, metrics = self.algorithm.critic_loss(mb, values, norm)
        for k, v in metrics.items():
            sums[k] += float(v)
        return loss

    def named_weights(self) -> list[tuple[str, torch.Tensor]]:
        raise TypeError("the critic's weights are not exported")
