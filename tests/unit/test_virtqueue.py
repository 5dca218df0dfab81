"""The split-ring walker over a bytearray guest memory: chains of every shape, indirect tables,
index wrap-around, the used ring and notifications, and hostile rings (a RingError, never a crash
or an access outside guest memory)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kuasar.vmm.testing import USER_BASE, GuestRing, guest_memory
from kuasar.vmm.virtqueue import (
    DESC_F_INDIRECT,
    DESC_F_NEXT,
    DESC_F_WRITE,
    Chain,
    GuestMemory,
    RingError,
    Virtqueue,
)


def ring(size: int = 8, *, event_idx: bool = False, **kwargs: object) -> tuple[GuestRing, Virtqueue]:
    data, memory = guest_memory()
    guest = GuestRing(data, size, event_idx=event_idx)
    return guest, guest.device_queue(memory, **kwargs)


# ---------------------------------------------------------------- chains


def test_an_empty_ring_has_nothing() -> None:
    _, queue = ring()
    assert queue.pending() == 0
    assert queue.pop() is None


@pytest.mark.parametrize("indirect", [False, True])
def test_readable_then_writable_chain(indirect: bool) -> None:
    guest, queue = ring()
    head = guest.add([b"hdr!", b"payload"], [16, 8], indirect=indirect)
    chain = queue.pop()
    assert chain is not None
    assert chain.head == head
    assert chain.read() == b"hdr!payload"
    assert (chain.readable_len, chain.writable_len) == (11, 24)
    assert chain.write(b"A" * 20) == 20
    queue.push(chain.head, 20)
    assert guest.take_used() == [(head, 20)]
    assert guest.written(head, 24) == b"A" * 20 + b"\0" * 4
    assert queue.pop() is None


def test_one_writable_descriptor_holds_header_and_payload() -> None:
    """The 6.1 guest's rx chain: a single writable descriptor of 3776 bytes (facts §3)."""
    guest, queue = ring()
    head = guest.add(writable=[3776])
    chain = queue.pop()
    assert chain is not None and chain.readable == [] and chain.writable_len == 3776
    written = chain.write(b"H" * 44) + chain.write(b"p" * 100, 44)
    assert written == 144
    queue.push(head, written)
    assert guest.written(head, 144) == b"H" * 44 + b"p" * 100


def test_scatter_with_offset_crosses_buffers() -> None:
    guest, queue = ring()
    head = guest.add(writable=[3, 5, 4])
    chain = queue.pop()
    assert chain is not None
    assert chain.write(b"xyz", 0) == 3
    assert chain.write(b"0123456789", 3) == 9  # 5 + 4 bytes of room after the offset
    assert guest.written(head, 12) == b"xyz012345678"


def test_zero_length_descriptors_are_skipped() -> None:
    guest, queue = ring()
    guest.add([b"", b"ab", b""], [0, 2])
    chain = queue.pop()
    assert chain is not None and chain.read() == b"ab" and chain.writable_len == 2


def test_many_chains_in_order_and_batched_notify() -> None:
    guest, queue = ring(size=4)
    heads = [guest.add([bytes([i])]) for i in range(4)]
    assert queue.pending() == 4
    got = []
    while (chain := queue.pop()) is not None:
        got.append((chain.head, chain.read()))
        queue.push(chain.head, 0)
    assert got == [(h, bytes([i])) for i, h in enumerate(heads)]
    assert queue.needs_notify() is True
    assert queue.needs_notify() is False  # nothing pushed since
    assert [h for h, _ in guest.take_used()] == heads


def test_indices_wrap_around_65536() -> None:
    data, memory = guest_memory()
    guest = GuestRing(data, 4)
    start = 0xFFFE
    guest.set_avail_idx(start)
    struct.pack_into("<H", data, guest.used + 2, start)  # the used index the driver left
    guest.last_used = start
    queue = guest.device_queue(memory, next_avail=start)
    for round_ in range(3):  # crosses 0xFFFF -> 0 and reuses ring slots
        heads = [guest.add([b"r%d" % round_]) for _ in range(2)]
        for head in heads:
            chain = queue.pop()
            assert chain is not None and chain.head == head
            queue.push(chain.head, 1)
            guest.recycle(head)
        assert [h for h, _ in guest.take_used()] == heads
    assert queue.next_avail == (start + 6) & 0xFFFF == 4
    assert guest.used_idx() == 4


def test_unpop_gives_the_chain_back() -> None:
    guest, queue = ring()
    head = guest.add([b"x"])
    first = queue.pop()
    queue.unpop()
    again = queue.pop()
    assert first is not None and again is not None and again.head == first.head == head


