"""Policy-gradient losses, KL estimators and loss aggregation as pure tensor functions.

Shapes: B sequences, T response positions. `mask` is the response mask [B, T] (1 for generated
tokens, 0 for padding). Per-token functions return [B, T]; `aggregate` reduces to a scalar.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from core.ops import masked_sum


def clipped_surrogate(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    clip_low: float,
    clip_high: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate per token (Schulman et al. 2017), asymmetric clip as in DAPO.

        ρ = exp(logprobs - old_logprobs)
        L = -min(ρ·A, clip(ρ, 1 - clip_low, 1 + clip_high)·A)

    logprobs, old_logprobs: [B, T]; advantages: [B] (sequence-level, broadcast over T) or [B, T].
    Returns (loss [B, T], clipped [B, T] as float: 1 where the clipped term was the one taken).
    """
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1)
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * advantages
    loss = -torch.minimum(unclipped, clipped)
    return loss, (clipped < unclipped).float()


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(π || π_ref) per token (Schulman 2020, "Approximating KL divergence").

        d = ref_logprobs - logprobs;   k3 = exp(d) - d - 1   (≥ 0, unbiased for samples of π)
    [B, T] -> [B, T]
    """
    d = ref_logprobs - logprobs
    return torch.exp(d) - d - 1.0


@dataclass(frozen=True)
class Normaliser:
    """Global counts of the batch one optimiser step sees, summed over ranks and micro-batches.

    Passing them into every micro-batch's loss makes the summed gradient equal to the gradient
    of the loss over the whole batch, whatever the sharding (shard invariance).
    """

    num_tokens: int
    num_seqs: int
    constant: float = 1.0


AGGREGATIONS = ("token_mean", "seq_mean", "constant")


def aggregate(values: torch.Tensor, mask: torch.Tensor, mode: str, norm: Normaliser) -> torch.Tensor:
    """Reduce per-token values [B, T] to the scalar this shard contributes to the global loss.

        token_mean: Σ_{b,t} m·x / N_tokens                      (DAPO; token-level)
        seq_mean:   Σ_b (Σ_t m·x / Σ_t m) / N_seqs              (original GRPO)
        constant:   Σ_{b,t} m·x / (N_seqs · C)                  (Dr.GRPO, C = max new tokens)

    N_tokens, N_seqs and C come from `norm`, counted over the global batch, so summing this
    value over shards gives the loss of the unsharded batch.
    """
    if mode == "token_mean":
        return masked_sum(values, mask) / max(norm.num_tokens, 1)
    if mode == "seq_mean":
        per_seq = masked_sum(values, mask, dim=-1) / mask.sum(-1).clamp(min=1)
        return per_seq.sum() / max(norm.num_seqs, 1)
    if mode == "constant":
        return masked_sum(values, mask) / (max(norm.num_seqs, 1) * norm.constant)
    raise ValueError(f"loss aggregation must be one of {AGGREGATIONS}, got {mode!r}")


def truncated_is_weights(
    log_ratio: torch.Tensor, mask: torch.Tensor, cap: float, band: tuple[float, float], norm: Normaliser
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Truncated importance sampling (Yao et al. 2025, "Your efficient RL framework secretly
    brings you off-policy RL training"):   w_t = min(r_t, C).

    log_ratio log r: [B, T]; returns (w [B, T], {train/is_truncated_frac: token mean of [r_t > C]}).
    `band` is unused (one signature for every mode).
    """
    ratio = torch.exp(log_ratio)
    return ratio.clamp(max=cap), {"train/is_truncated_frac": aggregate((ratio > cap).float(), mask, "token_mean", norm)}


