"""The implicit reward β·(log π − log π_ref): a reward read off a language model's logprobs.

Taxonomy: basis judge/self (a language model is the reward model), format scalar, expression
implicit, granularity token. π is a model trained for the preference or outcome (a DPO
checkpoint, PRIME's implicit process reward model) and π_ref the model it was trained from; the
reward actor runs both over the sampled token ids and returns the per-token values (dense token
rewards for PPO / REINFORCE++) and their sum (the sequence value every algorithm sees).

Shapes: B sequences, T response positions; `mask` is the response mask [B, T] (1 for generated
tokens, 0 for padding). No Ray, vLLM or DeepSpeed here (layering rule, tests/unit/test_layering.py).
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from rewards.base import Basis, Expression, Format, Granularity, Reward, RewardConfig, Sample, Taxonomy


def implicit_token_rewards(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, beta: float
) -> torch.Tensor:
    """Per-token implicit reward, [B, T] x [B, T] x [B, T] -> [B, T].

        r_t = β · (log π(y_t | x, y_<t) − log π_ref(y_t | x, y_<t))   where mask_t = 1
        r_t = 0                                                       where mask_t = 0

    The dense reward of DPO's token-level reading (Rafailov et al. 2024, "From r to Q*") and of
    PRIME's implicit process reward model (Cui et al. 2025; Yuan et al. 2024, "Free process
    rewards without process labels"), where π is a model trained with outcome labels only.
    Their sum over a response, the term's sequence value, is DPO's implicit reward
    β·log π(y | x)/π_ref(y | x) (Rafailov et al. 2023, eq. 5) without β·log Z(x), which depends on
    the prompt only and cancels in pairwise preferences and group-centred advantages.
    Padding positions are 0 even when their logprobs are ±inf or NaN (selected, not multiplied).
    Gradients flow if the inputs carry them: pass detached logprobs to use this as a reward.
    """
    diff = beta * (logprobs - ref_logprobs)
    return torch.where(mask.bool(), diff, torch.zeros_like(diff))


class ImplicitConfig(RewardConfig):
    model: str  # π: a local checkpoint directory (e.g. a DPO-trained policy), or "default"
    reference: str  # π_ref: the model π was trained from
    beta: float = Field(0.05, gt=0)
    batch_size: int = Field(8, ge=1)
    dtype: Literal["float32", "bfloat16"] = "float32"


class TokenIdsReward(Reward):
    """A reward computed on the sampled token ids, batched: `token_values` gives each response's
    per-token values, whose sum is its sequence value. The reward actor calls it once per
    batch; `score` serves one text sample (tokenised with the reward's own tokenizer)."""

    def token_values(self, prompt_ids: list, response_ids: list) -> list[np.ndarray]:
        raise NotImplementedError


class Implicit(TokenIdsReward):
    Config = ImplicitConfig
    taxonomy = Taxonomy(Basis.JUDGE, Format.SCALAR, Expression.IMPLICIT, Granularity.TOKEN)
    summary = "β·(log π − log π_ref) per token from two local models (DPO / PRIME implicit reward)"
    heavy_example = True

    def __init__(self, cfg: ImplicitConfig):
        super().__init__(cfg)
        self._models = None  # loaded on first use, in the process that scores

    @classmethod
    def example_config(cls) -> ImplicitConfig:
        """Two tiny random models built locally (for the registry's contract test)."""
        from core.models import build_tiny_model, cache_dir

        return ImplicitConfig(model=str(build_tiny_model(cache_dir() / "tiny-llama-test")),
                              reference=str(build_tiny_model(cache_dir() / "tiny-llama-test-seed1", seed=1)))

    def _load(self):
        if self._models is None:
            from core.models import load_policy, load_tokenizer, resolve_model_path

            paths = [resolve_model_path(self.cfg.model, "implicit.model"),
                     resolve_model_path(self.cfg.reference, "implicit.reference")]
            self._models = ([load_policy(p, self.cfg.dtype).eval() for p in paths], load_tokenizer(paths[0]))
        return self._models

    @torch.no_grad()
    def token_values(self, prompt_ids: list, response_ids: list) -> list[np.ndarray]:
        """β·(log π − log π_ref) of every response token [T_i], in batches of `batch_size`."""
        from core.ops import pad_left, pad_right, position_ids, token_logprobs

        (policy, reference), tokenizer = self._load()
        out: list[np.ndarray] = []
        for lo in range(0, len(response_ids), self.cfg.batch_size):
            prompts, responses = prompt_ids[lo:lo + self.cfg.batch_size], response_ids[lo:lo + self.cfg.batch_size]
            lengths = [len(r) for r in responses]
            if max(lengths) == 0:
                out += [np.zeros(0) for _ in responses]
                continue
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # masked anyway
            resp = pad_right(responses, pad)
            mask = pad_right([np.ones(n) for n in lengths], 0, torch.float32, width=resp.shape[1])
            prompt_ids_t, prompt_mask = pad_left(prompts, pad)
            ids = torch.cat([prompt_ids_t, resp], dim=1)
            attn = torch.cat([prompt_mask, mask.long()], dim=1)
            logprobs = [token_logprobs(m(input_ids=ids, attention_mask=attn, position_ids=position_ids(attn), use_cache=False,
                                         logits_to_keep=resp.shape[1] + 1).logits[:, :-1].float(), resp)
                        for m in (policy, reference)]
            values = implicit_token_rewards(*logprobs, mask, self.cfg.beta)
            out += [values[i, :n].double().numpy() for i, n in enumerate(lengths)]
        return out

    def score(self, sample: Sample) -> float:
        _, tokenizer = self._load()
        ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in (sample.prompt, sample.response)]
        return float(self.token_values([ids[0]], [ids[1]])[0].sum())
