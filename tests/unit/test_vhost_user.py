"""The sans-IO vhost-user codec, Connection and Backend: round trips, bounds (checked before
buffering), descriptors alongside, REPLY_ACK, every split of the stream, and QEMU 7.2's whole
vhost-user-vsock-pci sequence (facts file) against the backend over a bytearray guest memory."""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kuasar.errors import KuasarError
from kuasar.vmm import vhost_user as vu
from kuasar.vmm.backend import F_EVENT_IDX, F_INDIRECT_DESC, F_PROTOCOL_FEATURES, F_VERSION_1, Backend
from kuasar.vmm.testing import USER_BASE, GuestRing, guest_memory
from kuasar.vmm.vhost_user import (
    ConfigSpace,
    Connection,
    MemoryRegion,
    Message,
    ProtocolFeature,
    Request,
    VhostUserError,
    VringAddr,
    VringFile,
    VringState,
)
from kuasar.vmm.virtqueue import GuestMemory

NEED_REPLY = vu.VERSION | vu.FLAG_NEED_REPLY
ACKED = ProtocolFeature.REPLY_ACK | ProtocolFeature.CONFIG


def msg(request: int, payload: bytes = b"", flags: int = vu.VERSION) -> bytes:
    return struct.pack("<III", request, flags, len(payload)) + payload


def u64(request: int, value: int, flags: int = vu.VERSION) -> bytes:
    return msg(request, struct.pack("<Q", value), flags)


def feed_all(conn: Connection, data: bytes, fds: Sequence[int] = ()) -> list[Message]:
    conn.receive_data(data, fds)
    out = []
    while (message := conn.next_request()) is not None:
        out.append(message)
    return out


# ---------------------------------------------------------------- payload codecs


def test_payload_round_trips() -> None:
    assert VringState.decode(VringState(1, 256).encode()) == VringState(1, 256)
    addr = VringAddr(1, 0, 0x7F00_0000_1000, 0x7F00_0000_3000, 0x7F00_0000_2000, 0)
    assert VringAddr.decode(addr.encode()) == addr
    assert VringFile.decode(VringFile(1, True).encode()) == VringFile(1, True)
    assert VringFile.decode(VringFile(0, False).encode()) == VringFile(0, False)
    regions = (
        MemoryRegion(0, 1 << 29, 0x7F00_0000_0000, 0),
        MemoryRegion(1 << 32, 4096, 0x7F10_0000_0000, 0),
    )
    assert vu.decode_memory_table(vu.encode_memory_table(regions)) == regions
    config = ConfigSpace(0, 0, struct.pack("<Q", 3))
    assert ConfigSpace.decode(config.encode()) == config
    assert vu.decode_u64(vu.encode_u64(2**64 - 1)) == 2**64 - 1


@pytest.mark.parametrize(
    ("decode", "payload", "message"),
    [
        (VringState.decode, b"\0" * 7, "expected 8"),
        (VringAddr.decode, b"\0" * 41, "expected 40"),
        (VringFile.decode, struct.pack("<Q", 0x200), "unknown bits"),
        (vu.decode_u64, b"", "expected 8"),
        (vu.decode_memory_table, b"\0" * 4, "no header"),
        (vu.decode_memory_table, struct.pack("<II", 0, 0), "0 regions"),
        (vu.decode_memory_table, struct.pack("<II", 9, 0) + b"\0" * 288, "9 regions"),
        (vu.decode_memory_table, struct.pack("<II", 1, 0) + b"\0" * 31, "expected 40"),
        (vu.decode_memory_table, struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, 0, 0, 0), "empty"),
        (
            vu.decode_memory_table,
            struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 2**64 - 4096, 8192, 0, 0),
            "wraps",
        ),
        (ConfigSpace.decode, b"\0" * 11, "shorter than its header"),
        (ConfigSpace.decode, struct.pack("<III", 0, 257, 0), "exceeds 256"),
        (ConfigSpace.decode, struct.pack("<III", 250, 8, 0) + b"\0" * 8, "exceeds 256"),
        (ConfigSpace.decode, struct.pack("<III", 0, 8, 0) + b"\0" * 4, "does not hold"),
    ],
)
def test_payload_bounds(decode: object, payload: bytes, message: str) -> None:
    with pytest.raises(VhostUserError, match=message):
        decode(payload)  # type: ignore[operator]


