"""Shared-prompt packing (learners/packing.py): the layout by hand, the token counts by hand, and on
a tiny random Llama the packed path's logprobs, GRPO loss, gradients, reference logprobs and
critic values against the unshared path, on ragged groups cut across micro-batches and ranks."""
from collections import defaultdict
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from core.protocol import RolloutTensors, TrainBatch
from learners.packing import length_order, pack, prompt_runs, shares_prompt, tokens_computed
from tests.helpers import make_rollouts


def _hand_batch() -> TrainBatch:
    """Prompt A = [11, 12] answered by [31, 32, 33] and [41]; prompt B = [21, 22, 23] by [51, 52].
    P = 3, R = 3: input_ids [3, 6]."""
    ro = make_rollouts([0, 0, 1], prompt_ids=[[11, 12], [11, 12], [21, 22, 23]],
                       response_ids=[[31, 32, 33], [41], [51, 52]], rollout_logprobs=[[0.0] * 3, [0.0], [0.0] * 2])
    return RolloutTensors.from_rollouts(ro, pad_id=0).probe()


def test_pack_lays_out_one_prompt_per_group_and_gathers_each_prediction():
    batch = _hand_batch()
    assert batch.input_ids.tolist() == [[0, 11, 12, 31, 32, 33], [0, 11, 12, 41, 0, 0], [21, 22, 23, 51, 52, 0]]
    packed = pack(batch)
    # P' = 3 (prompt B), S = max(3 + 1, 2) = 4: two packed rows of 7 instead of three of 6
    assert packed.prompt_width == 3 and packed.response_width == 4 and packed.tokens == 14
    assert packed.input_ids.tolist() == [[0, 11, 12, 31, 32, 33, 41], [21, 22, 23, 51, 52, 0, 0]]
    # positions restart after the prompt for every response: [41] is at 2, like 31
    assert packed.position_ids.tolist() == [[0, 0, 1, 2, 3, 4, 2], [0, 1, 2, 3, 4, 0, 0]]
    sees = packed.sees[:, 0].int().tolist()
    assert sees[0][6] == [0, 1, 1, 0, 0, 0, 1]  # 41 sees the prompt and itself, not 31 32 33
    assert sees[0][4] == [0, 1, 1, 1, 1, 0, 0]  # 32 sees the prompt, 31 and itself
    assert sees[0][0] == [1, 0, 0, 0, 0, 0, 0]  # a pad column sees itself only
    assert sees[1][5] == [0, 0, 0, 0, 0, 1, 0]
    # kept column j sits at P' - 1 + j: 31, 41 and 51 are predicted by their prompt's last
    # token (j = 0); 32 by 31 (j = 1), 33 by 32 (j = 2), 52 by 51 (j = 1); the rest is padding
    assert packed.row.tolist() == [[0, 0, 0], [0, 0, 0], [1, 1, 1]]
    assert packed.col.tolist() == [[0, 1, 2], [0, 0, 0], [0, 1, 0]]


def test_runs_order_and_token_counts_by_hand():
    batch = _hand_batch()
    assert prompt_runs(batch) == [(0, 2), (2, 3)]
    assert shares_prompt(batch, "auto") and not shares_prompt(batch.select(slice(1, 3)), "auto")
    with pytest.raises(ValueError, match="share_prompt must be one of"):
        shares_prompt(batch, "yes")
    # packed sizes: A 2 + 3 + 1 = 6, B 3 + 2 = 5: A first
    assert length_order(batch).tolist() == [0, 1, 2]
    assert length_order(batch.select(torch.tensor([2, 0, 1]))).tolist() == [1, 2, 0]
    # unshared: every row at the full width P + R = 6
    assert tokens_computed(batch, 1, "off") == 18
    assert tokens_computed(batch, 1, "on") == 14  # pack() above
    # two micro-batches [0] | [1, 2]: on: 1 · (2 + 3) + 2 · (3 + 2) = 15; auto: neither shares a
    # prompt, so both run unshared at the batch's width, 1 · 6 + 2 · 6 = 18
    assert tokens_computed(batch, 2, "on") == 15
    assert tokens_computed(batch, 2, "auto") == 18


