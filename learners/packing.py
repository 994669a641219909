"""Shared-prompt packing: each prompt computed once per group, no padding beyond a micro-batch.

A `TrainBatch` row is [prompt left-padded to P | response right-padded to R], so the G samples
of one prompt compute that prompt G times and every row pays for the batch's longest prompt
and response. A packed row holds one prompt and the responses of the adjacent rows that share
it (identical prompt tokens: a group, or the part of one present in the micro-batch):

    [pad .. | prompt | r_1 | r_2 | .. | r_k | pad ..]        N rows of width L = P' + S

P' is the longest prompt and S the longest Σ_i |r_i| among the micro-batch's packed rows.
Attention (`PackedRows.sees`, [N, 1, L, L]): a prompt token sees the earlier prompt tokens; a
token of r_i sees the prompt and the earlier tokens of r_i, never another response; a pad
column sees only itself (a query with no key gives NaN). Positions restart after the prompt
for every response: token t of r_i sits at position |prompt| + t. Each response token thus
meets exactly the keys, values and positions of its own unshared row, so logprobs, values,
losses and gradients are the unshared ones up to float summation order, and the gradient
through the shared prompt is the sum over its responses by construction.

Outputs: of the last S + 1 columns (`logits_to_keep`), column j sits at P' - 1 + j and predicts
the token at P' + j. Token t ≥ 1 of r_i is predicted where token t - 1 of r_i sits, token 0 of
every response by the prompt's last token (column 0): `PackedRows.unpack` gathers them into
the batch's [B, R] layout.

Micro-batches are formed by length (`length_order`): blocks of rows that share a prompt, longest
first, so the rows of one micro-batch are packed to similar widths. Tokens computed per forward
pass, unshared and packed, are `tokens_computed`.

Only torch is imported here (and the data contract and tensor ops).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from core.ops import entropy_from_logits
from core.protocol import TrainBatch

SHARE_MODES = ("auto", "on", "off")


def prompt_runs(batch: TrainBatch) -> list[tuple[int, int]]:
    """[start, end) of each maximal run of adjacent rows with identical prompts (same tokens and
    length), in row order: the packed rows of `batch`."""
    p = batch.prompt_len
    real = batch.attention_mask[:, :p].bool()
    key = torch.where(real, batch.input_ids[:, :p], -1)
    new = torch.ones(len(batch), dtype=torch.bool, device=key.device)
    new[1:] = (key[1:] != key[:-1]).any(-1)
    starts = new.nonzero().flatten().tolist()
    return list(zip(starts, starts[1:] + [len(batch)]))


def shares_prompt(batch: TrainBatch, mode: str) -> bool:
    """Whether the packed path runs for `batch`: on; off; auto = some adjacent rows share a prompt."""
    if mode not in SHARE_MODES:
        raise ValueError(f"share_prompt must be one of {SHARE_MODES}, got {mode!r}")
    if mode == "auto":
        return any(end - start > 1 for start, end in prompt_runs(batch))
    return mode == "on"


def _lengths(batch: TrainBatch) -> tuple[list[int], list[int]]:
    """Real prompt and response tokens of every row (from the attention mask)."""
    p = batch.prompt_len
    return batch.attention_mask[:, :p].sum(-1).tolist(), batch.attention_mask[:, p:].sum(-1).tolist()


def _packed_shape(runs: list[tuple[int, int]], prompt_lens: list[int], resp_lens: list[int]) -> tuple[int, int]:
    """(P', S): the packed rows' prompt width and response width (at least 1 each)."""
    prompt_w = max(max(prompt_lens[a] for a, _ in runs), 1)
    resp_w = max(max(sum(resp_lens[a:b]) for a, b in runs), 1)
    return prompt_w, resp_w


def packed_tokens(batch: TrainBatch) -> int:
    """Positions `pack(batch)` runs through the model: N · (P' + S)."""
    runs = prompt_runs(batch)
    prompt_w, resp_w = _packed_shape(runs, *_lengths(batch))
    return len(runs) * (prompt_w + resp_w)


def length_order(batch: TrainBatch, unit: int = 1) -> torch.Tensor:
    """A row permutation [B] for micro-batches of similar length: blocks of rows, longest packed
    length (prompt + Σ responses) first, rows in order inside a block. A block is a run of a
    shared prompt (`prompt_runs`), extended to the next `unit` boundary so a unit (a pair) is
    never cut; ties keep their order."""
    prompt_lens, resp_lens = _lengths(batch)
    runs = prompt_runs(batch)
    run_size = {a: prompt_lens[a] + sum(resp_lens[a:b]) for a, b in runs}
    starts = [a for a, _ in runs if a % unit == 0] + [len(batch)]
    blocks = list(zip(starts, starts[1:]))
    size = [sum(s for a, s in run_size.items() if lo <= a < hi) for lo, hi in blocks]
    ranked = sorted(range(len(blocks)), key=lambda k: -size[k])
    return torch.tensor([i for k in ranked for i in range(*blocks[k])], dtype=torch.long)


def arrange(batch: TrainBatch, mode: str, unit: int = 1) -> tuple[TrainBatch, torch.Tensor | None]:
    """`batch` in `length_order` when it shares prompts (`shares_prompt`), with the permutation
    (None: unchanged). Row-wise losses and metrics do not depend on the order of rows."""
    if not shares_prompt(batch, mode):
        return batch, None
    order = length_order(batch, unit)
    return batch.select(order), order


def in_micro_batches(forward, batch: TrainBatch, n_micro: int, mode: str, unit: int = 1) -> torch.Tensor:
    """`forward(micro_batch, share)` [b, ...] over `batch` in `n_micro` micro-batches formed by
    length (`arrange`), each packed where it shares prompts; rows back in `batch`'s order."""
    rows, order = arrange(batch, mode, unit)
    out = torch.cat([forward(mb, shares_prompt(mb, mode)) for mb in rows.split(n_micro, unit)])
    return out if order is None else out[torch.argsort(order)]


def tokens_computed(batch: TrainBatch, n_micro: int, mode: str, unit: int = 1) -> int:
    """Positions one forward pass over `batch` in `n_micro` micro-batches runs through the model:
    `arrange`, then `split_tokens`."""
    return split_tokens(arrange(batch, mode, unit)[0], n_micro, mode, unit)


def split_tokens(batch: TrainBatch, n_micro: int, mode: str, unit: int = 1) -> int:
    """Positions computed for `batch` cut as it is (`TrainBatch.split`): each micro-batch packed
    (`packed_tokens`) where it shares prompts, else rows × (P + R), the batch's full width."""
    return sum(packed_tokens(mb) if shares_prompt(mb, mode) else mb.input_ids.numel()
               for mb in batch.split(n_micro, unit))


@dataclass(frozen=True)
class PackedRows:
    """The packed model inputs of a micro-batch and where its response tokens are predicted.

    input_ids, position_ids: [N, L]; sees: [N, 1, L, L] bool (True: the query may attend to the
    key); row, col: [B, R] long, the packed row and kept column (see the module docstring) that
    predicts each response token of the batch; positions past a response's end point at (row, 0)
    and mean nothing (masked by `response_mask`, as padding is in the unshared layout).
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    sees: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    prompt_width: int

    @property
    def response_width(self) -> int:
        return self.input_ids.shape[1] - self.prompt_width

    @property
    def tokens(self) -> int:
        return self.input_ids.numel()

    def unpack(self, kept: torch.Tensor) -> torch.Tensor:
        """Per-position outputs of the kept columns [N, S, ...] -> each response token's [B, R, ...]."""
        return kept[self.row, self.col]

    def token_logprobs(self, kept: torch.Tensor, tokens: torch.Tensor, chunk: int = 512) -> torch.Tensor:
        """log softmax(logits)[token] of each response token [B, R] (float32), as
        `core.ops.token_logprobs`: kept [N, S, V], the kept columns' logits; tokens [B, R], the
        response ids. The log-normaliser is taken once per packed position, `chunk` at a time."""
        lse = torch.cat([c.float().logsumexp(-1) for c in kept.flatten(0, 1).split(chunk)]).view(kept.shape[:2])
        return kept[self.row, self.col, tokens].float() - lse[self.row, self.col]

    def entropy(self, kept: torch.Tensor, chunk: int = 512) -> torch.Tensor:
        """Entropy of the distribution that predicts each response token [B, R]; kept [N, S, V]."""
        per_position = entropy_from_logits(kept.flatten(0, 1)[:, None], chunk_rows=chunk)
        return self.unpack(per_position.view(kept.shape[:2]))


def pack(batch: TrainBatch) -> PackedRows:
    """The packed rows of `batch` (module docstring), on the batch's device."""
    p, device = batch.prompt_len, batch.input_ids.device
    ids = batch.input_ids.cpu()
    prompt_lens, resp_lens = _lengths(batch)
    runs = prompt_runs(batch)
    prompt_w, resp_w = _packed_shape(runs, prompt_lens, resp_lens)
    n, width = len(runs), prompt_w + resp_w
    input_ids = torch.zeros(n, width, dtype=ids.dtype)
    positions = torch.zeros(n, width, dtype=torch.long)
    segment = torch.full((n, width), -1)  # -1 pad, 0 prompt, k + 1 the row's k-th response
    row = torch.zeros(batch.response_mask.shape, dtype=torch.long)
    col = torch.zeros(batch.response_mask.shape, dtype=torch.long)
    for g, (a, b) in enumerate(runs):
        plen = prompt_lens[a]
        input_ids[g, prompt_w - plen:prompt_w] = ids[a, p - plen:p]
        positions[g, prompt_w - plen:prompt_w] = torch.arange(plen)
        segment[g, prompt_w - plen:prompt_w] = 0
        start = prompt_w
        for k, i in enumerate(range(a, b)):
            r = resp_lens[i]
            input_ids[g, start:start + r] = ids[i, p:p + r]
            positions[g, start:start + r] = torch.arange(plen, plen + r)
            segment[g, start:start + r] = k + 1
            row[i] = g
            col[i, 1:r] = torch.arange(start - prompt_w + 1, start - prompt_w + r)
            start += r
    query, key = segment[:, :, None], segment[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    sees = (causal & (query >= 0) & ((key == 0) | (key == query))) | torch.eye(width, dtype=torch.bool)
    return PackedRows(input_ids=input_ids.to(device), position_ids=positions.to(device),
                      sees=sees[:, None].to(device), row=row.to(device), col=col.to(device), prompt_width=prompt_w)