# ---------------------------------------------------------------- Connection framing


def test_header_size_checked_before_the_payload_is_buffered() -> None:
    conn = Connection()
    conn.receive_data(struct.pack("<III", Request.SET_OWNER, vu.VERSION, 10**9))
    with pytest.raises(VhostUserError, match="exceeds 4096"):
        conn.next_request()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (msg(Request.SET_FEATURES, b"\0" * 4), "expected 8"),
        (msg(Request.SET_VRING_ADDR, b"\0" * 8), "expected 40"),
        (msg(Request.GET_FEATURES, b"\0"), "expected 0"),
        (msg(Request.SET_MEM_TABLE, b"\0" * 300), "over 8 regions"),
        (msg(Request.GET_CONFIG, b"\0" * 300), "over 256 config bytes"),
        (msg(Request.SET_OWNER, flags=0), "unsupported version 0"),
        (msg(Request.SET_OWNER, flags=2), "unsupported version 2"),
        (msg(Request.SET_OWNER, flags=vu.VERSION | vu.FLAG_REPLY), "a reply sent to the backend"),
        (msg(999, b"\0" * 5000), "exceeds 4096"),
    ],
)
def test_bad_headers(data: bytes, message: str) -> None:
    with pytest.raises(VhostUserError, match=message):
        feed_all(Connection(), data)


def test_unknown_requests_within_bounds_are_handed_out() -> None:
    (message,) = feed_all(Connection(), msg(200, b"abc"))
    assert (message.request, message.payload, message.name) == (200, b"abc", "request 200")


REALIZE = b"".join(
    [
        msg(Request.GET_FEATURES),
        msg(Request.GET_PROTOCOL_FEATURES),
        u64(Request.SET_PROTOCOL_FEATURES, ACKED),
        msg(Request.SET_OWNER),
        msg(Request.GET_FEATURES),
        u64(Request.SET_VRING_CALL, 0x100),
        u64(Request.SET_VRING_ERR, 0x101),
        msg(Request.GET_CONFIG, ConfigSpace(0, 0, b"\0" * 8).encode()),
    ]
)
REALIZE_CODES = [
    Request.GET_FEATURES,
    Request.GET_PROTOCOL_FEATURES,
    Request.SET_PROTOCOL_FEATURES,
    Request.SET_OWNER,
    Request.GET_FEATURES,
    Request.SET_VRING_CALL,
    Request.SET_VRING_ERR,
    Request.GET_CONFIG,
]


def drain(conn: Connection, backend: Backend | None = None) -> list[Message]:
    """Take every complete request, answering the ones that need it (as a backend would)."""
    out = []
    while (message := conn.next_request()) is not None:
        out.append(message)
        if message.request in vu.REPLYING:
            conn.reply(message, b"")
        else:
            conn.ack(message)
    return out


@pytest.mark.parametrize("split", range(len(REALIZE) + 1))
def test_every_split_of_the_realize_stream(split: int) -> None:
    conn = Connection(ACKED)
    got = []
    for chunk in (REALIZE[:split], REALIZE[split:]):
        conn.receive_data(chunk)
        got += drain(conn)
    assert [m.request for m in got] == REALIZE_CODES
    assert got[-1].payload == ConfigSpace(0, 0, b"\0" * 8).encode()


def test_byte_at_a_time() -> None:
    conn = Connection(ACKED)
    got = []
    for i in range(len(REALIZE)):
        conn.receive_data(REALIZE[i : i + 1])
        got += drain(conn)
    assert [m.request for m in got] == REALIZE_CODES


def test_bytes_wanted_keeps_descriptors_with_their_message() -> None:
    """Reading at most bytes_wanted() never mixes two messages, so fds land on the right one."""
    conn = Connection()
    stream = u64(Request.SET_VRING_KICK, 0) + u64(Request.SET_VRING_CALL, 1)
    fds_at = {0: [40], 20: [41]}  # each message's fd arrives with its first byte
    pos, got = 0, []
    while pos < len(stream):
        size = conn.bytes_wanted()
        conn.receive_data(stream[pos : pos + size], fds_at.get(pos, []))
        pos += size
        got += drain(conn)
    assert [(m.request, m.fds) for m in got] == [
        (Request.SET_VRING_KICK, (40,)),
        (Request.SET_VRING_CALL, (41,)),
    ]