def test_length_order_never_cuts_a_unit():
    # prompts X X | Y Z (unit 2): the run of Z starts inside a pair, so it stays with Y
    ro = make_rollouts([0, 0, 1, 2], prompt_ids=[[1], [1], [2], [3, 3, 3, 3]], response_ids=[[5]] * 4,
                       rollout_logprobs=[[0.0]] * 4)
    batch = RolloutTensors.from_rollouts(ro, pad_id=0).probe()
    assert length_order(batch, unit=1).tolist() == [3, 0, 1, 2]  # Z (4 + 1) > X (1 + 2) > Y (1 + 1)
    assert length_order(batch, unit=2).tolist() == [2, 3, 0, 1]  # blocks X X (3) and Y Z (2 + 5 = 7)


# ---------------------------------------------------------------- the tiny model


def _ragged_tensors(seed: int = 0) -> RolloutTensors:
    """Groups of 3, 1, 4 and 2 samples; prompts of 7, 4, 9 and 4 tokens (the last repeats the
    second, not adjacent to it); responses of 1 to 8 tokens."""
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(5, 200, n) for n in (7, 4, 9)]
    prompts.append(prompts[1])
    rows = [(g, prompts[g], rng.integers(5, 200, rng.integers(1, 9))) for g, k in enumerate((3, 1, 4, 2))
            for _ in range(k)]
    ro = make_rollouts([g for g, _, _ in rows], prompt_ids=[p for _, p, _ in rows], response_ids=[r for _, _, r in rows],
                       rollout_logprobs=[-rng.random(len(r)) for _, _, r in rows])
    return RolloutTensors.from_rollouts(ro, pad_id=0)


def _grpo_batch() -> TrainBatch:
    tensors = _ragged_tensors()
    g = torch.Generator().manual_seed(1)
    b, r = tensors.response_mask.shape
    return TrainBatch(input_ids=tensors.input_ids, attention_mask=tensors.attention_mask,
                      response_mask=tensors.response_mask,
                      rollout_logprobs=tensors.rollout_logprobs - 5.0 + 0.3 * torch.randn(b, r, generator=g),
                      advantages=torch.randn(b, generator=g), ref_logprobs=-5.0 - torch.rand(b, r, generator=g))


def _bare(cls, model, algorithm, mode: str, **attrs):
    """An engine of class `cls` over a bare model (no DeepSpeed): its `logprobs`, `values` and
    `micro_loss` run as they do on a rank."""
    engine = cls.__new__(cls)
    engine.__dict__.update(engine=model, algorithm=algorithm, world_size=1, device="cpu", share_prompt=mode, **attrs)
    return engine


def _grads(model) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    return grads


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def policy(request, tiny_model_path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_path, attn_implementation=request.param)


def test_shared_logprobs_equal_the_unshared_ones(policy):
    from learners.engine import response_logprobs

    batch = _grpo_batch()
    assert [b - a for a, b in prompt_runs(batch)] == [3, 1, 4, 2]
    mask = batch.response_mask
    with torch.no_grad():
        unshared = response_logprobs(policy, batch, temperature=0.7)
        shared = response_logprobs(policy, batch, temperature=0.7, share_prompt=True)
    assert_close(shared * mask, unshared * mask)


