"""Contract of every registered algorithm, parametrised over `learners.algos.registry.ALGORITHMS`.

Each algorithm builds from its recipe `recipes/<name>_arith.yaml`; its declared `needs()` are
consistent with each other and with the recipe's rewards; on a small synthetic step laid out as the
rollout actor lays it out (each prompt's rows together: its samples, then its greedy row when
`needs.greedy_sample`), `prepare` makes a batch of `train_rows(num_prompts)` rows in whole units,
`loss` (and `critic_loss`) are finite with finite gradients; and the losses of 2 data-parallel
shards (cut at `rows_per_unit`, each normalised by the global `normaliser`) sum to the global loss,
their gradients concatenate to the global gradient (shard invariance).

Nothing here branches on an algorithm's name: what the synthetic step carries (reference logprobs,
critic values, greedy rows, π_old) follows the declared needs. Each algorithm runs as its recipe
has it, and again with each set of optional config knobs in OPTIONAL_KNOBS that it has
(`is_correction`: π_old and importance weights, one set per mode; `kl_coef`: reference) switched on.
"""
from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from cluster.recipe import load_recipe
from core.protocol import RolloutTensors, TrainBatch
from learners.algos.base import Algorithm
from learners.algos.registry import ALGORITHMS, build_algorithm
from rewards.base import PairwiseReward
from rewards.registry import REWARDS
from rewards.self_judge import JUDGE_TERM
from tests.helpers import make_rollouts, make_scores

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
NUM_PROMPTS = 5  # odd: two shards get unequal numbers of units, and a pair split by a wrong unit shows
RESPONSE_LEN = 6  # longest response of the synthetic step
# Each set switched on, as far as the algorithm's config has its knobs. The caps and bands are
# tight, so that π_old's noise (`_batch`) truncates and masks some tokens and sequences.
OPTIONAL_KNOBS = [
    {"is_correction": "tis", "is_cap": 1.1, "kl_coef": 0.1},
    {"is_correction": "icepop", "is_band": "[0.85,1.2]"},
    {"is_correction": "seq_mask_tis", "is_cap": 1.1, "is_band": "[0.9,1.1]"},
]
LABELS = ("is_correction", "kl_coef")  # the knobs a variant's test id names


def _recipe(name: str) -> Path:
    return RECIPES / f"{name}_arith.yaml"


def _variants() -> list:
    out = []
    for name in ALGORITHMS:
        out.append(pytest.param(name, (), id=name))
        for knob_set in OPTIONAL_KNOBS:
            knobs = {k: v for k, v in knob_set.items() if k in ALGORITHMS[name].Config.model_fields}
            if knobs:
                label = "+".join(str(v) if k == "is_correction" else k for k, v in knobs.items() if k in LABELS)
                out.append(pytest.param(name, tuple(f"algo.{k}={v}" for k, v in knobs.items()), id=f"{name}+{label}"))
    return out


VARIANTS = _variants()


def _built(name: str, overrides=()) -> tuple:
    cfg = load_recipe(_recipe(name), list(overrides))
    return cfg, build_algorithm(cfg.algo)


def _step(algo: Algorithm, seed: int = 0):
    """Synthetic rollouts, scores and tensors for NUM_PROMPTS prompts, built from `algo.needs()`:
    ragged prompts and responses, distinct rewards, reference logprobs / critic values / greedy
    rows where declared."""
    needs = algo.needs()
    rng = np.random.default_rng(seed)
    per_prompt = needs.samples_per_prompt + int(needs.greedy_sample)
    group_ids = np.repeat(np.arange(NUM_PROMPTS), per_prompt)
    n = len(group_ids)
    prompts = [rng.integers(3, 50, size=rng.integers(1, 4)) for _ in range(NUM_PROMPTS)]
    lengths = rng.integers(1, RESPONSE_LEN + 1, size=n)
    lengths[0] = RESPONSE_LEN
    rollouts = make_rollouts(
        group_ids,
        prompt_ids=[prompts[g] for g in group_ids],
        response_ids=[rng.integers(3, 50, size=k) for k in lengths],
        rollout_logprobs=[-rng.uniform(0.05, 3.0, size=k).astype(np.float32) for k in lengths],
        response_texts=[f"response {i}" for i in range(n)],
        prompt_texts=[f"prompt {g}" for g in group_ids],
        answers=["7"] * n,
        greedy=np.tile(np.arange(per_prompt) == per_prompt - 1, NUM_PROMPTS) if needs.greedy_sample else None,
    )
    scores = make_scores(rng.permutation(n) / n + rng.uniform(0.0, 0.1, size=n))  # distinct: no ties
    if needs.judge is not None:  # mean self-judge scores: one prompt all ties, one unjudged response
        judged = rng.integers(0, 6, size=n).astype(float)
        judged[group_ids == 0] = 3.0
        judged[-1] = np.nan
        scores = replace(scores, terms={**scores.terms, JUDGE_TERM: judged})
    tensors = RolloutTensors.from_rollouts(rollouts, pad_id=0)
    g = torch.Generator().manual_seed(seed)
    mask = tensors.response_mask
    if needs.reference:
        tensors = replace(tensors, ref_logprobs=-(0.05 + 3.0 * torch.rand(mask.shape, generator=g)) * mask)
    if needs.critic:
        tensors = replace(tensors, values=torch.randn(mask.shape, generator=g) * mask)
    return rollouts, scores, tensors


