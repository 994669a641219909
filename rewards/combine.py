"""Combining reward terms into one reward, on the driver, once per step.

Normalisation and running statistics must see the whole step's batch, so reward actors return
raw terms (`rewards/isolation.py`) and `Combiner` turns them into the reward:

    x_k = T_k(clip_k(N_k(r_k)))                  per term k: normalise, clip, transform
    R_g = Σ_{k∈g} w_k · x_k                       per reward group g (weighted_sum: one group)
    v   = R_g*,  g* = argmin_g mean_i R_g[i]      maxmin; weighted_sum: v = R_all
    v  ← clip(N(v))                               the combined value, normalised and clipped

The raw terms stay in `Scores.terms` (logged as `reward/<name>`); `Scores.values` is v.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Literal, Optional, Sequence

import numpy as np
import torch
from pydantic import ValidationInfo, field_validator

from core.config import Section
from core.ops import group_normalize as _group_normalize_t

EPS = 1e-6
Normalize = Literal["none", "running", "whiten", "group"]
Transform = Literal["none", "log_sigmoid"]
Bounds = tuple[Optional[float], Optional[float]]


def reward_group_sums(values: np.ndarray, weights: np.ndarray, membership: np.ndarray) -> np.ndarray:
    """R_g[i] = Σ_k M[g, k] · w_k · r_k[i].   values: [K, B], weights: [K], membership M: [G, K] 0/1 -> [G, B].

    The weighted sum of all terms is the one-group case, M = [1 … 1].
    """
    return membership @ (weights[:, None] * values)


def maxmin(group_values: np.ndarray) -> tuple[np.ndarray, int]:
    """Egalitarian combination: each step optimises the reward group the policy serves worst.

        g* = argmin_g (1/B) Σ_i R_g[i],      v_i = R_g*[i]

    group_values: [G, B] -> (v [B], g*); ties go to the first group. MaxMin-RLHF (Chakraborty et
    al. 2024, Alg. 1) picks g* by the policy's expected reward under each group's reward model
    and runs PPO on r_g*; here that expectation is the mean over the step's batch.
    """
    g = int(np.argmin(group_values.mean(axis=1)))
    return group_values[g], g


def log_sigmoid(r: np.ndarray, ref: float) -> np.ndarray:
    """u = log σ(r − r_ref) = −log(1 + e^{−(r − r_ref)}).   r: [B] -> [B], values in (−∞, 0).

    Wang et al. 2024, "Transforming and Combining Rewards for Aligning LLMs": summing transformed
    terms acts as a logical AND — a term far below its reference dominates the sum, a term far
    above saturates at 0, so no term can buy off another. r_ref is a constant here (the paper
    uses a per-prompt reference response's reward).
    """
    return -np.logaddexp(0.0, -(r - ref))


def group_normalize(x: np.ndarray, group_ids: np.ndarray, eps: float = EPS) -> np.ndarray:
    """(x_i − mean_g(x)) / (std_g(x) + eps) with g = group_ids[i] (the samples of one prompt).

    x: [B], group_ids: [B] int -> [B] (float64). Sample std (n − 1); a group of one sample
    gets 0. The same function as GRPO's advantages (`core.ops.group_normalize`).
    """
    out = _group_normalize_t(torch.as_tensor(np.asarray(x, dtype=np.float64)), torch.as_tensor(group_ids), eps=eps)
    return out.numpy()


def whiten(x: np.ndarray, eps: float = EPS) -> np.ndarray:
    """(x_i − mean(x)) / (std(x) + eps) over the batch: `group_normalize` with one group.

    x: [B] -> [B]; sample std (n − 1); one sample gives 0.
    """
    return group_normalize(x, np.zeros(len(x), dtype=np.int64), eps)


@dataclass
class RunningMoments:
    """Count, mean and sum of squared deviations of every value seen so far."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def update(self, x: np.ndarray) -> None:
        """Merge a batch (Chan, Golub & LeVeque 1979): δ = mean_x − mean,
        mean += δ·n/N, m2 += m2_x + δ²·count·n/N, with N = count + n."""
        n, total = len(x), self.count + len(x)
        delta = float(x.mean()) - self.mean
        self.m2 += float(((x - x.mean()) ** 2).sum()) + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.count = total

    @property
    def std(self) -> float:
        return float(np.sqrt(self.m2 / max(self.count - 1, 1)))


def running_normalize(x: np.ndarray, moments: RunningMoments, eps: float = EPS) -> np.ndarray:
    """(x_i − μ) / (σ + eps) with μ, σ over every value so far, this batch included (so the
    first step equals `whiten`). Updates `moments`.   x: [B] -> [B]."""
    moments.update(x)
    return (x - moments.mean) / (moments.std + eps)


def clip(x: np.ndarray, bounds: Bounds | None) -> np.ndarray:
    """min(max(x, lo), hi); a None bound is open."""
    return x if bounds is None else np.clip(x, *bounds)


NORMALIZERS: dict[str, Callable[[np.ndarray, np.ndarray, RunningMoments], np.ndarray]] = {
    "none": lambda x, group_ids, moments: x,
    "whiten": lambda x, group_ids, moments: whiten(x),
    "group": lambda x, group_ids, moments: group_normalize(x, group_ids),
    "running": lambda x, group_ids, moments: running_normalize(x, moments),
}
TRANSFORMS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "none": lambda x, ref: x,
    "log_sigmoid": log_sigmoid,
}