def test_grpo_loss_gradients_and_metrics_over_ranks_and_micro_batches_equal_the_unshared_batch(policy):
    """Two simulated ranks, three micro-batches each cut from the rows `arrange` ordered (groups
    cut across ranks and micro-batches): the summed loss, metrics and gradient equal one
    unshared forward over the whole batch."""
    from learners.algos.grpo import GRPO, GRPOConfig
    from learners.engine import PolicyEngine

    algo = GRPO(GRPOConfig(kl_coef=0.1, clip_eps=0.2))
    batch = _grpo_batch()
    norm = algo.normaliser(batch, max_new_tokens=8)
    policy.train()
    unshared = _bare(PolicyEngine, policy, algo, "off", temperature=0.7)
    want_sums: dict[str, float] = defaultdict(float)
    want_loss = unshared.micro_loss(batch, norm, want_sums)
    want_loss.backward()
    want_grads = _grads(policy)

    shared = _bare(PolicyEngine, policy, algo, "auto", temperature=0.7)
    sums: dict[str, float] = defaultdict(float)
    total = 0.0
    for rank in range(2):
        for mb in shared.arrange(batch.shard(rank, 2)).split(3):
            loss = shared.micro_loss(mb, norm, sums)
            loss.backward()
            total = total + loss.detach()
    assert_close(total, want_loss.detach())
    assert sums.keys() == want_sums.keys()  # entropy, mismatch, loss, policy loss, clip fraction, KL
    assert_close(torch.tensor([sums[k] for k in want_sums]), torch.tensor(list(want_sums.values())))
    for name, grad in _grads(policy).items():
        assert_close(grad, want_grads[name], msg=name)


def test_old_logprobs_follow_the_arranged_shard(policy):
    from learners.algos.grpo import GRPO, GRPOConfig
    from learners.engine import PolicyEngine, response_logprobs

    batch = _grpo_batch()
    engine = _bare(PolicyEngine, policy, GRPO(GRPOConfig()), "on", temperature=1.0)
    arranged = engine.arrange(batch)
    assert arranged.input_ids.tolist() != batch.input_ids.tolist()  # rows did move
    with torch.no_grad():
        want = response_logprobs(policy, arranged)
    mask = arranged.response_mask
    assert_close(engine.logprobs(arranged, 3) * mask, want * mask)


def test_reference_actor_shares_prompts_and_counts_tokens(tiny_model_path):
    from actors.reference import ReferenceActor

    batch = _grpo_batch()
    off = ReferenceActor(tiny_model_path, "float32", micro_batch_size=3, temperature=0.7, share_prompt="off")
    on = ReferenceActor(tiny_model_path, "float32", micro_batch_size=3, temperature=0.7, share_prompt="on")
    (want, want_tokens), (got, tokens) = off.logprobs(batch), on.logprobs(batch)
    mask = batch.response_mask
    assert_close(got * mask, want * mask)  # rows back in the batch's order
    assert want_tokens == batch.input_ids.numel()
    assert tokens == tokens_computed(batch, 4, "on") < want_tokens  # ceil(10 / 3) = 4 micro-batches


def test_critic_values_and_value_loss_gradients_equal_the_unshared_ones(tiny_model_path):
    from core.models import load_value_model
    from learners.algos.ppo import PPO, PPOConfig, PPOExtras
    from learners.engine import CriticEngine

    critic = load_value_model(tiny_model_path)
    head = critic.score if hasattr(critic, "score") else critic.classifier
    torch.nn.init.normal_(head.weight, std=0.5, generator=torch.Generator().manual_seed(0))  # not V ≡ 0
    algo = PPO(PPOConfig(value_clip=0.2))
    batch = _grpo_batch()
    g = torch.Generator().manual_seed(2)
    shape = batch.response_mask.shape
    batch = replace(batch, extras=PPOExtras(returns=torch.randn(shape, generator=g),
                                            old_values=torch.randn(shape, generator=g)))
    mask = batch.response_mask
    off, on = _bare(CriticEngine, critic, algo, "off"), _bare(CriticEngine, critic, algo, "auto")
    assert_close(on.values(batch, 3) * mask, off.values(batch, 3) * mask)

    norm = algo.normaliser(batch, 8)  # eval mode: the token-classification head's dropout is random
    want_sums: dict[str, float] = defaultdict(float)
    want_loss = off.micro_loss(batch, norm, want_sums)
    want_loss.backward()
    want_grads = _grads(critic)
    sums: dict[str, float] = defaultdict(float)
    total = sum(on.micro_loss(mb, norm, sums) for mb in on.arrange(batch).split(4))
    total.backward()
    assert_close(total.detach(), want_loss.detach())
    assert_close(torch.tensor([sums[k] for k in want_sums]), torch.tensor(list(want_sums.values())))
    for name, grad in _grads(critic).items():
        assert_close(grad, want_grads[name], msg=name)
