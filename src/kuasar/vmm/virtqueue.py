"""Split virtqueues over guest memory, sans-IO: the device side of the virtio 1.x split ring.

Layer contract: knows byte buffers only (``bytearray`` in tests, the driver's ``mmap`` s in a real
VM); no sockets, no event loop, no ``mmap`` calls; imports ``kuasar.errors`` only. A bad ring
raises :class:`RingError`, never anything else, and never touches memory outside the regions.

Addresses (vhost-user): the three ring areas are given as front-end (QEMU) virtual addresses and
are translated with each region's ``user_addr``; descriptor buffers are guest-physical addresses.

Memory ordering. The driver (the guest) runs on other CPUs while we read and write its rings, and
Python has no fences. What makes this correct on x86-64 (TSO: loads are not reordered with loads,
stores not with stores):

- every ring index is read and written as one 16-bit access through a typed ``memoryview``
  (``struct``'s little-endian packers store byte by byte, and a torn ``used.idx`` would let the
  guest see entries that are not there);
- ``avail.idx`` is read before the entries it covers (load→load order holds);
- a used element is written before ``used.idx`` (store→store order holds);
- the one store→load pair, "publish ``used.idx``, then read ``used_event``" (EVENT_IDX only),
  needs a full fence: :func:`_full_fence` takes a lock, whose atomic read-modify-write is one on
  x86-64. Without EVENT_IDX we never read the driver's ``NO_INTERRUPT`` flag: the device
  interrupts once per batch (facts §7), which is always safe.

Weakly ordered hosts (aarch64) would need real barriers; this module refuses big-endian hosts.
"""

from __future__ import annotations

import struct
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kuasar.errors import ProtocolError

__all__ = ["Chain", "GuestMemory", "Region", "RingError", "Virtqueue"]

DESC_F_NEXT = 1
DESC_F_WRITE = 2
DESC_F_INDIRECT = 4
#: The largest queue a split ring may have.
MAX_QUEUE_SIZE = 32768
#: Default bound on the bytes one descriptor chain may describe.
MAX_CHAIN_BYTES = 16 << 20

_DESC = struct.Struct("<QIHH")
_DESC_SIZE = 16
_FENCE = threading.Lock()


class RingError(ProtocolError):
    """The guest's ring is malformed: an address outside its memory, a loop, a bad length or index."""


def _full_fence() -> None:
    """A full memory fence on x86-64: the lock's atomic read-modify-write orders every access."""
    with _FENCE:
        pass


@dataclass(frozen=True, slots=True)
class Region:
    """One region of guest memory as the device sees it: where it is for the guest
    (``guest_addr``), for the front-end process (``user_addr``), and its bytes."""

    guest_addr: int
    user_addr: int
    data: memoryview

    @property
    def size(self) -> int:
        return len(self.data)


class GuestMemory:
    """Guest memory as a set of regions, every access bounds-checked.

    Args:
        regions: the regions; each ``data`` is a writable byte buffer (``bytearray``, ``mmap``).
    """

    def __init__(self, regions: Sequence[tuple[int, int, memoryview | bytearray]]) -> None:
        self.regions = tuple(Region(gpa, uva, memoryview(data).cast("B")) for gpa, uva, data in regions)
        for region in self.regions:
            if region.data.readonly:
                raise ValueError("guest memory must be writable")

    def segments(self, gpa: int, length: int) -> list[memoryview]:
        """Views of ``length`` bytes at guest-physical ``gpa`` (several where regions abut).

        Raises:
            RingError: some byte of the range is in no region.
        """
        views: list[memoryview] = []
        while length > 0:
            region = self._find(gpa, _guest_base)
            if region is None:
                raise RingError(f"guest address {gpa:#x} (+{length}) is outside guest memory")
            start = gpa - region.guest_addr
            take = min(length, region.size - start)
            views.append(region.data[start : start + take])
            gpa += take
            length -= take
        return views

    def contiguous(self, gpa: int, length: int) -> memoryview:
        """``length`` bytes at guest-physical ``gpa`` that lie in one region (a descriptor table)."""
        return self._within(gpa, length, _guest_base, "guest")

    def user_view(self, uva: int, length: int) -> memoryview:
        """``length`` bytes at front-end virtual address ``uva``, in one region (a ring area)."""
        return self._within(uva, length, _user_base, "front-end")

    def _within(self, addr: int, length: int, base: Callable[[Region], int], space: str) -> memoryview:
        region = self._find(addr, base)
        if region is None or addr + length > base(region) + region.size:
            raise RingError(f"{space} address range {addr:#x}+{length} is not inside one memory region")
        start = addr - base(region)
        return region.data[start : start + length]

    def _find(self, addr: int, base: Callable[[Region], int]) -> Region | None:
        for region in self.regions:
            if base(region) <= addr < base(region) + region.size:
                return region
        return None

    def release(self) -> None:
        """Drop our views of the buffers (so an ``mmap`` can be closed once chains are gone)."""
        for region in self.regions:
            region.data.release()