def _batch(algo: Algorithm, seed: int = 0) -> TrainBatch:
    batch, _ = algo.prepare(*_step(algo, seed))
    if algo.needs().old_logprobs:  # the learner's π_old, recomputed before the update
        g = torch.Generator().manual_seed(seed + 1)
        noise = 0.2 * torch.randn(batch.response_mask.shape, generator=g)
        batch = replace(batch, old_logprobs=batch.rollout_logprobs + noise * batch.response_mask)
    return batch


def _logprobs(batch: TrainBatch, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 2)
    return (batch.rollout_logprobs + 0.3 * torch.randn(batch.response_mask.shape, generator=g)).requires_grad_()


def _critic_values(batch: TrainBatch, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 3)
    return torch.randn(batch.response_mask.shape, generator=g).requires_grad_()


def _row_tensors(batch: TrainBatch) -> dict[str, torch.Tensor]:
    out = {f.name: getattr(batch, f.name) for f in fields(batch) if f.name != "extras"}
    if batch.extras is not None:
        out.update({f"extras.{f.name}": getattr(batch.extras, f.name) for f in fields(batch.extras)})
    return {k: v for k, v in out.items() if v is not None}


# ---------------------------------------------------------------- (a) builds from its recipe


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_builds_from_its_recipe(name):
    assert _recipe(name).is_file(), f"{name}: no recipe {_recipe(name).relative_to(RECIPES.parent)}"
    cfg, algo = _built(name)
    assert cfg.algo.name == name and isinstance(cfg.algo, ALGORITHMS[name].Config)
    assert type(algo) is ALGORITHMS[name]


# ---------------------------------------------------------------- (b) declared needs


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_declared_needs_are_consistent(name):
    cfg, algo = _built(name)
    needs = algo.needs()
    assert needs.samples_per_prompt >= 1
    assert algo.rows_per_unit in (1, 2)
    for p in (1, 3, NUM_PROMPTS):
        rows = algo.train_rows(p)
        # whole units, at most every sample (greedy rows are a baseline, never trained on)
        assert rows >= 1 and rows % algo.rows_per_unit == 0 and rows <= p * needs.samples_per_prompt
    if needs.pairs:
        assert needs.samples_per_prompt == 2
        # a pair trained on both rows is one unit (a shard never splits it); else one row per pair
        assert algo.rows_per_unit == 2 or algo.train_rows(NUM_PROMPTS) == NUM_PROMPTS
    if algo.rows_per_unit == 2:  # a pair of responses trained together: sampled as one, or picked by a judge
        assert needs.pairs or needs.judge is not None
    if needs.mixture_sampling:
        # the rollout actor draws one policy and one mixture sample per prompt: a pair
        assert needs.pairs and 0.0 <= needs.mixture_coef <= 1.0
        assert 0.0 <= algo.mixture_coef(0) <= 1.0 and 0.0 <= algo.mixture_coef(100) <= 1.0
    if needs.greedy_sample:
        # the greedy row follows each prompt's samples; pair / mixture layouts have no room for it
        assert not needs.pairs and not needs.mixture_sampling
    if needs.critic:
        assert type(algo).critic_loss is not Algorithm.critic_loss, f"{name} declares a critic but no critic_loss"
    for i, term in enumerate(cfg.rewards):
        if issubclass(REWARDS[term.name], PairwiseReward):
            assert needs.pairs, f"{name}: recipe rewards.{i} ({term.name}) is pairwise but {name} trains on single samples"


# ---------------------------------------------------------------- (c) prepare and loss


