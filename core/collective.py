"""Weights over a collective: bucket layouts, and the two ends of a per-run broadcast group.

A stateless process group (its own TCP store, not torch's default group) joins learner rank 0
(rank 0 here) and every rollout engine (ranks 1..n): gloo on CPU, NCCL on GPUs, the same code.
Rank 0 packs its weights into flat byte buffers, one per bucket, each described once by a
`BucketLayout` (name, dtype, shape and byte offset of every tensor), and broadcasts them; a
receiver gets views of its own buffers, so its reload starts on the first bucket while later
ones are still on the wire.

Receivers on rank 0's own node (CPU) need no wire: rank 0 packs into buffers in one
shared-memory file that they map at joining (`shared_buckets`, `map_buckets`), and each reads a
bucket once rank 0 says it is packed, as NCCL moves data within a node through shared memory.
Only the receivers on other nodes join the process group itself.

Failure handling is bounded: a broadcast starts only when every receiver has said it is ready
(so a receiver still busy generating does not count against the transfer's timeout), each
transfer runs under the group's timeout, and the receivers that did not finish are named.
No Ray here: the actors call these with what the driver handed them.
"""
from __future__ import annotations

import datetime
import os
import queue
import threading
import time
import uuid
import warnings
from dataclasses import dataclass

import numpy as np
import torch

ALIGN = 64  # byte alignment of every tensor in a bucket: a view of any dtype starts aligned


@dataclass(frozen=True)
class TensorSlot:
    name: str
    dtype: str  # torch dtype name without the "torch." prefix
    shape: tuple[int, ...]
    offset: int  # bytes from the start of the bucket

    @property
    def nbytes(self) -> int:
        return _numel(self.shape) * _itemsize(self.dtype)


@dataclass(frozen=True)
class BucketLayout:
    slots: tuple[TensorSlot, ...]
    nbytes: int


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _itemsize(dtype: str) -> int:
    return torch.empty(0, dtype=getattr(torch, dtype)).element_size()