def test_descriptors_where_none_belong_are_refused_and_handed_back() -> None:
    conn = Connection()
    conn.receive_data(msg(Request.SET_OWNER), [50, 51])
    with pytest.raises(VhostUserError, match="came with 2 descriptors, at most 0"):
        conn.next_request()
    assert conn.close() == [50, 51]


def test_too_many_descriptors_for_a_kick() -> None:
    conn = Connection()
    conn.receive_data(u64(Request.SET_VRING_KICK, 0), [1, 2])
    with pytest.raises(VhostUserError, match="at most 1"):
        conn.next_request()


# ---------------------------------------------------------------- replies and REPLY_ACK


def test_reply_echoes_the_request_with_the_reply_flag() -> None:
    conn = Connection()
    (get,) = feed_all(conn, msg(Request.GET_FEATURES))
    out = conn.reply(get, vu.encode_u64(F_VERSION_1))
    assert out == struct.pack("<IIIQ", Request.GET_FEATURES, vu.VERSION | vu.FLAG_REPLY, 8, F_VERSION_1)


def test_an_owed_reply_blocks_the_next_request() -> None:
    conn = Connection()
    conn.receive_data(msg(Request.GET_FEATURES) + msg(Request.SET_OWNER))
    get = conn.next_request()
    assert get is not None
    with pytest.raises(VhostUserError, match="SET_OWNER arrived while GET_FEATURES awaits its answer"):
        conn.next_request()
    conn.reply(get, vu.encode_u64(0))
    assert conn.next_request() is not None


def test_reply_ack_only_once_negotiated() -> None:
    conn = Connection(ACKED)
    (before,) = feed_all(conn, msg(Request.SET_OWNER, flags=NEED_REPLY))
    assert conn.ack(before) == b""  # REPLY_ACK not acked yet: need_reply means nothing
    (set_pf,) = feed_all(conn, u64(Request.SET_PROTOCOL_FEATURES, ACKED))
    assert conn.ack(set_pf) == b""
    assert conn.protocol_features == ACKED
    (owner,) = feed_all(conn, msg(Request.SET_OWNER, flags=NEED_REPLY))
    assert conn.ack(owner) == struct.pack("<IIIQ", Request.SET_OWNER, vu.VERSION | vu.FLAG_REPLY, 8, 0)
    (failed,) = feed_all(conn, msg(Request.SET_OWNER, flags=NEED_REPLY))
    assert conn.ack(failed, ok=False)[-8:] == struct.pack("<Q", 1)
    (plain,) = feed_all(conn, msg(Request.SET_OWNER))
    assert conn.ack(plain) == b""


def test_unoffered_protocol_features_are_refused() -> None:
    with pytest.raises(VhostUserError, match="unoffered bits 0x1"):
        feed_all(Connection(ACKED), u64(Request.SET_PROTOCOL_FEATURES, ACKED | ProtocolFeature.MQ))


def test_reply_and_ack_are_not_interchangeable() -> None:
    conn = Connection()
    (get,) = feed_all(conn, msg(Request.GET_FEATURES))
    with pytest.raises(VhostUserError, match="needs its reply"):
        conn.ack(get)
    conn.reply(get, b"")
    (owner,) = feed_all(conn, msg(Request.SET_OWNER))
    with pytest.raises(VhostUserError, match="no reply of its own"):
        conn.reply(owner, b"")


# ---------------------------------------------------------------- the Backend, as QEMU 7.2 drives it


class FakeHooks:
    def __init__(self, memory: GuestMemory, fail: bool = False) -> None:
        self.memory, self.fail = memory, fail
        self.mapped: list[tuple[Sequence[MemoryRegion], Sequence[int]]] = []
        self.unmapped: list[GuestMemory] = []
        self.changes = 0

    def map_memory(self, regions: Sequence[MemoryRegion], fds: Sequence[int]) -> GuestMemory:
        for fd in fds:
            os.close(fd)
        if self.fail:
            raise KuasarError("cannot map")
        self.mapped.append((regions, fds))
        return self.memory

    def unmap_memory(self, memory: GuestMemory) -> None:
        self.unmapped.append(memory)

    def queues_changed(self) -> None:
        self.changes += 1