def test_a_buffer_spanning_two_adjacent_regions() -> None:
    low, high = bytearray(0x10000), bytearray(0x10000)
    memory = GuestMemory([(0, USER_BASE, low), (0x10000, USER_BASE + 0x10000, high)])
    guest = GuestRing(low, 4)
    guest.write_desc(guest.desc, 0, 0xFFF0, 32, 0, 0)
    low[0xFFF0:] = b"a" * 16
    high[:16] = b"b" * 16
    guest.publish(0)
    chain = Virtqueue(
        memory, 4, USER_BASE + guest.desc, USER_BASE + guest.avail, USER_BASE + guest.used
    ).pop()
    assert chain is not None and chain.read() == b"a" * 16 + b"b" * 16 and len(chain.readable) == 2


# ---------------------------------------------------------------- event idx


def test_event_idx_notifies_only_when_the_driver_asked() -> None:
    guest, queue = ring(event_idx=True)
    guest.set_used_event(1)  # "interrupt me once used.idx passes 1"
    for _ in range(3):
        guest.add([b"x"])
    chain = queue.pop()
    assert chain is not None
    queue.push(chain.head, 0)  # used.idx 0 -> 1: not past 1
    assert queue.needs_notify() is False
    chain = queue.pop()
    assert chain is not None
    queue.push(chain.head, 0)  # 1 -> 2: crosses the event
    assert queue.needs_notify() is True


def test_event_idx_publishes_avail_event() -> None:
    guest, queue = ring(event_idx=True)
    guest.add([b"x"])
    assert queue.pop() is not None
    assert queue.enable_notifications() is False
    assert guest.avail_event() == 1
    guest.add([b"y"])
    assert queue.enable_notifications() is True  # re-check after publishing: one is waiting


def test_without_event_idx_the_flags_are_ignored_and_every_batch_notifies() -> None:
    guest, queue = ring()
    struct.pack_into("<H", guest.memory, guest.avail, 1)  # VRING_AVAIL_F_NO_INTERRUPT
    guest.add([b"x"])
    chain = queue.pop()
    assert chain is not None
    queue.push(chain.head, 0)
    assert queue.needs_notify() is True


# ---------------------------------------------------------------- hostile rings


def hostile(*descs: tuple[int, int, int, int], size: int = 8, indirect: bool = True) -> Virtqueue:
    """A queue whose descriptor table holds ``descs`` (addr, len, flags, next) with head 0."""
    guest, queue = ring(size=size, indirect=indirect)
    for index, desc in enumerate(descs):
        guest.write_desc(guest.desc, index, *desc)
    guest.publish(0)
    return queue


BUF = 0x20000  # inside the 1 MiB guest memory


@pytest.mark.parametrize(
    ("descs", "message"),
    [
        ([(BUF, 4, DESC_F_NEXT, 0)], "longer than the queue size"),  # a self-loop
        ([(BUF, 4, DESC_F_NEXT, 1), (BUF, 4, DESC_F_NEXT, 0)], "longer than the queue size"),
        ([(BUF, 4, DESC_F_NEXT, 99)], "outside its table"),
        ([(1 << 40, 4, 0, 0)], "outside guest memory"),
        ([(0xFFFF0, 0x100, 0, 0)], "outside guest memory"),  # runs past the end
        ([(2**64 - 8, 16, 0, 0)], "outside guest memory"),
        ([(BUF, 4, DESC_F_WRITE | DESC_F_NEXT, 1), (BUF, 4, 0, 0)], "readable buffer after a writable"),
        ([(BUF, 17, DESC_F_INDIRECT, 0)], "multiple of 16"),
        ([(BUF, 0, DESC_F_INDIRECT, 0)], "multiple of 16"),
        ([(BUF, 16 * 9, DESC_F_INDIRECT, 0)], "at most the queue size"),
        ([(BUF, 16, DESC_F_INDIRECT | DESC_F_NEXT, 1)], "NEXT flag"),
        ([(1 << 40, 16, DESC_F_INDIRECT, 0)], "not inside one memory region"),
        ([(BUF, 0xFFFFFFFF, 0, 0)], "describes over"),
    ],
)
def test_hostile_chains_raise_ring_error(descs: list[tuple[int, int, int, int]], message: str) -> None:
    queue = hostile(*descs)
    with pytest.raises(RingError, match=message):
        queue.pop()


def test_a_broken_queue_stays_broken() -> None:
    guest, queue = ring()
    guest.publish(99)  # a head outside the table
    guest.add([b"fine"])
    with pytest.raises(RingError, match="names descriptor 99"):
        queue.pop()
    assert queue.error is not None
    with pytest.raises(RingError, match="names descriptor 99"):
        queue.pop()  # the good chain behind it is not taken: the ring is not trusted any more


def test_nested_indirect_tables_are_refused() -> None:
    guest, queue = ring()
    table = guest.alloc(16)
    guest.write_desc(table, 0, table, 16, DESC_F_INDIRECT, 0)
    guest.write_desc(guest.desc, 0, table, 16, DESC_F_INDIRECT, 0)
    guest.publish(0)
    with pytest.raises(RingError, match="inside an indirect table"):
        queue.pop()


