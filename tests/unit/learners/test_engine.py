"""PolicyEngine's weight buckets and the rank-uniform micro-batch count (learners/engine.py)."""
import torch

from learners.engine import num_micro_batches


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


def test_micro_batch_count_is_rank_uniform_and_never_empty():
    # shards of 3 and 2 rows, micro-batch size 1: ceil(3/1) = 3 would leave rank 1 an empty one
    assert num_micro_batches([3, 2], 1) == 2
    assert num_micro_batches([8, 8], 4) == 2
    assert num_micro_batches([9, 8], 4) == 3
