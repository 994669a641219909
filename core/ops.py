"""Pure tensor helpers shared across layers: masked reductions, token logprobs, padding,
position ids, group normalisation and contiguous splits.

Only torch and numpy are imported here (tests/unit/test_layering.py).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def split_bounds(n: int, parts: int, unit: int = 1) -> list[int]:
    """Boundaries of `parts` contiguous slices of `n` rows: slice i is [b[i], b[i+1]).

    Units of `unit` rows are never cut (2: a chosen/rejected pair); slice sizes differ by at most
    one unit, the larger ones last: b[i] = unit · ⌊i · (n // unit) / parts⌋. Used for data-parallel
    shards, mini-batches, micro-batches and per-actor spans, so all split alike.
    """
    units = n // unit
    return [unit * (i * units // parts) for i in range(parts + 1)]


def pad_left(seqs: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids [B, L] and their attention mask [B, L] (1 on real tokens), L = longest."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s):] = torch.tensor(np.asarray(s), dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids, mask


def pad_right(seqs: Sequence[Sequence[float]], pad: float | int, dtype=torch.long, width: int | None = None) -> torch.Tensor:
    """Right-padded [B, width] (default: the longest sequence, at least 1)."""
    width = width or max(max(len(s) for s in seqs), 1)
    out = torch.full((len(seqs), width), pad, dtype=dtype)
    for i, s in enumerate(seqs):
        if len(s):
            out[i, : len(s)] = torch.tensor(np.asarray(s), dtype=dtype)
    return out


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions of left-padded rows: 0 at each row's first real token. [B, L] -> [B, L]."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def group_normalize(values: torch.Tensor, group_ids: torch.Tensor, scale: str = "std", eps: float = 1e-6) -> torch.Tensor:
    """Each value minus its group's mean, optionally over the group's std.

    values: [N] float, group_ids: [N] int (samples of one prompt share an id) -> [N].

        A_i = (r_i - mean_g(r)) / (std_g(r) + eps)   scale="std"  (Shao et al. 2024, DeepSeekMath)
        A_i =  r_i - mean_g(r)                        scale="none" (Dr.GRPO, Liu et al. 2025)

    std_g is the sample standard deviation (Bessel-corrected, n-1), as in TRL; a group of one
    sample gets 0. Computed in float32, or float64 for float64 input. GRPO's advantages and the
    reward normalisers `group` and `whiten` (one group) are this function.
    """
    if scale not in ("std", "none"):
        raise ValueError(f"advantage scale must be 'std' or 'none', got {scale!r}")
    values = values.to(torch.promote_types(values.dtype, torch.float32))
    _, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    counts = counts.to(values.dtype)
    sums = torch.zeros_like(counts).index_add_(0, inverse, values)
    centered = values - (sums / counts)[inverse]
    if scale == "none":
        return centered
    sq = torch.zeros_like(counts).index_add_(0, inverse, centered**2)
    std = torch.sqrt(sq / (counts - 1).clamp(min=1))
    # A zero-spread group has centered == 0; the clamp keeps eps=0 from turning that into 0/0.
    return centered / (std[inverse] + eps).clamp(min=torch.finfo(centered.dtype).tiny)


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Σ values·mask over `dim` (all dims when None). values, mask: same shape."""
    masked = values * mask
    return masked.sum() if dim is None else masked.sum(dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Σ values·mask / Σ mask over `dim`; a row with an empty mask gives 0, not NaN."""
    return masked_sum(values, mask, dim) / mask.sum(dim if dim is not None else None).clamp(min=1)


def token_logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, chunk_rows: int = 8
) -> torch.Tensor:
    """log softmax(logits)[tokens], computed a few rows at a time.

    logits: [B, T, V], tokens: [B, T] -> [B, T] (float32).

    log p(tok) = logit[tok] - logsumexp(logits). Computing it per chunk of `chunk_rows` sequences
    never materialises a float32 [B, T, V] log-softmax for the whole batch (for a 49k vocabulary
    and 64 x 128 tokens that alone is 1.6 GB).
    """
    out = []
    for rows, toks in zip(logits.split(chunk_rows), tokens.split(chunk_rows)):
        rows = rows.float()
        picked = rows.gather(-1, toks.unsqueeze(-1)).squeeze(-1)
        out.append(picked - torch.logsumexp(rows, dim=-1))
    return torch.cat(out)


def entropy_from_logits(logits: torch.Tensor, chunk_rows: int = 8) -> torch.Tensor:
    """H = logsumexp(z) - Σ softmax(z)·z per position, chunked like `token_logprobs`.

    logits: [B, T, V] -> [B, T].
    """
    out = []
    for rows in logits.split(chunk_rows):
        rows = rows.float()
        probs = torch.softmax(rows, dim=-1)
        out.append(torch.logsumexp(rows, dim=-1) - (probs * rows).sum(-1))
    return torch.cat(out)