def _guest_base(region: Region) -> int:
    return region.guest_addr


def _user_base(region: Region) -> int:
    return region.user_addr


@dataclass(slots=True)
class Chain:
    """One descriptor chain, gathered: the device-readable buffers, then the device-writable ones.

    ``head`` is the index the used ring reports back.
    """

    head: int
    readable: list[memoryview] = field(default_factory=list)
    writable: list[memoryview] = field(default_factory=list)

    @property
    def readable_len(self) -> int:
        return sum(len(v) for v in self.readable)

    @property
    def writable_len(self) -> int:
        return sum(len(v) for v in self.writable)

    def read(self) -> bytes:
        """Every device-readable byte, in order."""
        if len(self.readable) == 1:
            return bytes(self.readable[0])
        return b"".join(self.readable)

    def write(self, data: bytes | bytearray | memoryview, offset: int = 0) -> int:
        """Scatter ``data`` over the writable buffers from byte ``offset`` of them; returns the
        bytes written (less than ``len(data)`` when the buffers are too short)."""
        source = memoryview(data).cast("B")
        done = 0
        for view in self.writable:
            if done >= len(source):
                break
            if offset >= len(view):
                offset -= len(view)
                continue
            take = min(len(view) - offset, len(source) - done)
            view[offset : offset + take] = source[done : done + take]
            done += take
            offset = 0
        return done