@pytest.mark.parametrize("name,overrides", VARIANTS)
def test_prepare_makes_the_declared_batch(name, overrides):
    _, algo = _built(name, overrides)
    rollouts, scores, tensors = _step(algo)
    before = _row_tensors(tensors.probe())
    batch, metrics = algo.prepare(rollouts, scores, tensors)
    assert isinstance(batch, TrainBatch)
    assert len(batch) == algo.train_rows(NUM_PROMPTS)
    assert len(batch) % algo.rows_per_unit == 0
    for key, t in _row_tensors(batch).items():
        assert t.shape[0] == len(batch), f"{key} has {t.shape[0]} rows, the batch {len(batch)}"
    assert batch.response_mask.shape == (len(batch), tensors.response_mask.shape[1])
    assert batch.advantages.shape in ((len(batch),), batch.response_mask.shape)
    assert torch.isfinite(batch.advantages).all()
    if algo.needs().reference:
        assert batch.ref_logprobs is not None
    assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
    # contracts are frozen: prepare made a new object and left its inputs alone
    for key, t in _row_tensors(tensors.probe()).items():
        assert torch.equal(t, before[key]), f"prepare changed the input's {key}"


@pytest.mark.parametrize("name,overrides", VARIANTS)
def test_loss_is_a_finite_scalar_with_a_finite_gradient(name, overrides):
    cfg, algo = _built(name, overrides)
    batch = _batch(algo)
    norm = algo.normaliser(batch, cfg.rollout.max_new_tokens)
    logprobs = _logprobs(batch)
    loss, metrics = algo.loss(batch, logprobs, norm)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in metrics.values()), metrics
    # OPTIONAL_KNOBS' caps and bands bite: some tokens (sequences) are truncated or masked, not all
    assert all(0 < v < 1 for k, v in metrics.items() if k.startswith("train/is_") and k.endswith("_frac")), metrics
    (grad,) = torch.autograd.grad(loss, logprobs)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert (grad[batch.response_mask == 0] == 0).all(), "padding got a gradient"
    if algo.needs().critic:
        values = _critic_values(batch)
        closs, cmetrics = algo.critic_loss(batch, values, norm)
        assert closs.dim() == 0 and torch.isfinite(closs)
        assert all(torch.isfinite(torch.as_tensor(v)).all() for v in cmetrics.values()), cmetrics
        (cgrad,) = torch.autograd.grad(closs, values)
        assert torch.isfinite(cgrad).all() and cgrad.abs().sum() > 0
        assert (cgrad[batch.response_mask == 0] == 0).all(), "padding got a critic gradient"


# ---------------------------------------------------------------- (d) shard invariance


def _sharded(loss_fn, batch: TrainBatch, inputs: torch.Tensor, unit: int, world_size: int = 2):
    """Each rank's loss on its contiguous shard, and the gradient wrt its rows of `inputs`."""
    losses, grads, start = [], [], 0
    for rank in range(world_size):
        shard = batch.shard(rank, world_size, unit)
        stop = start + len(shard)
        assert len(shard) > 0 and len(shard) % unit == 0
        assert torch.equal(shard.input_ids, batch.input_ids[start:stop])
        x = inputs.detach()[start:stop].clone().requires_grad_()
        loss, _ = loss_fn(shard, x)
        losses.append(loss)
        grads.append(torch.autograd.grad(loss, x)[0])
        start = stop
    assert start == len(batch)
    return sum(losses), torch.cat(grads)


@pytest.mark.parametrize("name,overrides", VARIANTS)
def test_two_shards_sum_to_the_global_loss_and_gradient(name, overrides):
    cfg, algo = _built(name, overrides)
    batch = _batch(algo)
    norm = algo.normaliser(batch, cfg.rollout.max_new_tokens)  # global counts, before sharding
    logprobs = _logprobs(batch)
    global_loss, _ = algo.loss(batch, logprobs, norm)
    (global_grad,) = torch.autograd.grad(global_loss, logprobs)
    shard_loss, shard_grad = _sharded(lambda b, lp: algo.loss(b, lp, norm), batch, logprobs, algo.rows_per_unit)
    assert_close(shard_loss, global_loss)
    assert_close(shard_grad, global_grad)
    if algo.needs().critic:
        values = _critic_values(batch)
        global_closs, _ = algo.critic_loss(batch, values, norm)
        (global_cgrad,) = torch.autograd.grad(global_closs, values)
        shard_closs, shard_cgrad = _sharded(lambda b, v: algo.critic_loss(b, v, norm), batch, values,
                                            algo.rows_per_unit)
        assert_close(shard_closs, global_closs)
        assert_close(shard_cgrad, global_cgrad)
