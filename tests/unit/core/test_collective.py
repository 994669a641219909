"""core/collective.py: bucket layouts, and a real gloo broadcast group between threads."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from core.collective import (
    ALIGN, WeightReceiver, WeightSender, WeightSyncError, join_group, open_store, pack, plan_layout,
    request_abort, views,
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


def form_group(receivers: int, timeout_s: float):
    """A sender and `receivers` receivers joined over gloo, each end in its own thread."""
    named = weights(0)
    layouts = [plan_layout(specs(named[:2])), plan_layout(specs(named[2:]))]
    store = open_store("127.0.0.1", receivers + 1, timeout_s)
    ends: dict[int, object] = {}

    def join(rank):
        s, g = join_group("gloo", store if rank == 0 else None, "127.0.0.1", store.port, rank, receivers + 1, timeout_s)
        ends[rank] = (WeightSender(s, g, layouts, receivers, "cpu", timeout_s) if rank == 0
                      else WeightReceiver(s, g, layouts, rank, "cpu"))

    threads = [threading.Thread(target=join, args=(r,)) for r in range(receivers + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ends, store


def send(sender, version: int, seed: int):
    named = weights(seed)
    sender.begin(version)
    sender.pack(0, iter(named[:2]))
    sender.pack(1, iter(named[2:]))


def test_every_receiver_gets_every_version_bit_exact():
    ends, _ = form_group(receivers=2, timeout_s=20)
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
