"""A non-finite loss or gradient skips the optimiser step (learners/engine.py `DeepSpeedModel.train_step`),
through the real DeepSpeed engine on one gloo rank (CPU accelerator) with the tiny random Llama."""
import math
import os

import pytest
import torch

from core.protocol import TrainBatch
from learners.algos.grpo import GRPO, GRPOConfig

B, P, R = 4, 3, 4  # rows, prompt tokens, response tokens


@pytest.fixture(scope="module")
def process_group():
    """One gloo rank (world size 1) for the module's engines; torch's group is torn down after."""
    import torch.distributed as dist

    from learners.engine import init_distributed
    from tests.helpers import free_port

    assert not dist.is_initialized(), "an earlier test left torch.distributed initialised in this process"
    with pytest.MonkeyPatch.context() as mp:
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            mp.setenv(key, os.environ.get(key, ""))  # restored after: init_distributed sets them
        mp.setenv("DS_ACCELERATOR", "cpu")
        init_distributed(0, 1, "127.0.0.1", free_port())
        yield
        dist.destroy_process_group()
        import deepspeed.comm.comm as ds_comm

        ds_comm.cdb = None  # DeepSpeed's handle on the destroyed group: a later in-process vLLM makes its own


def _engine(model_path: str, zero_stage: int, world_size: int = 1):
    from core.models import load_policy
    from learners.engine import PolicyEngine, ds_config

    torch.manual_seed(0)
    algo = GRPO(GRPOConfig(group_size=2, lr=1e-2))
    config = ds_config(1e-2, zero_stage, grad_clip=1.0, weight_decay=0.01, dtype="float32")
    return PolicyEngine(load_policy(model_path, "float32"), algo, config, world_size)


def _batch(vocab: int, seed: int, advantages=None, rollout_logprobs=None) -> TrainBatch:
    g = torch.Generator().manual_seed(seed)
    return TrainBatch(
        input_ids=torch.randint(0, vocab, (B, P + R), generator=g),
        attention_mask=torch.ones(B, P + R, dtype=torch.long),
        response_mask=torch.ones(B, R),
        rollout_logprobs=-torch.rand(B, R, generator=g) - 5 if rollout_logprobs is None else rollout_logprobs,
        advantages=torch.tensor([1.0, -1.0, 0.5, -0.5]) if advantages is None else advantages,
    )


def _step(engine, batch: TrainBatch, n_micro: int = 2) -> dict[str, float]:
    return engine.train_step(batch, engine.algorithm.normaliser(batch, R), n_micro)


def _snapshot(engine) -> dict[str, torch.Tensor]:
    """Full weights, the optimiser's own (fp32, maybe partitioned) parameters and every state
    tensor of the torch AdamW inside DeepSpeed (exp_avg, exp_avg_sq, step)."""
    out = {f"weight/{name}": t.clone() for name, t in engine.named_weights()}
    # By its state: ZeRO-3 puts a sub-group's flat parameter in the param groups only for its step.
    for i, (p, state) in enumerate(engine.engine.basic_optimizer.state.items()):
        out[f"param/{i}"] = p.detach().clone()
        for key, value in state.items():
            out[f"state/{i}/{key}"] = torch.as_tensor(value).clone()
    return out


def _assert_identical(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key


def _changed(before: dict, after: dict, prefix: str) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))


def _poison_gradient(engine) -> torch.utils.hooks.RemovableHandle:
    """Every gradient of the first weight becomes inf, whatever the loss."""
    first = next(p for p in engine.engine.module.parameters() if p.requires_grad)
    return first.register_hook(lambda grad: torch.full_like(grad, math.inf))


