"""The weight wire format: how named tensors travel through the Ray object store.

A bucket of weights is a list of (name, dtype, numpy array). The object store keeps numpy buffers
as they are and every reader gets a zero-copy view, where torch tensors would be pickled and
copied. 16-bit floats travel as their raw bits (numpy has no bfloat16).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

# numpy has no bfloat16: 16-bit floats travel as their raw bits.
_RAW16 = {torch.bfloat16: torch.int16, torch.float16: torch.int16}


def to_wire(named: list[tuple[str, torch.Tensor]]) -> list[tuple[str, str, np.ndarray]]:
    """Weights as (name, dtype, numpy array): the object store keeps numpy buffers as they are,
    and every reader gets a zero-copy view, where torch tensors would be pickled and copied."""
    return [(name, str(t.dtype).removeprefix("torch."),
             (t.view(_RAW16[t.dtype]) if t.dtype in _RAW16 else t).numpy()) for name, t in named]


def from_wire(wire: list[tuple[str, str, np.ndarray]]) -> list[tuple[str, torch.Tensor]]:
    """Tensors sharing the (read-only) object-store buffers; loaders copy them into their params."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return [(name, torch.from_numpy(a).view(getattr(torch, dtype))) for name, dtype, a in wire]
