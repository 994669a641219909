"""Weights cross the object store as numpy buffers and come back bit-identical."""
import numpy as np
import pytest
import torch

from cluster.weight_sync import from_wire, to_wire


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


def _buckets(module: torch.nn.Module, max_bytes: int) -> list[set[str]]:
    from types import SimpleNamespace

    from learners.engine import PolicyEngine

    return PolicyEngine.weight_buckets(SimpleNamespace(engine=SimpleNamespace(module=module)), max_bytes)


def test_weight_buckets_cut_consecutive_parameters_at_the_size_limit():
    # fp32 sizes in model order: a 48 B, b 16 B, c 40 B, d 8 B, e 100 B
    m = torch.nn.Module()
    for name, n in [("a", 12), ("b", 4), ("c", 10), ("d", 2), ("e", 25)]:
        m.register_parameter(name, torch.nn.Parameter(torch.zeros(n)))
    # 64 B: a+b = 64 fits; c+d = 48; e is over the limit: a bucket of its own, last
    assert _buckets(m, 64) == [{"a", "b"}, {"c", "d"}, {"e"}]
    # 50 B: a, then b+c (56 > 50, so b alone), ... ; e stays last
    assert _buckets(m, 50) == [{"a"}, {"b"}, {"c", "d"}, {"e"}]
    # 40 B: a (48 B) is over the limit too: the large ones follow the rest, in model order
    assert _buckets(m, 40) == [{"b"}, {"c"}, {"d"}, {"a"}, {"e"}]
    assert _buckets(m, 10_000) == [{"a", "b", "c", "d", "e"}]