@pytest.mark.parametrize("zero_stage", [0, 1, 2, 3])
def test_a_nonfinite_loss_or_gradient_skips_the_step_and_the_next_step_trains(process_group, tiny_model_path,
                                                                             zero_stage):
    engine = _engine(tiny_model_path, zero_stage)
    vocab = engine.engine.module.config.vocab_size
    metrics = _step(engine, _batch(vocab, seed=0))  # a finite step first: AdamW has moments and a step count
    assert metrics["train/skipped_steps"] == 0.0 and math.isfinite(metrics["train/grad_norm"])
    before = _snapshot(engine)
    assert before["state/0/step"] == 1

    # A NaN advantage in the second micro-batch: the loss of that micro-batch is NaN.
    metrics = _step(engine, _batch(vocab, seed=1, advantages=torch.tensor([1.0, -1.0, math.nan, -0.5])))
    assert metrics["train/skipped_steps"] == 1.0
    assert math.isnan(metrics["loss/total"])
    _assert_identical(before, _snapshot(engine))

    # An inf rollout logprob with a negative advantage: ρ = π/π_rollout = inf, the loss is inf.
    lp = -torch.rand(B, R) - 5
    lp[1, 2] = -math.inf
    metrics = _step(engine, _batch(vocab, seed=2, rollout_logprobs=lp), n_micro=1)
    assert metrics["train/skipped_steps"] == 1.0 and not math.isfinite(metrics["loss/total"])
    _assert_identical(before, _snapshot(engine))

    # A finite loss whose gradient is not: only the gradient norm can tell.
    handle = _poison_gradient(engine)
    metrics = _step(engine, _batch(vocab, seed=3))
    handle.remove()
    assert math.isfinite(metrics["loss/total"])
    assert metrics["train/skipped_steps"] == 1.0 and not math.isfinite(metrics["train/grad_norm"])
    _assert_identical(before, _snapshot(engine))

    # DeepSpeed's counters agree (as its own skipped steps count), and the next finite step trains as usual.
    assert (engine.engine.skipped_steps, engine.engine.global_steps, engine.engine.micro_steps) == (3, 4, 4)
    metrics = _step(engine, _batch(vocab, seed=4))
    after = _snapshot(engine)
    assert metrics["train/skipped_steps"] == 0.0 and math.isfinite(metrics["loss/total"])
    assert _changed(before, after, "weight/") and _changed(before, after, "state/")
    assert after["state/0/step"] == 2
    assert all(torch.isfinite(t).all() for t in after.values())


def _two_ranks(rank: int, port: int, model_path: str) -> None:
    """One of two gloo ranks: only rank 1's shard has a NaN advantage; both must skip alike (ZeRO
    0-3 each), or the ranks' weights and the next step's collectives part ways."""
    os.environ["DS_ACCELERATOR"] = "cpu"
    torch.set_num_threads(1)
    from learners.engine import init_distributed

    init_distributed(rank, 2, "127.0.0.1", port)
    for zero_stage in (0, 2, 3):
        engine = _engine(model_path, zero_stage, world_size=2)
        vocab = engine.engine.module.config.vocab_size
        _step(engine, _batch(vocab, seed=rank))
        before = _snapshot(engine)
        nan_on_rank_1 = torch.tensor([1.0, -1.0, math.nan if rank == 1 else 0.5, -0.5])
        metrics = _step(engine, _batch(vocab, seed=10 + rank, advantages=nan_on_rank_1))
        assert metrics["train/skipped_steps"] == 0.5, (zero_stage, rank, metrics)  # 1/world_size, summed later
        _assert_identical(before, _snapshot(engine))
        metrics = _step(engine, _batch(vocab, seed=20 + rank))
        assert metrics["train/skipped_steps"] == 0.0 and _changed(before, _snapshot(engine), "weight/")
    # Both ranks leave together: a rank that exits while the other is still in gloo's last exchange
    # closes its sockets under it, and gloo aborts that process (SIGABRT).
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()


def test_every_rank_skips_when_one_rank_has_a_nonfinite_loss(tiny_model_path):
    import torch.multiprocessing as mp

    from tests.helpers import free_port

    mp.spawn(_two_ranks, args=(free_port(), tiny_model_path), nprocs=2, join=True)
