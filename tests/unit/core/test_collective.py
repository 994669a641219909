"""core/collective.py: bucket layouts, and a real gloo broadcast group between threads."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from core.collective import (
    ALIGN, WeightReceiver, WeightSender, WeightSyncError, join_group, map_buckets, open_store, pack, plan_layout,
    request_abort, shared_buckets, unlink, views,
)


def weights(seed: int) -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [("embed", torch.randn(5, 3, generator=g)),  # 60 bytes -> next slot at 64
            ("norm", torch.randn(3, generator=g).to(torch.bfloat16)),  # 6 bytes -> next at 128
            ("step", torch.tensor([seed], dtype=torch.int64))]  # 8 bytes -> bucket 192


def specs(named):
    return [(n, t.dtype, tuple(t.shape)) for n, t in named]


def test_layout_aligns_every_tensor_and_views_round_trip():
    layout = plan_layout(specs(weights(0)))
    assert [s.offset for s in layout.slots] == [0, ALIGN, 2 * ALIGN] and layout.nbytes == 3 * ALIGN
    assert [s.nbytes for s in layout.slots] == [60, 6, 8]
    buffer = torch.zeros(layout.nbytes, dtype=torch.uint8)
    pack(buffer, layout, weights(0))
    for (name, sent), (got_name, got) in zip(weights(0), views(buffer, layout)):
        assert got_name == name and got.dtype == sent.dtype
        torch.testing.assert_close(got, sent, rtol=0, atol=0)


def test_pack_refuses_weights_that_do_not_match_the_plan():
    layout = plan_layout(specs(weights(0)))
    buffer = torch.zeros(layout.nbytes, dtype=torch.uint8)
    wrong = [("embed", torch.zeros(3, 5)), *weights(0)[1:]]
    with pytest.raises(ValueError, match=r"embed \(3, 5\) torch.float32 does not match the planned embed \(5, 3\)"):
        pack(buffer, layout, wrong)
    with pytest.raises(ValueError, match="packed with 2 of its 3 weights"):
        pack(buffer, layout, weights(0)[:2])


def form_group(receivers: int, timeout_s: float, local: tuple[int, ...] = ()):
    """A sender and `receivers` receivers joined over gloo, each end in its own thread; the
    `local` ranks read the sender's shared-memory buckets instead of joining the group."""
    named = weights(0)
    layouts = [plan_layout(specs(named[:2])), plan_layout(specs(named[2:]))]
    store = open_store("127.0.0.1", receivers + 1, timeout_s)
    path, shared = shared_buckets(layouts) if local else (None, None)
    group_ranks = [r for r in range(receivers + 1) if r not in local]
    ends: dict[int, object] = {}

    def join(rank):
        mapped = map_buckets(path, layouts) if rank in local else None
        s, g = join_group("gloo", store if rank == 0 else None, "127.0.0.1", store.port, rank, receivers + 1,
                          timeout_s, group_ranks)
        assert (g is None) == (rank in local or group_ranks == [0])
        ends[rank] = (WeightSender(s, g, layouts, receivers, "cpu", timeout_s, shared, local) if rank == 0
                      else WeightReceiver(s, g, layouts, rank, "cpu", timeout_s, mapped))

    try:
        threads = [threading.Thread(target=join, args=(r,)) for r in range(receivers + 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        unlink(path)
    return ends, store


def send(sender, version: int, seed: int):
    named = weights(seed)
    sender.begin(version)
    sender.pack(0, iter(named[:2]))
    sender.pack(1, iter(named[2:]))


@pytest.mark.parametrize("local", [(), (1,), (1, 2)], ids=["group", "mixed", "shared"])
def test_every_receiver_gets_every_version_bit_exact(local):
    ends, _ = form_group(receivers=2, timeout_s=20, local=local)
    for version, seed in [(1, 11), (2, 12)]:  # the second reuses every buffer
        got: dict[int, list] = {}
        receivers = [threading.Thread(target=lambda r=r: got.__setitem__(
            r, [(n, t.clone()) for n, t in ends[r].receive(version)])) for r in (1, 2)]
        for t in receivers:
            t.start()
        send(ends[0], version, seed)
        ends[0].finish()
        for t in receivers:
            t.join()
        for r in (1, 2):
            assert [n for n, _ in got[r]] == ["embed", "norm", "step"]
            for (_, sent), (_, received) in zip(weights(seed), got[r]):
                torch.testing.assert_close(received, sent, rtol=0, atol=0)


def test_a_receiver_that_never_comes_is_named_within_the_timeout():
    ends, _ = form_group(receivers=2, timeout_s=1.0)
    def rank1():  # ready, then waits for a broadcast that never starts (its own timeout ends it)
        with pytest.raises(RuntimeError):
            list(ends[1].receive(1))

    ready = threading.Thread(target=rank1)
    ready.start()
    started = time.monotonic()
    send(ends[0], 1, 0)
    with pytest.raises(WeightSyncError, match=r"version 1: receiving ranks \[2\] not ready within 1 s"):
        ends[0].finish()
    ready.join()
    assert time.monotonic() - started < 5


def test_an_abort_stops_a_sender_waiting_for_receivers():
    ends, store = form_group(receivers=1, timeout_s=60)
    send(ends[0], 3, 0)
    request_abort("127.0.0.1", store.port, 3)
    started = time.monotonic()
    with pytest.raises(WeightSyncError, match="weight sync of version 3 aborted"):
        ends[0].finish()
    assert time.monotonic() - started < 5


def test_a_local_receiver_that_stops_reading_is_named_within_the_timeout():
    """Rank 0 must not pack over buckets a local rank has not read: it waits for it, then names it."""
    ends, _ = form_group(receivers=2, timeout_s=1.0, local=(2,))
    got: dict[int, list] = {}
    whole = threading.Thread(target=lambda: got.__setitem__(1, [(n, t.clone()) for n, t in ends[1].receive(1)]))
    whole.start()
    partial = ends[2].receive(1)
    first = threading.Thread(target=lambda: got.__setitem__(2, next(partial)[1].clone()))
    first.start()  # ready, then reads the first weight only
    started = time.monotonic()
    send(ends[0], 1, 5)
    with pytest.raises(WeightSyncError, match=r"version 1: receiving ranks \[2\] did not finish within 1 s"):
        ends[0].finish()
    whole.join()
    first.join()
    assert time.monotonic() - started < 5
    torch.testing.assert_close(got[2], weights(5)[0][1], rtol=0, atol=0)
    assert [n for n, _ in got[1]] == ["embed", "norm", "step"]


def test_a_local_receiver_waiting_for_a_bucket_ends_on_an_abort():
    ends, store = form_group(receivers=1, timeout_s=60, local=(1,))
    sender = ends[0]
    sender.begin(4)
    sender.pack(0, iter(weights(0)[:2]))  # bucket 1 never comes
    receiving = ends[1].receive(4)
    assert [next(receiving)[0] for _ in range(2)] == ["embed", "norm"]
    request_abort("127.0.0.1", store.port, 4)
    started = time.monotonic()
    with pytest.raises(WeightSyncError, match="version 4 aborted while waiting for bucket 1"):
        next(receiving)
    assert time.monotonic() - started < 5
    sender.pack(1, iter(weights(0)[2:]))
    with pytest.raises(WeightSyncError, match="weight sync of version 4 aborted"):
        sender.finish()


def test_shared_buckets_are_refused_when_the_file_system_lacks_room(tmp_path, monkeypatch):
    import os

    layouts = [plan_layout(specs(weights(0)))]
    free = type("Stats", (), {"f_bavail": 2, "f_frsize": 64})()  # 128 bytes free, the bucket needs 192
    monkeypatch.setattr(os, "statvfs", lambda path: free)
    assert shared_buckets(layouts, str(tmp_path)) is None and not list(tmp_path.iterdir())
