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


def test_shared_parameters_are_read_in_place_and_outlive_their_file_name():
    from learners.shared_weights import map_shared, share_parameters, unlink

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Linear(5, 2, bias=False))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    desc = share_parameters(model)
    assert [n for n, *_ in desc["layout"]] == ["0.weight", "0.bias", "1.weight"]
    assert all(offset % 64 == 0 for *_, offset in desc["layout"])
    for k, v in model.state_dict().items():  # values unchanged by the move
        assert torch.equal(v, before[k])
    shared = map_shared(desc)
    unlink(desc)  # readers keep their mapping
    # An optimiser step on the learner's parameters is what the reader sees, without a copy.
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    for (name, view), (name2, p) in zip(shared, model.named_parameters()):
        assert name == name2 and torch.equal(view, p.detach())
    assert not torch.equal(shared[0][1], before["0.weight"])
