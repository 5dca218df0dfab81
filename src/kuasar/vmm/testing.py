"""Test harness, shipped like ``kuasar.ttrpc.testing``: the guest's side of a split ring.

Layer contract: sans-IO, bytes only; imports this package's :mod:`.virtqueue` and
:mod:`.vsock_packet`. Production code never imports it.

:class:`GuestRing` plays the virtio driver (what the guest kernel does): it lays a split ring out in
a guest memory buffer, makes descriptor chains available (direct or through an indirect table, of
any shape), and reads the used ring back. It writes raw descriptors too, so tests can build
hostile rings. :func:`guest_packet` builds a vsock packet as a guest sends it.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from kuasar.vmm.virtqueue import DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, GuestMemory, Virtqueue
from kuasar.vmm.vsock_packet import HOST_CID, TYPE_STREAM, Header

__all__ = ["USER_BASE", "GuestRing", "guest_memory", "guest_packet"]

#: Where tests pretend the front-end mapped guest memory (so UVA != GPA, as under QEMU).
USER_BASE = 0x7F00_0000_0000
_DESC = struct.Struct("<QIHH")


def guest_memory(size: int = 1 << 20) -> tuple[bytearray, GuestMemory]:
    """A zeroed guest memory of ``size`` bytes at GPA 0 and UVA :data:`USER_BASE`."""
    data = bytearray(size)
    return data, GuestMemory([(0, USER_BASE, data)])


@dataclass
class _Posted:
    indices: list[int]
    writable: list[tuple[int, int]]


class GuestRing:
    """The driver side of one split ring at guest-physical ``base`` in ``memory``.

    Buffers are carved from a heap, ``heap=(start, end)`` guest-physical; by default from the end
    of the ring to the end of memory.
    """

    def __init__(
        self,
        memory: bytearray | mmap.mmap,
        size: int,
        *,
        base: int = 0x1000,
        event_idx: bool = False,
        heap: tuple[int, int] | None = None,
    ) -> None:
        self.memory = memory
        self.size = size
        self.event_idx = event_idx
        self.desc = base
        self.avail = base + 16 * size
        used = self.avail + 2 * (3 + size)
        self.used = (used + 3) & ~3
        start, self._heap_end = heap or ((self.used + 4 + 8 * size + 2 + 15) & ~15, len(memory))
        self._heap = self._heap_start = start
        self._free = list(range(size))
        self.avail_idx = 0
        self.last_used = 0
        self.posted: dict[int, _Posted] = {}

    def device_queue(self, memory: GuestMemory, **kwargs: object) -> Virtqueue:
        """The device's :class:`Virtqueue` over this ring (addresses as the front-end gives them)."""
        return Virtqueue(
            memory,
            self.size,
            USER_BASE + self.desc,
            USER_BASE + self.avail,
            USER_BASE + self.used,
            event_idx=self.event_idx,
            **kwargs,  # type: ignore[arg-type]
        )

    @property
    def free_descriptors(self) -> int:
        return len(self._free)

    # ------------------------------------------------------------ memory

    def alloc(self, length: int, data: bytes = b"") -> int:
        """``length`` bytes of heap (16-aligned), filled with ``data``; returns the GPA. The heap is
        a ring: once full it starts again at the bottom, so keep fewer bytes in flight than it holds."""
        if self._heap + length > self._heap_end:  # wrap: tests recycle buffers in order
            self._heap = self._heap_start
        gpa = self._heap
        self._heap = (self._heap + max(length, 1) + 15) & ~15
        if self._heap > self._heap_end:
            raise MemoryError("guest heap exhausted")
        self.memory[gpa : gpa + len(data)] = data
        return gpa

    def read(self, gpa: int, length: int) -> bytes:
        return bytes(self.memory[gpa : gpa + length])

    def write_desc(self, table: int, index: int, addr: int, length: int, flags: int, following: int) -> None:  # noqa: PLR0917
        _DESC.pack_into(self.memory, table + 16 * index, addr, length, flags, following)

    # ------------------------------------------------------------ available ring

    def add(
        self, readable: Sequence[bytes] = (), writable: Sequence[int] = (), *, indirect: bool = False
    ) -> int:
        """Make one chain available: ``readable`` buffers then ``writable`` ones of those sizes."""
        buffers = [(self.alloc(len(b), b), len(b), 0) for b in readable]
        buffers += [(self.alloc(n), n, DESC_F_WRITE) for n in writable]
        if indirect:
            table = self.alloc(16 * len(buffers))
            self._link(table, list(range(len(buffers))), buffers)
            head = self._free.pop(0)
            indices = [head]
            self.write_desc(self.desc, head, table, 16 * len(buffers), DESC_F_INDIRECT, 0)
        else:
            indices = [self._free.pop(0) for _ in buffers]
            self._link(self.desc, indices, buffers)
            head = indices[0]
        self.posted[head] = _Posted(indices, [(a, n) for a, n, f in buffers if f & DESC_F_WRITE])
        self.publish(head)
        return head

    def _link(self, table: int, indices: list[int], buffers: list[tuple[int, int, int]]) -> None:
        for pos, (index, (addr, length, flags)) in enumerate(zip(indices, buffers, strict=True)):
            last = pos == len(indices) - 1
            following = 0 if last else indices[pos + 1]
            self.write_desc(table, index, addr, length, flags | (0 if last else DESC_F_NEXT), following)

    def publish(self, head: int) -> None:
        """Put ``head`` in the available ring and bump ``avail.idx`` (wrapping at 2^16)."""
        slot = self.avail + 4 + 2 * (self.avail_idx % self.size)
        struct.pack_into("<H", self.memory, slot, head)
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        struct.pack_into("<H", self.memory, self.avail + 2, self.avail_idx)

    def set_avail_idx(self, value: int) -> None:
        self.avail_idx = value & 0xFFFF
        struct.pack_into("<H", self.memory, self.avail + 2, self.avail_idx)

    def set_used_event(self, value: int) -> None:
        struct.pack_into("<H", self.memory, self.avail + 4 + 2 * self.size, value)

    # ------------------------------------------------------------ used ring

    def used_idx(self) -> int:
        value: int = struct.unpack_from("<H", self.memory, self.used + 2)[0]
        return value

    def avail_event(self) -> int:
        value: int = struct.unpack_from("<H", self.memory, self.used + 4 + 8 * self.size)[0]
        return value

    def take_used(self) -> list[tuple[int, int]]:
        """Every used element since the last call, as ``(head, written)``."""
        out = []
        while self.last_used != self.used_idx():
            slot = self.used + 4 + 8 * (self.last_used % self.size)
            head, written = struct.unpack_from("<II", self.memory, slot)
            out.append((head, written))
            self.last_used = (self.last_used + 1) & 0xFFFF
        return out

    def written(self, head: int, length: int) -> bytes:
        """The first ``length`` bytes the device wrote into chain ``head``'s writable buffers."""
        data = b"".join(self.read(a, n) for a, n in self.posted[head].writable)
        return data[:length]

    def recycle(self, head: int) -> None:
        """Return a used chain's descriptors to the free list (its heap bytes are not reused)."""
        posted = self.posted.pop(head, None)
        self._free.extend(posted.indices if posted is not None else [head])


def guest_packet(
    op: int,
    *,
    src_port: int,
    dst_port: int,
    payload: bytes = b"",
    flags: int = 0,
    buf_alloc: int = 256 * 1024,
    fwd_cnt: int = 0,
    guest_cid: int = 3,
    type_: int = TYPE_STREAM,
) -> bytes:
    """A packet from guest ``guest_cid:src_port`` to host ``2:dst_port``."""
    header = Header(
        guest_cid, HOST_CID, src_port, dst_port, len(payload), type_, op, flags, buf_alloc, fwd_cnt
    )
    return header.encode() + payload
