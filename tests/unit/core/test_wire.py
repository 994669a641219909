"""Weights cross the object store as numpy buffers and come back bit-identical."""
import numpy as np
import pytest
import torch

from core.wire import from_wire, to_wire


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_wire_round_trip_is_bit_exact(dtype):
    named = [("a.weight", torch.randn(3, 4).to(dtype)), ("b.bias", torch.tensor([1.5, -2.25]).to(dtype))]
    wire = to_wire(named)
    assert all(isinstance(a, np.ndarray) for _, _, a in wire)
    back = from_wire(wire)
    for (n0, t0), (n1, t1) in zip(named, back):
        assert n0 == n1 and t1.dtype == dtype and t1.shape == t0.shape
        assert torch.equal(t0.view(torch.int16 if dtype != torch.float32 else torch.int32),
                           t1.view(torch.int16 if dtype != torch.float32 else torch.int32))


def test_read_only_buffers_load_into_a_module_without_warnings(recwarn):
    wire = to_wire([("weight", torch.ones(2, 2))])
    wire[0][2].setflags(write=False)  # as object-store views are
    layer = torch.nn.Linear(2, 2, bias=False)
    layer.load_state_dict(dict(from_wire(wire)))
    assert torch.equal(layer.weight.detach(), torch.ones(2, 2))
    assert not [w for w in recwarn if "not writable" in str(w.message)]
