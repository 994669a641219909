"""Policy weights in one shared-memory file: a rollout actor on the learner's node reads them in
place, so a weight sync copies nothing before the rollout engine's own reload.

The learner moves its parameters into the file once (`share_parameters`: every parameter's
storage becomes a view of it, and the optimiser keeps updating them there); a reader maps the
same file read-only (`map_shared`) and gets tensors that always show the learner's current
values. Once every reader has mapped it, the learner unlinks the file: the mappings stay valid,
and the memory goes back to the system when the last process exits, however it exits.

Readers see updates as they happen, so a reader may only load while the learner is not stepping:
the synchronous loop guarantees that (it waits for the reload before the next update); the
asynchronous loop uses the object store instead (cluster/weight_sync.py).
"""
from __future__ import annotations

import os
import uuid
import warnings

import numpy as np
import torch

ALIGN = 64  # bytes; every tensor starts on a cache line


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def share_parameters(module: torch.nn.Module, directory: str = "/dev/shm") -> dict:
    """Move every parameter of `module` into one new shared-memory file (values unchanged);
    returns the descriptor readers need: {"path", "layout": [(name, dtype, shape, offset)]}."""
    params = list(module.named_parameters())
    total = sum(_aligned(p.numel() * p.element_size()) for _, p in params)
    path = os.path.join(directory, f"rewardflow-weights-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    buf = np.memmap(path, dtype=np.uint8, mode="w+", shape=(max(total, 1),))
    layout, offset = [], 0
    with torch.no_grad():
        for name, p in params:
            n = p.numel() * p.element_size()
            view = torch.from_numpy(buf[offset:offset + n]).view(p.dtype).view(p.shape)
            view.copy_(p.data)
            p.data = view
            layout.append((name, str(p.dtype).removeprefix("torch."), tuple(p.shape), offset))
            offset += _aligned(n)
    return {"path": path, "layout": layout}


def map_shared(descriptor: dict) -> list[tuple[str, torch.Tensor]]:
    """Read-only tensors over the learner's parameters, in model order (a view, never a copy)."""
    buf = np.memmap(descriptor["path"], dtype=np.uint8, mode="r")
    out = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        for name, dtype, shape, offset in descriptor["layout"]:
            dt = getattr(torch, dtype)
            n = int(np.prod(shape, dtype=np.int64)) * torch.empty(0, dtype=dt).element_size()
            out.append((name, torch.from_numpy(buf[offset:offset + n]).view(dt).view(shape)))
    return out


def unlink(descriptor: dict) -> None:
    """Remove the file's name (existing mappings stay valid)."""
    from core.collective import unlink as unlink_path

    unlink_path(descriptor["path"])