def test_a_loop_inside_an_indirect_table_is_bounded() -> None:
    guest, queue = ring()
    table = guest.alloc(32)
    guest.write_desc(table, 0, BUF, 4, DESC_F_NEXT, 1)
    guest.write_desc(table, 1, BUF, 4, DESC_F_NEXT, 0)
    guest.write_desc(guest.desc, 0, table, 32, DESC_F_INDIRECT, 0)
    guest.publish(0)
    with pytest.raises(RingError, match="longer than the queue size"):
        queue.pop()


def test_indirect_without_the_feature_is_refused() -> None:
    queue = hostile((BUF, 16, DESC_F_INDIRECT, 0), indirect=False)
    with pytest.raises(RingError, match="not negotiated"):
        queue.pop()


def test_a_chain_over_the_byte_bound_is_refused() -> None:
    guest, queue = ring(max_chain_bytes=64)
    guest.add([b"x" * 40, b"y" * 40])
    with pytest.raises(RingError, match="over 64 bytes"):
        queue.pop()


def test_a_head_outside_the_table() -> None:
    guest, queue = ring(size=4)
    guest.publish(7)
    with pytest.raises(RingError, match="names descriptor 7"):
        queue.pop()


def test_an_available_index_far_ahead() -> None:
    guest, queue = ring(size=4)
    guest.set_avail_idx(5)
    with pytest.raises(RingError, match="over the queue size"):
        queue.pop()


@pytest.mark.parametrize(
    ("size", "desc", "message"),
    [
        (3, 0x1000, "power of two"),
        (0, 0x1000, "power of two"),
        (65536, 0x1000, "power of two"),
        (8, 0x1008, "16-byte aligned"),
        (8, 0x10_0000, "not inside one memory region"),
    ],
)
def test_bad_ring_set_up(size: int, desc: int, message: str) -> None:
    _, memory = guest_memory()
    with pytest.raises(RingError, match=message):
        Virtqueue(memory, size, USER_BASE + desc, USER_BASE + 0x2000, USER_BASE + 0x3000)


def test_ring_areas_are_translated_with_the_user_address() -> None:
    _, memory = guest_memory()
    with pytest.raises(RingError, match="front-end address"):
        Virtqueue(memory, 8, 0x1000, 0x2000, 0x3000)  # guest-physical, not front-end addresses


def test_a_hostile_ring_never_writes_outside_guest_memory() -> None:
    outside = bytearray(b"\xaa" * 64)
    data = bytearray(0x10000)
    memory = GuestMemory([(0, USER_BASE, data)])
    guest = GuestRing(data, 4)
    guest.write_desc(guest.desc, 0, 0xFFF8, 64, DESC_F_WRITE, 0)  # 56 of 64 bytes outside
    guest.publish(0)
    queue = guest.device_queue(memory)
    with pytest.raises(RingError):
        queue.pop()
    assert outside == b"\xaa" * 64 and len(data) == 0x10000


def test_chain_read_of_many_views() -> None:
    data = bytearray(b"abcdef")
    view = memoryview(data)
    chain = Chain(0, [view[0:2], view[2:4], view[4:6]])
    assert chain.read() == b"abcdef"


# ---------------------------------------------------------------- any table, any ring


_descriptor = st.tuples(
    st.one_of(st.integers(0, 0x10_0000), st.integers(0, 2**64 - 1)),
    st.one_of(st.integers(0, 4096), st.integers(0, 2**32 - 1)),
    st.integers(0, 7),
    st.integers(0, 15),
)


@settings(max_examples=300, deadline=None)
@given(
    table=st.lists(_descriptor, min_size=8, max_size=8),
    heads=st.lists(st.integers(0, 9), min_size=1, max_size=8),
    indirect=st.lists(_descriptor, max_size=8),
)
def test_any_ring_gives_chains_inside_memory_or_a_ring_error(
    table: list[tuple[int, int, int, int]],
    heads: list[int],
    indirect: list[tuple[int, int, int, int]],
) -> None:
    data, memory = guest_memory()
    guest = GuestRing(data, 8)
    for index, desc in enumerate(table):
        guest.write_desc(guest.desc, index, *desc)
    for index, desc in enumerate(indirect):
        guest.write_desc(0x8_0000, index, *desc)  # an indirect table a descriptor may point at
    for head in heads:
        guest.publish(head)
    queue = guest.device_queue(memory, max_chain_bytes=1 << 20)
    for _ in heads:
        try:
            chain = queue.pop()
        except RingError:
            assert queue.error is not None
            return
        assert chain is not None
        views = chain.readable + chain.writable
        assert sum(len(v) for v in views) <= 1 << 20 and len(views) <= 2 * 8
        chain.write(b"\xff" * chain.writable_len)
        queue.push(chain.head, chain.writable_len)
    assert len(data) == 1 << 20