# -- configuration -----------------------------------------------------------------------------
def _valid_bounds(bounds: Bounds | None) -> Bounds | None:
    if bounds is None:
        return None
    lo, hi = bounds
    if lo is None and hi is None:
        raise ValueError("clip needs a lower or an upper bound, e.g. [-1, 1] or [0, null]")
    if lo is not None and hi is not None and lo >= hi:
        raise ValueError(f"clip lower bound {lo:g} must be below the upper bound {hi:g}")
    return bounds


class TermCombineConfig(Section):
    """How one reward term enters the combined reward (the recipe's `rewards:` entries extend it)."""

    name: str
    weight: float = 1.0
    normalize: Normalize = "none"
    clip: Bounds | None = None
    transform: Transform = "none"
    ref: float = 0.0  # r_ref of transform=log_sigmoid

    _bounds = field_validator("clip")(_valid_bounds)

    @field_validator("ref")
    @classmethod
    def _ref_needs_transform(cls, ref: float, info: ValidationInfo) -> float:
        if ref != 0.0 and info.data.get("transform", "log_sigmoid") != "log_sigmoid":
            raise ValueError("ref is the reference value of transform=log_sigmoid; set that transform or drop ref")
        return ref


class CombineConfig(Section):
    """How the terms combine into one reward (the recipe's `reward.combine` section)."""

    kind: Literal["weighted_sum", "maxmin"] = "weighted_sum"
    # maxmin: reward group -> its terms; a term listed nowhere is a group of its own.
    groups: dict[str, list[str]] = {}
    normalize: Normalize = "none"
    clip: Bounds | None = None

    _bounds = field_validator("clip")(_valid_bounds)

    @field_validator("groups")
    @classmethod
    def _groups_for_maxmin(cls, groups: dict[str, list[str]], info: ValidationInfo) -> dict[str, list[str]]:
        if groups and info.data.get("kind", "maxmin") != "maxmin":
            raise ValueError("reward groups are only used by kind=maxmin")
        for name, members in groups.items():
            if not members:
                raise ValueError(f"group {name!r} lists no terms")
        listed = [m for members in groups.values() for m in members]
        twice = sorted({m for m in listed if listed.count(m) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} listed in more than one group")
        return groups

    def check_terms(self, names: Sequence[str]) -> None:
        """Cross-check against the recipe's terms; the message names the key."""
        for group, members in self.groups.items():
            unknown = [m for m in members if m not in names]
            if unknown:
                raise ValueError(f"reward.combine.groups.{group}: {', '.join(unknown)} not among the "
                                 f"rewards ({', '.join(names)})")
        if self.kind == "maxmin" and len(reward_groups(names, self.groups)) < 2:
            raise ValueError("reward.combine.kind: maxmin needs at least two reward groups")


def reward_groups(names: Sequence[str], groups: dict[str, list[str]]) -> dict[str, list[str]]:
    """The listed groups in order, then each unlisted term as a group of its own."""
    listed = {m for members in groups.values() for m in members}
    return {**groups, **{n: [n] for n in names if n not in listed}}


# -- the driver-side combination -----------------------------------------------------------------
class Combiner:
    """Raw per-term values of one step's whole batch -> the combined reward [B].

    Owned by the driver (`RewardGroup`): it holds the running statistics of `normalize=running`.
    """

    def __init__(self, terms: Sequence[TermCombineConfig], cfg: CombineConfig):
        names = [t.name for t in terms]
        cfg.check_terms(names)
        self.terms, self.cfg = list(terms), cfg
        groups = reward_groups(names, cfg.groups) if cfg.kind == "maxmin" else {"all": names}
        self.membership = np.array([[n in members for n in names] for members in groups.values()], dtype=np.float64)
        self.weights = np.array([t.weight for t in terms], dtype=np.float64)
        self.moments = {n: RunningMoments() for n in names}
        self.combined_moments = RunningMoments()

    def __call__(self, raw: dict[str, np.ndarray], group_ids: np.ndarray) -> np.ndarray:
        shaped = np.stack([self._shape(t, np.asarray(raw[t.name], dtype=np.float64), group_ids) for t in self.terms])
        sums = reward_group_sums(shaped, self.weights, self.membership)
        values = maxmin(sums)[0] if self.cfg.kind == "maxmin" else sums[0]
        values = NORMALIZERS[self.cfg.normalize](values, group_ids, self.combined_moments)
        return clip(values, self.cfg.clip)

    def state(self) -> dict:
        """The running statistics (what a resumed run needs to normalise as this one would)."""
        return {"terms": {n: asdict(m) for n, m in self.moments.items()}, "combined": asdict(self.combined_moments)}

    def load_state(self, state: dict) -> None:
        self.moments = {n: RunningMoments(**m) for n, m in state["terms"].items()}
        self.combined_moments = RunningMoments(**state["combined"])

    def _shape(self, term: TermCombineConfig, r: np.ndarray, group_ids: np.ndarray) -> np.ndarray:
        x = NORMALIZERS[term.normalize](r, group_ids, self.moments[term.name])
        return TRANSFORMS[term.transform](clip(x, term.clip), term.ref)


def token_rewards(values: np.ndarray, token_terms: dict[str, list[np.ndarray]], weights: dict[str, float],
                  lengths: Sequence[int]) -> list[np.ndarray]:
    """Per-token rewards [T_i] for each sample, summing to its combined value.

        r_i,t = Σ_{k step/token} w_k · tok_k,i[t]  +  [t = T_i − 1] · (v_i − Σ_k w_k · Σ_t tok_k,i[t])

    The step / token terms keep their own credit assignment (value at the end of each step); the
    rest of the combined value v_i (sequence terms, the difference between a step term's
    aggregate and its step sum, and whatever normalisation or transforms changed) lands on the
    last token, as a sequence reward would, so Σ_t r_i,t = v_i. Empty responses get [].
    """
    out = []
    for i, n in enumerate(lengths):
        r = np.zeros(n, dtype=np.float64)
        if n == 0:
            out.append(r)
            continue
        for k, per_sample in token_terms.items():
            r += weights[k] * np.asarray(per_sample[i], dtype=np.float64)[:n]
        r[-1] += values[i] - r.sum()
        out.append(r)
    return out
