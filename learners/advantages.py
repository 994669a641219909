"""Advantage estimators as pure tensor functions."""
from __future__ import annotations

import torch

from core.ops import group_normalize


# GRPO's advantages: group-normalised sequence rewards (formula and shapes in `core.ops`); the
# reward normalisers use the same function, so both normalise alike.
group_normalized_advantages = group_normalize


def _last_valid_onehot(mask: torch.Tensor) -> torch.Tensor:
    """[B, T] float with a single 1 at each row's last valid position (all 0 for an empty row)."""
    positions = torch.arange(mask.shape[-1], device=mask.device)
    valid = mask > 0
    last = torch.where(valid, positions, -1).max(dim=-1).values
    return (positions == last.unsqueeze(-1)).to(mask.dtype) * valid.any(-1, keepdim=True)


def kl_penalized_token_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    mask: torch.Tensor,
    kl_coef: float,
) -> torch.Tensor:
    """Per-token rewards of RLHF-PPO: a k1 KL penalty on every token, the score on the last one.

        r_t = -kl_coef · (logprobs_t - ref_logprobs_t) · m_t  +  score · [t = last valid token]

    scores: [B]; logprobs, ref_logprobs, mask: [B, T] -> [B, T]. The KL term is dropped when
    `ref_logprobs` is None or kl_coef == 0; a row with an empty mask is all 0.
    As in InstructGPT (Ouyang et al. 2022), OpenRLHF `compute_reward` and TRL's PPO trainer.
    """
    rewards = scores.unsqueeze(-1).to(mask.dtype) * _last_valid_onehot(mask)
    if ref_logprobs is None or kl_coef == 0:
        return rewards
    return rewards - kl_coef * (logprobs - ref_logprobs) * mask


def gae(
    token_rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised Advantage Estimation (Schulman et al. 2016), one reverse sweep over T.

        δ_t = r_t + γ·V_{t+1}·m_{t+1} - V_t
        A_t = (δ_t + γλ·A_{t+1}) · m_t,        A_T = 0
        R_t = (A_t + V_t) · m_t                 (the critic's regression target)

    token_rewards, values, mask: [B, T], masks right-padded (a prefix of ones per row).
    Returns (advantages [B, T], returns [B, T]). The episode ends at the last valid token, so the
    value after it is 0; padded positions contribute nothing (their values are ignored) and get 0.
    """
    values = values * mask
    advantages = torch.zeros_like(values)
    next_adv = torch.zeros_like(values[:, 0])
    next_value = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[-1])):
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = (delta + gamma * lam * next_adv) * mask[:, t]
        advantages[:, t] = next_adv
        next_value = values[:, t]
    return advantages, (advantages + values) * mask


def whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Whiten over all valid tokens of the batch: (x - mean) / sqrt(var + eps).

        mean = Σ m·x / Σ m,   var = Σ m·(x - mean)² / (Σ m - 1)   (Bessel-corrected, as TRL / verl
        `masked_whiten`); shift_mean=False adds the mean back (only the scale changes).

    values, mask: [B, T] -> [B, T]; padded positions are 0. Fewer than two valid tokens: var = 0.
    """
    count = mask.sum()
    mean = (values * mask).sum() / count.clamp(min=1)
    centered = (values - mean) * mask
    var = (centered**2).sum() / (count - 1).clamp(min=1)
    whitened = centered * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean * mask
    return whitened


def discounted_returns(token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """Returns-to-go G_t = Σ_{s ≥ t, s valid} γ^{s-t} r_s, i.e. G_t = (r_t + γ·G_{t+1}) · m_t.

    token_rewards, mask: [B, T] (right-padded) -> [B, T]; padded positions are 0.
    REINFORCE++ (Hu 2025): token rewards = per-token KL penalty + score on the last token
    (`kl_penalized_token_rewards`), advantages = `whiten(discounted_returns(...), mask)` over the
    global batch.
    """
    returns = torch.zeros_like(token_rewards)
    running = torch.zeros_like(token_rewards[:, 0])
    for t in reversed(range(token_rewards.shape[-1])):
        running = (token_rewards[:, t] + gamma * running) * mask[:, t]
        returns[:, t] = running
    return returns