def plan_layout(specs: list[tuple[str, torch.dtype, tuple[int, ...]]]) -> BucketLayout:
    """Byte layout of one bucket from (name, dtype, full shape) in send order; offsets aligned."""
    slots, offset = [], 0
    for name, dtype, shape in specs:
        slot = TensorSlot(name, str(dtype).removeprefix("torch."), tuple(int(d) for d in shape), offset)
        slots.append(slot)
        offset += -(-slot.nbytes // ALIGN) * ALIGN
    return BucketLayout(tuple(slots), offset)


def views(buffer: torch.Tensor, layout: BucketLayout) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) views into a flat uint8 `buffer` laid out by `layout` (no copy)."""
    return [(s.name, buffer[s.offset:s.offset + s.nbytes].view(getattr(torch, s.dtype)).view(s.shape))
            for s in layout.slots]


def pack(buffer: torch.Tensor, layout: BucketLayout, named) -> None:
    """Copy the (name, tensor) pairs of one bucket, in layout order, into `buffer`."""
    slots = views(buffer, layout)
    count = 0
    for (name, tensor), (slot_name, view) in zip(named, slots):
        if name != slot_name or tensor.shape != view.shape or tensor.dtype != view.dtype:
            raise ValueError(f"weight {name} {tuple(tensor.shape)} {tensor.dtype} does not match the "
                             f"planned {slot_name} {tuple(view.shape)} {view.dtype}")
        view.copy_(tensor)
        count += 1
    if count != len(slots):
        raise ValueError(f"bucket packed with {count} of its {len(slots)} weights")


def device_id() -> str:
    """Where this process's weights live: "cpu", or "cuda:<GPU uuid>" (NCCL joins one process
    per GPU, so two ends on one GPU must not form a group)."""
    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{torch.cuda.get_device_properties(torch.cuda.current_device()).uuid}"


def shared_buckets(layouts: list[BucketLayout], directory: str = "/dev/shm") -> tuple[str, list[torch.Tensor]] | None:
    """Rank 0's bucket buffers in one new shared-memory file: (its path, one flat uint8 tensor
    per bucket). None when the file system has less room than the weights (a sparse file that
    outgrows it kills its writer with SIGBUS): then every receiver joins the group instead."""
    total = sum(layout.nbytes for layout in layouts)
    stats = os.statvfs(directory)
    if stats.f_bavail * stats.f_frsize < total:
        return None
    path = os.path.join(directory, f"rewardflow-buckets-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    flat = torch.from_numpy(np.memmap(path, dtype=np.uint8, mode="w+", shape=(max(total, 1),)))
    return path, _split(flat, layouts)


def map_buckets(path: str, layouts: list[BucketLayout]) -> list[torch.Tensor]:
    """A receiver's read-only view of rank 0's `shared_buckets` (mapped once, kept after the
    file's name is gone)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        flat = torch.from_numpy(np.memmap(path, dtype=np.uint8, mode="r"))
    return _split(flat, layouts)


def _split(flat: torch.Tensor, layouts: list[BucketLayout]) -> list[torch.Tensor]:
    out, offset = [], 0
    for layout in layouts:
        out.append(flat[offset:offset + layout.nbytes])
        offset += layout.nbytes
    return out


def unlink(path: str | None) -> None:
    """Remove a shared file's name once every reader has mapped it (the mappings stay valid)."""
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


class WeightSyncError(RuntimeError):
    """A collective weight sync that failed or timed out; the message names the rank(s). `dead`:
    (actor, error) of the receivers that died (filled in by the driver)."""

    dead: tuple = ()


# -- the group ------------------------------------------------------------------------------
def open_store(host: str, world: int, timeout_s: float):
    """Rank 0's side of the group's TCP store on a free port of `host`; returns the store."""
    from torch.distributed import TCPStore

    return TCPStore(host, 0, world, True, timeout=datetime.timedelta(seconds=timeout_s), wait_for_workers=False)


def join_group(backend: str, store, host: str, port: int, rank: int, world: int, timeout_s: float,
               group_ranks: list[int] | None = None):
    """Join the broadcast group as `rank` (blocks until all `world` ranks have joined). Rank 0
    passes the store it opened; the others connect to it at host:port. `group_ranks` (default:
    all) are the ranks that build the process group itself; the rest read rank 0's shared
    buckets. Returns (store, group), group None outside it (or when rank 0 would be alone)."""
    import torch.distributed as dist

    if backend not in ("gloo", "nccl"):
        raise ValueError(f"unknown collective backend {backend!r} (gloo or nccl)")
    timeout = datetime.timedelta(seconds=timeout_s)
    if store is None:
        store = dist.TCPStore(host, port, world, False, timeout=timeout)
    # Every rank checks in before any builds the group, so a member that died before joining
    # ends the forming on `request_abort(host, port, None)` instead of at the timeout.
    store.set(f"member/{rank}", "1")
    store.add("members", 1)
    deadline = time.monotonic() + timeout_s
    while store.add("members", 0) < world:
        if store.check(["form/abort"]):
            raise WeightSyncError("forming the weight-broadcast group was aborted (a member died)")
        if time.monotonic() > deadline:
            missing = [r for r in range(world) if not store.check([f"member/{r}"])]
            raise WeightSyncError(f"ranks {missing} did not join the weight-broadcast group within {timeout_s:g} s")
        time.sleep(0.005)
    group_ranks = list(range(world)) if group_ranks is None else sorted(group_ranks)
    if rank not in group_ranks or len(group_ranks) == 1:
        return store, None
    prefixed = dist.PrefixStore("rewardflow-weights", store)
    rank, world = group_ranks.index(rank), len(group_ranks)
    if backend == "nccl":
        options = dist.ProcessGroupNCCL.Options()
        options._timeout = timeout
        group = dist.ProcessGroupNCCL(prefixed, rank, world, options)
    else:
        group = dist.ProcessGroupGloo(prefixed, rank, world, timeout)
    return store, group


def _broadcast(group, buffer: torch.Tensor):
    import torch.distributed as dist

    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    return group.broadcast([buffer], opts)


class WeightSender:
    """Rank 0: broadcasts packed buckets from a background thread, so the learner trains on while
    receivers that are still generating join later. `begin(version)`, then `pack` each bucket in
    order, then `finish()`; the buffers hold one copy of the weights between syncs. With
    `buffers` from `shared_buckets`, the `local` ranks read them in place: each bucket is
    announced to them once packed, and a sync ends when they have read every one."""

    def __init__(self, store, group, layouts: list[BucketLayout], receivers: int, device, timeout_s: float,
                 buffers: list[torch.Tensor] | None = None, local: tuple[int, ...] = ()):
        self.store, self.group, self.layouts = store, group, layouts
        self.receivers, self.timeout_s, self.local = receivers, timeout_s, tuple(local)
        self.buffers = buffers if buffers is not None else [
            torch.empty(layout.nbytes, dtype=torch.uint8, device=device) for layout in layouts]
        self.thread: threading.Thread | None = None
        self.packed: queue.Queue[int | None] = queue.Queue()
        self.error: BaseException | None = None
        self.seconds = 0.0

    def begin(self, version: int) -> None:
        self.finish()  # a previous sync must be done before its buffers are overwritten
        self.packed, self.error = queue.Queue(), None
        self.thread = threading.Thread(target=self._send, args=(version,), daemon=True, name="weight-sender")
        self.thread.start()

    def pack(self, index: int, named) -> None:
        pack(self.buffers[index], self.layouts[index], named)
        if self.buffers[index].is_cuda:
            torch.cuda.current_stream().synchronize()  # the sender thread uses its own stream
        self.packed.put(index)

    def finish(self) -> float:
        """Wait for the last broadcast; raises `WeightSyncError` if it failed. Its seconds."""
        if self.thread is None:
            return self.seconds
        self.thread.join()
        self.thread = None
        if self.error is not None:
            raise self.error
        return self.seconds

    def _send(self, version: int) -> None:
        try:
            self._wait_ready(version)
            started = time.perf_counter()
            # Each bucket goes out as soon as it is packed; the group's threads send several at once.
            sending = []
            for _ in self.buffers:
                index = self.packed.get()
                if self.local:
                    self.store.set(f"v{version}/packed/{index}", "1")
                if self.group is not None:
                    sending.append(_broadcast(self.group, self.buffers[index]))
            for work in sending:
                work.wait()
            if self.buffers and self.buffers[0].is_cuda:  # NCCL's wait only orders streams
                torch.cuda.current_stream().synchronize()
            self._wait_read(version)
            self.seconds = time.perf_counter() - started
        except BaseException as e:  # reported by finish()
            self.error = e if isinstance(e, WeightSyncError) else WeightSyncError(
                f"weight sync of version {version} failed; receiving ranks that did not finish: "
                f"{self.unfinished(version)}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")

    def _wait_ready(self, version: int) -> None:
        """Every receiver is in its receive call. The timeout runs from the first one's arrival:
        receivers of the asynchronous loop join after the generations queued before the sync."""
        first = None
        while (ready := self.store.add(f"v{version}/ready", 0)) < self.receivers:
            if self.store.check([f"v{version}/abort"]):
                raise WeightSyncError(f"weight sync of version {version} aborted")
            if ready and first is None:
                first = time.monotonic()
            if first is not None and time.monotonic() - first > self.timeout_s:
                self.store.set(f"v{version}/abort", "1")  # the ready receivers stop waiting too
                raise WeightSyncError(f"weight sync of version {version}: receiving ranks "
                                      f"{self.unfinished(version, 'ready')} not ready within {self.timeout_s:g} s")
            time.sleep(0.005)
        self.store.set(f"v{version}/go", "1")

    def _wait_read(self, version: int) -> None:
        """The local ranks have read every shared bucket (its next `pack` may overwrite them)."""
        deadline = time.monotonic() + self.timeout_s
        while left := [r for r in self.local if not self.store.check([f"v{version}/done/{r}"])]:
            if self.store.check([f"v{version}/abort"]):
                raise WeightSyncError(f"weight sync of version {version} aborted")
            if time.monotonic() > deadline:
                self.store.set(f"v{version}/abort", "1")
                raise WeightSyncError(f"weight sync of version {version}: receiving ranks {left} "
                                      f"did not finish within {self.timeout_s:g} s")
            time.sleep(0.002)

    def unfinished(self, version: int, what: str = "done") -> list[int]:
        return [r for r in range(1, self.receivers + 1) if not self.store.check([f"v{version}/{what}/{r}"])]


def request_abort(host: str, port: int, version: int | None) -> None:
    """Stop every rank from waiting for the receivers of `version` (one of them is known to be
    dead), or with None, for the members of a group being formed."""
    from torch.distributed import TCPStore

    key = "form/abort" if version is None else f"v{version}/abort"
    TCPStore(host, port, is_master=False, timeout=datetime.timedelta(seconds=10)).set(key, "1")


class WeightReceiver:
    """Ranks 1..n: receive every bucket into buffers allocated once, yielding views bucket by
    bucket as each arrives (later buckets keep arriving meanwhile). Given `shared` (rank 0's
    `shared_buckets`, mapped by `map_buckets`) it is outside the group and reads those in place
    instead, each bucket once rank 0 has packed it."""

    def __init__(self, store, group, layouts: list[BucketLayout], rank: int, device, timeout_s: float,
                 shared: list[torch.Tensor] | None = None):
        self.store, self.group, self.layouts, self.rank = store, group, layouts, rank
        self.timeout_s, self.shared = timeout_s, shared is not None
        self.buffers = shared if shared is not None else [
            torch.empty(layout.nbytes, dtype=torch.uint8, device=device) for layout in layouts]

    def receive(self, version: int):
        """(name, tensor) for every weight, in layout order; views of this receiver's buffers (or
        rank 0's shared ones), valid until the next `receive` (or sync)."""
        self.store.set(f"v{version}/ready/{self.rank}", "1")
        self.store.add(f"v{version}/ready", 1)
        # The broadcast starts once every receiver is ready (rank 0 says "go"); an aborted sync
        # (a receiver died first) ends here instead of in a broadcast that never comes.
        self._wait_for(version, "go", "for the other receivers", None)
        if self.shared:
            for index, (buffer, layout) in enumerate(zip(self.buffers, self.layouts)):
                self._wait_for(version, f"packed/{index}", f"for bucket {index}", self.timeout_s)
                yield from views(buffer, layout)
        else:
            pending = [_broadcast(self.group, buffer) for buffer in self.buffers]
            for work, buffer, layout in zip(pending, self.buffers, self.layouts):
                work.wait()
                if buffer.is_cuda:
                    torch.cuda.current_stream().synchronize()
                yield from views(buffer, layout)
        self.store.set(f"v{version}/done/{self.rank}", "1")

    def _wait_for(self, version: int, key: str, what: str, timeout_s: float | None) -> None:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self.store.check([f"v{version}/{key}"]):
            if self.store.check([f"v{version}/abort"]):
                raise WeightSyncError(f"weight sync of version {version} aborted while waiting {what}")
            if deadline is not None and time.monotonic() > deadline:
                raise WeightSyncError(f"weight sync of version {version}: waited {what} for {timeout_s:g} s")
            time.sleep(0.001)