def eventfd() -> int:
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


class Frontend:
    """Drives a Backend through its Connection with QEMU's byte stream and descriptors."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def send(self, data: bytes, fds: Sequence[int] = ()) -> bytes:
        conn = self.backend.connection
        conn.receive_data(data, fds)
        out = b""
        while (message := conn.next_request()) is not None:
            out += self.backend.handle(message)
        return out


def vsock_backend(hooks: FakeHooks) -> Backend:
    return Backend(hooks, features=F_VERSION_1 | F_INDIRECT_DESC, config=struct.pack("<Q", 3), queues=2)


def reply_u64(data: bytes) -> int:
    _request, flags, size = struct.unpack_from("<III", data)
    assert flags == vu.VERSION | vu.FLAG_REPLY and size == 8
    value: int = struct.unpack_from("<Q", data, 12)[0]
    return value


def test_qemu_7_2_sequence_builds_both_queues() -> None:
    data, memory = guest_memory()
    rings = [GuestRing(data, 8, base=0x1000), GuestRing(data, 8, base=0x4000)]
    hooks = FakeHooks(memory)
    backend = vsock_backend(hooks)
    qemu = Frontend(backend)
    assert (
        reply_u64(qemu.send(msg(Request.GET_FEATURES))) == F_VERSION_1 | F_INDIRECT_DESC | F_PROTOCOL_FEATURES
    )
    assert reply_u64(qemu.send(msg(Request.GET_PROTOCOL_FEATURES))) == 0x208
    assert qemu.send(u64(Request.SET_PROTOCOL_FEATURES, 0x208)) == b""
    assert qemu.send(msg(Request.SET_OWNER)) == b""
    early_calls = [eventfd(), eventfd()]
    for index, fd in enumerate(early_calls):
        qemu.send(u64(Request.SET_VRING_CALL, index), [fd])
        qemu.send(u64(Request.SET_VRING_ERR, index), [eventfd()])
    config = qemu.send(msg(Request.GET_CONFIG, ConfigSpace(0, 0, b"\0" * 8).encode()))
    assert config[12:] == ConfigSpace(0, 0, struct.pack("<Q", 3)).encode()
    # DRIVER_OK
    calls = [eventfd(), eventfd()]
    for index, fd in enumerate(calls):
        qemu.send(u64(Request.SET_VRING_CALL, index), [fd])
    assert not any(is_open(fd) for fd in early_calls)  # replaced descriptors are closed
    qemu.send(u64(Request.SET_FEATURES, 0x150000000))
    table = vu.encode_memory_table([MemoryRegion(0, len(data), USER_BASE, 0)])
    ack = qemu.send(msg(Request.SET_MEM_TABLE, table, NEED_REPLY), [eventfd()])
    assert reply_u64(ack) == 0
    for index, guest in enumerate(rings):
        qemu.send(msg(Request.SET_VRING_NUM, VringState(index, 8).encode()))
        qemu.send(msg(Request.SET_VRING_BASE, VringState(index, 0).encode()))
        addr = VringAddr(index, 0, USER_BASE + guest.desc, USER_BASE + guest.used, USER_BASE + guest.avail, 0)
        qemu.send(msg(Request.SET_VRING_ADDR, addr.encode()))
        qemu.send(u64(Request.SET_VRING_KICK, index), [eventfd()])
    assert all(v.queue is None for v in backend.vrings)  # PROTOCOL_FEATURES: rings start disabled
    for index in range(2):
        qemu.send(msg(Request.SET_VRING_ENABLE, VringState(index, 1).encode()))
    queues = [v.queue for v in backend.vrings]
    assert all(q is not None for q in queues)
    rings[1].add([b"tx packet"])
    chain = queues[1].pop()  # type: ignore[union-attr]
    assert chain is not None and chain.read() == b"tx packet"
    assert queues[1].indirect and not queues[1].event_idx  # type: ignore[union-attr]
    # GET_VRING_BASE stops the ring and reports where the device got to
    stopped = qemu.send(msg(Request.GET_VRING_BASE, VringState(1, 0).encode()))
    assert VringState.decode(stopped[12:]) == VringState(1, 1)
    assert backend.vrings[1].queue is None and hooks.changes > 0
    fds = [fd for v in backend.vrings for fd in (v.kick, v.call, v.err) if fd is not None]
    backend.close()
    assert not any(is_open(fd) for fd in fds)
    assert hooks.unmapped == [memory]


def test_a_memory_table_that_cannot_be_mapped_acks_failure() -> None:
    _, memory = guest_memory()
    backend = vsock_backend(FakeHooks(memory, fail=True))
    qemu = Frontend(backend)
    qemu.send(u64(Request.SET_PROTOCOL_FEATURES, 0x208))
    table = vu.encode_memory_table([MemoryRegion(0, 4096, USER_BASE, 0)])
    assert reply_u64(qemu.send(msg(Request.SET_MEM_TABLE, table, NEED_REPLY), [eventfd()])) == 1
    backend.close()


def test_a_memory_table_with_the_wrong_number_of_fds_is_a_protocol_error() -> None:
    _, memory = guest_memory()
    qemu = Frontend(vsock_backend(FakeHooks(memory)))
    table = vu.encode_memory_table([MemoryRegion(0, 4096, USER_BASE, 0)] * 2)
    fd = eventfd()
    with pytest.raises(VhostUserError, match="2 memory regions came with 1 fds"):
        qemu.send(msg(Request.SET_MEM_TABLE, table), [fd])
    assert not is_open(fd)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (msg(Request.SET_CONFIG, ConfigSpace(0, 0, b"\0" * 8).encode(), NEED_REPLY), 1),
        (msg(Request.GET_INFLIGHT_FD - 2, flags=NEED_REPLY), 1),  # unknown to the backend
        (u64(Request.SET_VRING_KICK, 0x100, NEED_REPLY), 1),  # polling mode is not supported
    ],
)
def test_refused_requests_ack_failure(data: bytes, expected: int) -> None:
    _, memory = guest_memory()
    qemu = Frontend(vsock_backend(FakeHooks(memory)))
    qemu.send(u64(Request.SET_PROTOCOL_FEATURES, 0x208))
    assert reply_u64(qemu.send(data)) == expected


def test_a_ring_outside_guest_memory_fails_its_request_not_the_backend() -> None:
    data, memory = guest_memory()
    backend = vsock_backend(FakeHooks(memory))
    qemu = Frontend(backend)
    qemu.send(u64(Request.SET_PROTOCOL_FEATURES, 0x208))
    qemu.send(u64(Request.SET_FEATURES, F_VERSION_1))  # no PROTOCOL_FEATURES: rings start enabled
    table = vu.encode_memory_table([MemoryRegion(0, len(data), USER_BASE, 0)])
    qemu.send(msg(Request.SET_MEM_TABLE, table), [eventfd()])
    qemu.send(msg(Request.SET_VRING_NUM, VringState(0, 8).encode()))
    qemu.send(msg(Request.SET_VRING_ADDR, VringAddr(0, 0, 0x10, 0x20, 0x40, 0).encode()))
    assert reply_u64(qemu.send(u64(Request.SET_VRING_KICK, 0, NEED_REPLY), [eventfd()])) == 1
    assert backend.vrings[0].queue is None
    backend.close()


def test_unoffered_features_and_vrings_are_protocol_errors() -> None:
    _, memory = guest_memory()
    qemu = Frontend(vsock_backend(FakeHooks(memory)))
    with pytest.raises(VhostUserError, match="unoffered bits"):
        qemu.send(u64(Request.SET_FEATURES, F_VERSION_1 | F_EVENT_IDX))
    qemu = Frontend(vsock_backend(FakeHooks(memory)))
    fd = eventfd()
    with pytest.raises(VhostUserError, match="vring 5 does not exist"):
        qemu.send(u64(Request.SET_VRING_CALL, 5), [fd])
    assert not is_open(fd)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(1, 64), max_size=10))
def test_garbage_gives_messages_or_a_vhost_user_error(data: bytes, cuts: list[int]) -> None:
    conn = Connection(ACKED)
    pos = 0
    try:
        for size in [*cuts, len(data)]:
            conn.receive_data(data[pos : pos + size])
            pos += size
            drain(conn)
    except VhostUserError:
        pass