def icepop_weights(
    log_ratio: torch.Tensor, mask: torch.Tensor, cap: float, band: tuple[float, float], norm: Normaliser
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """IcePop token masking (Ling Team 2025, "Every Step Evolves: Scaling Reinforcement Learning
    for Trillion-Scale Thinking Model", Ring-1T):   w_t = M(r_t) = r_t if low ≤ r_t ≤ high else 0.

    Tokens whose engines disagree too much get no gradient; the others are importance-weighted.
    log_ratio log r: [B, T]; returns (w [B, T], {train/is_masked_frac: token mean of [r_t ∉ band]}).
    `cap` is unused.
    """
    low, high = band
    ratio = torch.exp(log_ratio)
    keep = (ratio >= low) & (ratio <= high)
    weights = torch.where(keep, ratio, torch.zeros_like(ratio))  # not ratio·keep: r = inf gives 0, not NaN
    return weights, {"train/is_masked_frac": aggregate((~keep).float(), mask, "token_mean", norm)}


def seq_mask_tis_weights(
    log_ratio: torch.Tensor, mask: torch.Tensor, cap: float, band: tuple[float, float], norm: Normaliser
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sequence-level masking, then token-level truncation (the geometric-mean rejection of
    Liu et al. 2025, "When speed kills stability: demystifying RL collapse from the
    training-inference mismatch", combined with TIS):

        g_b = exp(Σ_t m·log r_t / Σ_t m)                    geometric mean over b's response
        w_t = [low ≤ g_b ≤ high] · min(r_t, C)

    log_ratio log r: [B, T] -> (w [B, T], {train/is_seq_masked_frac: sequences with g_b ∉ band / N_seqs,
    train/is_truncated_frac: token mean of [r_t > C] over the kept sequences}).
    A sequence with no response tokens has g = 1 (kept).
    """
    low, high = band
    geo = torch.exp(masked_sum(log_ratio, mask, dim=-1) / mask.sum(-1).clamp(min=1))
    keep = ((geo >= low) & (geo <= high)).unsqueeze(-1).float()  # [B, 1]
    ratio = torch.exp(log_ratio)
    seq_masked = (1.0 - keep).expand_as(mask)
    return keep * ratio.clamp(max=cap), {
        "train/is_seq_masked_frac": aggregate(seq_masked, mask, "seq_mean", norm),
        "train/is_truncated_frac": aggregate(keep * (ratio > cap).float(), mask, "token_mean", norm)}


IS_CORRECTIONS = {"tis": truncated_is_weights, "icepop": icepop_weights, "seq_mask_tis": seq_mask_tis_weights}


def importance_weights(
    old_logprobs: torch.Tensor, rollout_logprobs: torch.Tensor, mask: torch.Tensor, mode: str,
    cap: float, band: tuple[float, float], norm: Normaliser,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token weights correcting the rollout engine's mismatch and staleness (no gradient).

        r_t = π_old(y_t) / π_rollout(y_t) = exp(old_logprobs − rollout_logprobs)
        none:          w_t = 1
        tis:           w_t = min(r_t, C)                                   (`truncated_is_weights`)
        icepop:        w_t = r_t · [low ≤ r_t ≤ high]                      (`icepop_weights`)
        seq_mask_tis:  w_t = [low ≤ (Π_t r_t)^(1/|y|) ≤ high] · min(r_t, C) (`seq_mask_tis_weights`)

    old_logprobs (the learner's π_old before the update), rollout_logprobs, mask: [B, T];
    cap C > 0; band (low, high). Returns (w [B, T], metrics: train/is_weight = token mean of w and
    the mode's own fractions, each aggregated over the global batch by `norm`). Padding has r = 1.
    """
    if mode == "none":
        return torch.ones_like(mask, dtype=old_logprobs.dtype), {}
    if mode not in IS_CORRECTIONS:
        raise ValueError(f"importance correction must be one of {('none', *IS_CORRECTIONS)}, got {mode!r}")
    log_ratio = (old_logprobs - rollout_logprobs).detach() * mask
    weights, metrics = IS_CORRECTIONS[mode](log_ratio, mask, cap, band, norm)
    return weights, {"train/is_weight": aggregate(weights, mask, "token_mean", norm), **metrics}


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO critic loss with value clipping (Schulman et al. 2017; OpenAI baselines, TRL, OpenRLHF).

        V_clip = clip(V, V_old - ε, V_old + ε)
        L = ½ · max((V - R)², (V_clip - R)²)          clip=None: L = ½·(V - R)²

    values, old_values, returns: [B, T]. Returns (loss [B, T], clipped [B, T] as float: 1 where
    the clipped term is strictly larger, i.e. the one taken; all 0 when clip is None).
    """
    unclipped = (values - returns) ** 2
    if clip is None:
        return 0.5 * unclipped, torch.zeros_like(unclipped)
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    clipped = (clipped_values - returns) ** 2
    return 0.5 * torch.maximum(unclipped, clipped), (clipped > unclipped).float()


def sequence_logprobs(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log π(y) = Σ_t m_t · log π(y_t | y_<t).   logprobs, mask: [B, T] -> [B]."""
    return masked_sum(logprobs, mask, dim=-1)


PREFERENCE_LOSSES = ("dpo", "ipo")


def preference_margin(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Implicit-reward margin β·h with h = (log π(y_c) - log π_ref(y_c)) - (log π(y_r) - log π_ref(y_r)).

    All arguments [P] (one entry per preference pair) -> [P].
    """
    return beta * ((chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps))


def preference_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    kind: str,
) -> torch.Tensor:
    """Pairwise preference loss per pair, on sequence log-probabilities (all [P] -> [P]).

        h   = (log π(y_c) - log π_ref(y_c)) - (log π(y_r) - log π_ref(y_r))
        dpo: -log σ(β·h)                      (Rafailov et al. 2023, eq. 7)
        ipo: (h - 1/(2β))²                    (Azar et al. 2023, eq. 17, with β in the role of τ)

    Online DPO / IPO (Guo et al. 2024; Calandriello et al. 2024) apply the same losses to pairs
    sampled from the current policy. With pairs y, y' ~ π and labels drawn from P(y ≻ y'), the
    stationary point of online IPO is π(y) ∝ π_ref(y)·exp(P(y ≻ π)/β): the Nash equilibrium of
    the game P(π ≻ π') - β·KL(π‖π_ref) + β·KL(π'‖π_ref), so β here is that game's KL
    coefficient (tests/unit/test_preference_game.py checks it). Whether log π is a sum or a
    per-token mean is the caller's choice.
    """
    if kind not in PREFERENCE_LOSSES:
        raise ValueError(f"preference loss kind must be one of {PREFERENCE_LOSSES}, got {kind!r}")
    if beta <= 0:
        raise ValueError(f"preference loss beta must be > 0, got {beta}")
    h = preference_margin(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=1.0)
    if kind == "dpo":
        return -torch.nn.functional.logsigmoid(beta * h)
    return (h - 1.0 / (2.0 * beta)) ** 2


def soft_preference_loss(
    first_logps: torch.Tensor,
    second_logps: torch.Tensor,
    ref_first_logps: torch.Tensor,
    ref_second_logps: torch.Tensor,
    label: torch.Tensor,
    beta: float,
    kind: str,
) -> torch.Tensor:
    """Preference loss per pair against a target q = P(first ≻ second) ∈ [0, 1] (all [P] -> [P]).

        ℓ_q = q · ℓ(first ≻ second) + (1 − q) · ℓ(second ≻ first),   ℓ = `preference_loss(kind)`

    q = 1 is `preference_loss` itself (the hard label). q ~ Bernoulli(P) is online IPO's sampled
    label (Calandriello et al. 2024), and q = P is its expectation (a soft label). With h the
    log-ratio difference of first over second and a = 1/(2β):
        dpo: ℓ_q = −q·log σ(βh) − (1 − q)·log σ(−βh), the cross-entropy of σ(βh) against q,
             minimised at σ(βh) = q (conservative DPO, Mitchell 2023, is q = 1 − ε);
        ipo: ℓ_q = q·(h − a)² + (1 − q)·(h + a)², minimised at h = (2q − 1)·a = (2q − 1)/(2β)
             (Azar et al. 2023, eq. 17 with the expectation over labels kept).
    q = ½ (a tie) is the symmetric loss minimised at h = 0: it pulls the two log-ratios together.
    """
    forward = preference_loss(first_logps, second_logps, ref_first_logps, ref_second_logps, beta, kind)
    backward = preference_loss(second_logps, first_logps, ref_second_logps, ref_first_logps, beta, kind)
    return label * forward + (1.0 - label) * backward


def nash_md_loss(
    logps: torch.Tensor, ref_logps: torch.Tensor, preference: torch.Tensor, beta: float
) -> torch.Tensor:
    """Nash-MD policy-gradient loss per sequence (a REINFORCE surrogate: only its gradient matters).

        ℓ(y) = -(P - ½)·log π(y)  +  β · sg[log π(y) - log π_ref(y)] · log π(y)
        ∇ℓ  = -(P - ½)·∇log π(y)  +  β · (log π(y) - log π_ref(y)) · ∇log π(y)

    logps = log π(y), ref_logps = log π_ref(y) for y ~ π (this row's sequence), preference =
    P(y ≻ y') with y' ~ the geometric mixture π^{1-α}·π_ref^α (`learners.mixture`); all [B] -> [B].
    In expectation over y ~ π, the first term is -∇ P(π ≻ π_mix) with ½ as a control variate
    (E[∇log π] = 0) and the second is β·∇KL(π‖π_ref) in score-function form, so the stationary
    point is π(y) ∝ π_ref(y)·exp(P(y ≻ π_mix)/β).

    Munos et al. 2023 ("Nash Learning from Human Feedback", Nash-MD-PG) and Calandriello et
    al. 2024 (online, LLM scale); TRL's NashMDTrainer computes the same estimator.
    Deviation from TRL: TRL's KL coefficient is the per-token log-ratio, Σ_t sg(ρ_t)·log π(y_t|·);
    here it is the sequence log-ratio sg(Σ_t ρ_t)·Σ_t log π(y_t|·), which is unbiased for
    ∇KL(π‖π_ref) over whole sequences (the two agree on one-token responses).
    Note that with a fixed mixture coefficient α > 0 the stationary point differs from the
    regularised Nash equilibrium (the α = 0 self-play point) by O(α); Munos et al.'s tabular
    Nash-MD ties α = η·β to the step size η and converges as η → 0.
    """
    log_ratio = (logps - ref_logps).detach()
    return -(preference - 0.5) * logps + beta * log_ratio * logps