class Virtqueue:
    """The device side of one split virtqueue.

    Args:
        memory: guest memory.
        size: the queue size (a power of two up to 32768).
        desc, avail, used: the ring areas as front-end virtual addresses (SET_VRING_ADDR).
        next_avail: the first available-ring slot to take (SET_VRING_BASE).
        event_idx: VIRTIO_RING_F_EVENT_IDX was negotiated.
        indirect: VIRTIO_RING_F_INDIRECT_DESC was negotiated.
        max_chain_bytes: the most bytes one chain may describe.

    Raises:
        RingError: a size that is not a power of two, misaligned or unmapped ring areas.
    """

    def __init__(
        self,
        memory: GuestMemory,
        size: int,
        desc: int,
        avail: int,
        used: int,
        *,
        next_avail: int = 0,
        event_idx: bool = False,
        indirect: bool = True,
        max_chain_bytes: int = MAX_CHAIN_BYTES,
    ) -> None:
        if sys.byteorder != "little":
            raise RingError("virtqueues are little-endian; this host is not")
        if not 0 < size <= MAX_QUEUE_SIZE or size & (size - 1):
            raise RingError(f"queue size {size} is not a power of two up to {MAX_QUEUE_SIZE}")
        for name, addr, align in (("descriptor", desc, 16), ("available", avail, 2), ("used", used, 4)):
            if addr % align:
                raise RingError(f"{name} ring at {addr:#x} is not {align}-byte aligned")
        extra = 1 if event_idx else 0
        self.memory = memory
        self.size = size
        self.event_idx = event_idx
        self.indirect = indirect
        self.max_chain_bytes = max_chain_bytes
        self._desc = memory.user_view(desc, _DESC_SIZE * size)
        self._avail = memory.user_view(avail, 2 * (2 + size + extra)).cast("H")
        used_view = memory.user_view(used, 4 + 8 * size + 2 * extra)
        self._used_head = used_view[:4].cast("H")
        self._used_ring = used_view[4 : 4 + 8 * size].cast("I")
        self._avail_event = used_view[4 + 8 * size :].cast("H") if event_idx else None
        self.next_avail = next_avail & 0xFFFF
        self.used_idx: int = self._used_head[1]
        self._signalled_used = self.used_idx
        self._pushed = False
        #: Why the queue stopped (a malformed ring), or ``None`` while it works.
        self.error: str | None = None

    # -------------------------------------------------------------- available ring

    def pending(self) -> int:
        """How many chains the driver has made available that we have not taken.

        Raises:
            RingError: the driver's index ran more than a queue size ahead.
        """
        pending = (self._avail[1] - self.next_avail) & 0xFFFF
        if pending > self.size:
            raise RingError(f"available index is {pending} ahead of the device, over the queue size")
        return pending

    def pop(self) -> Chain | None:
        """The next available chain, or ``None`` when the driver has made none available.

        Raises:
            RingError: a bad head index or a malformed chain (the chain is consumed). The queue
                is then broken (:attr:`error`): every later ``pop`` raises the same error, until
                the front-end sets the ring up again (a new :class:`Virtqueue`).
        """
        if self.error is not None:
            raise RingError(self.error)
        try:
            return self._take()
        except RingError as exc:
            self.error = str(exc)
            raise

    def _take(self) -> Chain | None:
        if not self.pending():
            return None
        head = self._avail[2 + self.next_avail % self.size]
        self.next_avail = (self.next_avail + 1) & 0xFFFF
        if head >= self.size:
            raise RingError(f"available ring names descriptor {head}, queue size is {self.size}")
        return self._walk(head)

    def unpop(self) -> None:
        """Give back the chain :meth:`pop` just returned, untouched (the device had nothing for it)."""
        self.next_avail = (self.next_avail - 1) & 0xFFFF

    def enable_notifications(self) -> bool:
        """Ask the driver to kick us for chains after the ones taken; True if more are already
        available (take them before sleeping). Without EVENT_IDX the driver always kicks."""
        if self._avail_event is not None:
            self._avail_event[0] = self.next_avail
            _full_fence()
        return self.pending() > 0

    def _walk(self, head: int) -> Chain:
        chain = Chain(head)
        table, table_size, index = self._desc, self.size, head
        in_indirect = False
        count = total = 0
        while True:
            if index >= table_size:
                raise RingError(f"descriptor {index} is outside its table of {table_size}")
            count += 1
            if count > self.size:
                raise RingError(f"chain at {head} is longer than the queue size {self.size} (a loop?)")
            addr, length, flags, following = _DESC.unpack_from(table, index * _DESC_SIZE)
            if flags & DESC_F_INDIRECT:
                table, table_size = self._indirect_table(addr, length, flags, in_indirect)
                index, in_indirect = 0, True
                continue
            total += length
            if total > self.max_chain_bytes:
                raise RingError(f"chain at {head} describes over {self.max_chain_bytes} bytes")
            self._add_buffer(chain, addr, length, flags)
            if not flags & DESC_F_NEXT:
                return chain
            index = following

    def _indirect_table(self, addr: int, length: int, flags: int, nested: bool) -> tuple[memoryview, int]:
        if not self.indirect:
            raise RingError("indirect descriptor, but VIRTIO_RING_F_INDIRECT_DESC was not negotiated")
        if nested:
            raise RingError("indirect descriptor inside an indirect table")
        if flags & DESC_F_NEXT:
            raise RingError("indirect descriptor with the NEXT flag")
        if length == 0 or length % _DESC_SIZE or length // _DESC_SIZE > self.size:
            raise RingError(f"indirect table of {length} bytes (a multiple of 16, at most the queue size)")
        return self.memory.contiguous(addr, length), length // _DESC_SIZE

    def _add_buffer(self, chain: Chain, addr: int, length: int, flags: int) -> None:
        if not length:
            return
        views = self.memory.segments(addr, length)
        if flags & DESC_F_WRITE:
            chain.writable.extend(views)
        elif chain.writable:
            raise RingError(f"chain at {chain.head} has a readable buffer after a writable one")
        else:
            chain.readable.extend(views)

    # -------------------------------------------------------------- used ring

    def push(self, head: int, written: int) -> None:
        """Return chain ``head`` to the driver, with ``written`` bytes written into it."""
        slot = 2 * (self.used_idx % self.size)
        self._used_ring[slot] = head
        self._used_ring[slot + 1] = written
        # The element is stored before the index (x86-64 keeps stores in order).
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        self._used_head[1] = self.used_idx
        self._pushed = True

    def needs_notify(self) -> bool:
        """Whether the driver must be interrupted for what was pushed since the last call.

        Without EVENT_IDX: once per batch that pushed anything. With it: the driver's
        ``used_event`` decides (virtio's ``vring_need_event``).
        """
        if not self._pushed:
            return False
        self._pushed = False
        old, new = self._signalled_used, self.used_idx
        self._signalled_used = new
        if not self.event_idx:
            return True
        _full_fence()
        used_event = self._avail[2 + self.size]
        return (new - used_event - 1) & 0xFFFF < (new - old) & 0xFFFF

    def release(self) -> None:
        """Drop the views of the ring areas."""
        for view in (self._desc, self._avail, self._used_head, self._used_ring, self._avail_event):
            if view is not None:
                view.release()
