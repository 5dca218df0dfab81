"""The sans-IO virtio-vsock muxer: packets, the CONNECT handshake (every split) and its refusals,
host ports from 2^30, credit both ways (exhaustion, CREDIT_REQUEST/UPDATE), SHUTDOWN and RST paths,
guest-initiated connections, stray packets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kuasar.config import DEFAULT_LIMITS, TEST_LIMITS
from kuasar.vmm.testing import guest_packet
from kuasar.vmm.vsock_conn import Link, State
from kuasar.vmm.vsock_device import Muxer, next_host_port
from kuasar.vmm.vsock_packet import (
    HEADER_SIZE,
    HOST_CID,
    SHUTDOWN_BOTH,
    SHUTDOWN_RCV,
    SHUTDOWN_SEND,
    TYPE_STREAM,
    Header,
    Op,
    PacketError,
    decode_packet,
)

HOST_PORT = 1 << 30
ROOM = 3776 - HEADER_SIZE  # the 6.1 guest's rx buffer, less the header


def rx(mux: Muxer, room: int = ROOM) -> list[tuple[Header, bytes]]:
    """Every packet the muxer has for the guest now."""
    out = []
    while (packet := mux.next_rx(room)) is not None:
        out.append((Header.decode(packet[0]), packet[1]))
    return out


def ops(packets: list[tuple[Header, bytes]]) -> list[int]:
    return [h.op for h, _ in packets]


def connect(mux: Muxer, port: int = 1024, *, buf_alloc: int = 256 * 1024, extra: bytes = b"") -> Link:
    """A host client's CONNECT, answered by the guest's RESPONSE."""
    link = mux.host_accepted(0.0)
    assert link is not None
    mux.host_data(link, b"CONNECT %d\n" % port + extra, 0.0)
    (request,) = [h for h, _ in rx(mux) if h.op == Op.REQUEST]
    mux.guest_packet(guest_packet(Op.RESPONSE, src_port=port, dst_port=request.src_port, buf_alloc=buf_alloc))
    assert link.state is State.ESTABLISHED
    return link


def guest_says(mux: Muxer, link: Link, op: int, payload: bytes = b"", **kwargs: int) -> None:
    mux.guest_packet(
        guest_packet(op, src_port=link.peer_port, dst_port=link.local_port, payload=payload, **kwargs)
    )


# ---------------------------------------------------------------- packets


def test_header_round_trip_is_44_bytes() -> None:
    header = Header(2, 3, HOST_PORT, 1024, 5, TYPE_STREAM, Op.RW, 0, 262144, 77)
    assert len(header.encode()) == HEADER_SIZE
    assert Header.decode(header.encode()) == header
    assert decode_packet(header.encode() + b"hello!!") == (header, b"hello")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\0" * 43, "shorter than the 44-byte header"),
        (guest_packet(Op.RW, src_port=1, dst_port=2, payload=b"abc")[:-1], "the buffer holds 2"),
        (Header(3, 2, 1, 2, 70000, 1, Op.RW, 0, 0, 0).encode() + b"\0" * 70000, "over 65536"),
    ],
)
def test_malformed_packets(data: bytes, message: str) -> None:
    with pytest.raises(PacketError, match=message):
        decode_packet(data)


# ---------------------------------------------------------------- the CONNECT handshake


def test_connect_request_ok_and_echo() -> None:
    mux = Muxer(3)
    link = mux.host_accepted(0.0)
    assert link is not None and link.read_budget() == 64
    mux.host_data(link, b"CONNECT 1024\n", 0.0)
    ((request, _),) = rx(mux)
    assert (request.op, request.src_cid, request.dst_cid) == (Op.REQUEST, HOST_CID, 3)
    assert (request.src_port, request.dst_port, request.buf_alloc) == (HOST_PORT, 1024, 256 * 1024)
    assert link.read_budget() == 0  # nothing is read from the client until the guest answers
    mux.guest_packet(guest_packet(Op.RESPONSE, src_port=1024, dst_port=HOST_PORT))
    assert link.reply == b"OK 1073741824\n"
    mux.host_data(link, b"hello", 0.0)
    ((data, payload),) = rx(mux)
    assert (data.op, payload, data.len) == (Op.RW, b"hello", 5)
    guest_says(mux, link, Op.RW, b"hello")
    assert link.to_host == b"hello"
    mux.host_sent(link, 5)
    assert link.to_host == b"" and link.fwd_cnt == 5


@pytest.mark.parametrize("split", range(len(b"CONNECT 1024\nearly bytes") + 1))
def test_every_split_of_connect_keeps_the_bytes_after_the_line(split: int) -> None:
    mux = Muxer(3)
    link = mux.host_accepted(0.0)
    assert link is not None
    stream = b"CONNECT 1024\nearly bytes"
    for chunk in (stream[:split], stream[split:]):
        while chunk and link.state is State.HANDSHAKE:
            take = chunk[: link.read_budget()]
            mux.host_data(link, take, 0.0)
            chunk = chunk[len(take) :]
        if chunk:  # read after the line: the driver reads these only once established
            link.to_guest += chunk
    assert ops(rx(mux)) == [Op.REQUEST]
    mux.guest_packet(guest_packet(Op.RESPONSE, src_port=1024, dst_port=HOST_PORT))
    assert [p for _, p in rx(mux)] == [b"early bytes"]


@pytest.mark.parametrize(
    "line",
    [b"CONNECT\n", b"Connect 1024\n", b"CONNECT 99999999999\n", b"CONNECT -1\n", b"GET / HTTP/1.1\n", b"\n"],
)
def test_a_malformed_line_closes_without_reply(line: bytes) -> None:
    mux = Muxer(3)
    link = mux.host_accepted(0.0)
    assert link is not None
    mux.host_data(link, line, 0.0)
    assert link.close_host and link.abort and link.reply == b""
    assert rx(mux) == []  # nothing reaches the guest


def test_an_oversize_line_closes_without_reply() -> None:
    mux = Muxer(3)
    link = mux.host_accepted(0.0)
    assert link is not None
    mux.host_data(link, b"CONNECT " + b"1" * 56, 0.0)  # 64 bytes, no newline
    assert link.abort and link.reply == b""


def test_eof_before_the_line_and_the_handshake_timeout() -> None:
    mux = Muxer(3, limits=TEST_LIMITS)
    early = mux.host_accepted(0.0)
    slow = mux.host_accepted(0.0)
    assert early is not None and slow is not None
    mux.host_data(early, b"CONN", 0.0)
    mux.host_eof(early)
    assert early.abort
    assert mux.tick(0.5) == TEST_LIMITS.handshake_timeout
    mux.tick(TEST_LIMITS.handshake_timeout)
    assert slow.abort and slow.reply == b""


def test_the_guest_refuses_with_rst() -> None:
    mux = Muxer(3)
    link = mux.host_accepted(0.0)
    assert link is not None
    mux.host_data(link, b"CONNECT 1099\n", 0.0)
    rx(mux)
    mux.guest_packet(guest_packet(Op.RST, src_port=1099, dst_port=HOST_PORT))
    assert link.abort and link.reply == b"" and rx(mux) == []


def test_an_unanswered_request_is_reset_after_the_timeout() -> None:
    mux = Muxer(3, limits=DEFAULT_LIMITS.replace(vsock_request_timeout=5.0))
    link = mux.host_accepted(0.0)
    assert link is not None
    mux.host_data(link, b"CONNECT 1024\n", 1.0)
    rx(mux)
    assert mux.tick(2.0) == 6.0
    mux.tick(6.0)
    assert link.abort and link.reply == b""
    ((rst, _),) = rx(mux)
    assert (rst.op, rst.src_port, rst.dst_port) == (Op.RST, HOST_PORT, 1024)


def test_offline_device_refuses_at_once() -> None:
    mux = Muxer(3)
    mux.online = False
    link = mux.host_accepted(0.0)
    assert link is not None
    mux.host_data(link, b"CONNECT 1024\n", 0.0)
    assert link.abort and rx(mux) == []


def test_host_ports_count_up_from_2_30_and_wrap_within_bit_30() -> None:
    mux = Muxer(3)
    ports = [connect(mux).local_port for _ in range(3)]
    assert ports == [HOST_PORT, HOST_PORT + 1, HOST_PORT + 2]
    assert next_host_port((1 << 31) - 1) == HOST_PORT


def test_too_many_links_are_refused() -> None:
    mux = Muxer(3, limits=DEFAULT_LIMITS.replace(vsock_max_streams=1))
    assert mux.host_accepted(0.0) is not None
    assert mux.host_accepted(0.0) is None


# ---------------------------------------------------------------- credit


def test_host_to_guest_credit_exhaustion_and_credit_request() -> None:
    mux = Muxer(3)
    link = connect(mux, buf_alloc=1000)
    assert link.read_budget() == 1000
    mux.host_data(link, b"x" * 1000, 0.0)
    assert link.read_budget() == 0
    packets = rx(mux, room=600)
    assert [(h.op, len(p)) for h, p in packets] == [(Op.RW, 600), (Op.RW, 400)]
    assert link.peer_free() == 0 and link.read_budget() == 0
    mux.host_data(link, b"", 0.0)  # nothing read; the guest still has not read anything
    link.to_guest += b"y"  # one byte queued that cannot be sent
    mux.host_data(link, b"", 0.0)
    assert ops(rx(mux)) == [Op.CREDIT_REQUEST]
    assert rx(mux) == []  # asked once only
    guest_says(mux, link, Op.CREDIT_UPDATE, buf_alloc=1000, fwd_cnt=1000)
    ((header, payload),) = rx(mux)
    assert (header.op, payload) == (Op.RW, b"y")
    assert link.read_budget() == 999


def test_the_read_budget_is_bounded_by_our_buffer_too() -> None:
    mux = Muxer(3, limits=DEFAULT_LIMITS.replace(vsock_buf_alloc=4096))
    link = connect(mux, buf_alloc=2**32 - 1)
    assert link.read_budget() == 4096


def test_guest_to_host_credit_violation_resets() -> None:
    mux = Muxer(3, limits=DEFAULT_LIMITS.replace(vsock_buf_alloc=100))
    link = connect(mux)
    guest_says(mux, link, Op.RW, b"a" * 100)
    assert not link.abort
    guest_says(mux, link, Op.RW, b"b")  # the host has not taken anything: no credit left
    assert link.abort and link.to_host == b""
    assert ops(rx(mux)) == [Op.RST]


def test_credit_update_after_a_quarter_of_buf_alloc_is_forwarded() -> None:
    mux = Muxer(3, limits=DEFAULT_LIMITS.replace(vsock_buf_alloc=400))
    link = connect(mux)
    guest_says(mux, link, Op.RW, b"a" * 300)
    mux.host_sent(link, 99)
    assert rx(mux) == []
    mux.host_sent(link, 1)
    ((update, _),) = rx(mux)
    assert (update.op, update.fwd_cnt, update.buf_alloc) == (Op.CREDIT_UPDATE, 100, 400)


def test_credit_request_is_answered_and_data_carries_fwd_cnt() -> None:
    mux = Muxer(3)
    link = connect(mux)
    guest_says(mux, link, Op.RW, b"abc")
    mux.host_sent(link, 3)
    guest_says(mux, link, Op.CREDIT_REQUEST)
    mux.host_data(link, b"data", 0.0)
    packets = rx(mux)
    assert ops(packets) == [Op.RW]  # the data packet carries the credit: no separate update
    assert packets[0][0].fwd_cnt == 3


# ---------------------------------------------------------------- shutdown and reset


def test_guest_close_flushes_to_host_then_resets() -> None:
    mux = Muxer(3)
    link = connect(mux)
    guest_says(mux, link, Op.RW, b"tail")
    guest_says(mux, link, Op.SHUTDOWN, flags=SHUTDOWN_BOTH)
    assert link.close_host and not link.abort and link.to_host == b"tail"  # flushed, then closed
    ((rst, _),) = rx(mux)
    assert rst.op == Op.RST and link.state is State.CLOSED


def test_guest_half_close_shuts_the_host_write_side() -> None:
    mux = Muxer(3)
    link = connect(mux)
    guest_says(mux, link, Op.SHUTDOWN, flags=SHUTDOWN_SEND)
    assert link.shut_host_write and not link.close_host
    mux.host_data(link, b"answer", 0.0)  # the host may still talk
    assert [p for _, p in rx(mux)] == [b"answer"]
    mux.host_eof(link)
    packets = rx(mux)
    assert [(h.op, h.flags) for h, _ in packets] == [(Op.SHUTDOWN, SHUTDOWN_SEND), (Op.RST, 0)]
    assert link.close_host and link.state is State.CLOSED


def test_host_eof_becomes_shutdown_after_the_queued_data() -> None:
    mux = Muxer(3)
    link = connect(mux)
    mux.host_data(link, b"last words", 0.0)
    mux.host_eof(link)
    packets = rx(mux)
    assert [(h.op, h.flags, p) for h, p in packets] == [
        (Op.RW, 0, b"last words"),
        (Op.SHUTDOWN, SHUTDOWN_SEND, b""),
    ]
    guest_says(mux, link, Op.RW, b"reply")  # the guest still answers a half-closed host
    assert link.to_host == b"reply"
    guest_says(mux, link, Op.SHUTDOWN, flags=SHUTDOWN_BOTH)
    assert ops(rx(mux)) == [Op.RST] and link.close_host


def test_guest_shutdown_rcv_drops_what_it_will_not_read() -> None:
    mux = Muxer(3)
    link = connect(mux)
    mux.host_data(link, b"unread", 0.0)
    guest_says(mux, link, Op.SHUTDOWN, flags=SHUTDOWN_RCV)
    assert link.to_guest == b"" and link.read_budget() == 0


def test_host_vanishing_mid_transfer_resets_the_guest() -> None:
    mux = Muxer(3)
    link = connect(mux)
    guest_says(mux, link, Op.RW, b"x" * 1000)
    mux.host_failed(link, "broken pipe")
    assert link.abort and link.to_host == b""
    ((rst, _),) = rx(mux)
    assert rst.op == Op.RST
    mux.host_closed(link)
    assert link.id not in mux.links
    guest_says(mux, link, Op.RW, b"late")  # the guest's late data gets an RST, nothing else
    assert ops(rx(mux)) == [Op.RST]


def test_guest_rst_closes_the_host_side() -> None:
    mux = Muxer(3)
    link = connect(mux)
    guest_says(mux, link, Op.RST)
    assert link.close_host and rx(mux) == []


def test_data_after_the_guest_shut_sending_resets() -> None:
    mux = Muxer(3)
    link = connect(mux)
    guest_says(mux, link, Op.SHUTDOWN, flags=SHUTDOWN_SEND)
    guest_says(mux, link, Op.RW, b"zombie")
    assert link.abort and ops(rx(mux)) == [Op.RST]


def test_reset_closes_every_link() -> None:
    mux = Muxer(3)
    links = [connect(mux) for _ in range(3)]
    mux.reset()
    assert all(link.abort for link in links) and rx(mux) == []


# ---------------------------------------------------------------- guest-initiated and strays


def test_guest_initiated_connection_dials_and_answers() -> None:
    mux = Muxer(3)
    mux.guest_packet(guest_packet(Op.REQUEST, src_port=40000, dst_port=5000))
    (link,) = mux.links.values()
    assert link.state is State.DIALING and (link.local_port, link.peer_port) == (5000, 40000)
    mux.dial_done(link, ok=True)
    ((response, _),) = rx(mux)
    assert (response.op, response.src_port, response.dst_port) == (Op.RESPONSE, 5000, 40000)
    guest_says(mux, link, Op.RW, b"to the host")
    assert link.to_host == b"to the host"


def test_guest_initiated_without_a_listener_is_reset() -> None:
    mux = Muxer(3)
    mux.guest_packet(guest_packet(Op.REQUEST, src_port=40000, dst_port=5001))
    (link,) = mux.links.values()
    mux.dial_done(link, ok=False)
    ((rst, _),) = rx(mux)
    assert (rst.op, rst.src_port, rst.dst_port) == (Op.RST, 5001, 40000)


@pytest.mark.parametrize("op", [Op.RW, Op.SHUTDOWN, Op.CREDIT_UPDATE, Op.RESPONSE, Op.INVALID])
def test_packets_for_no_stream_get_rst(op: int) -> None:
    mux = Muxer(3)
    mux.guest_packet(guest_packet(op, src_port=7, dst_port=8, payload=b"x" if op == Op.RW else b""))
    ((rst, _),) = rx(mux)
    assert (rst.op, rst.src_port, rst.dst_port) == (Op.RST, 8, 7)


def test_rst_for_no_stream_is_ignored() -> None:
    mux = Muxer(3)
    mux.guest_packet(guest_packet(Op.RST, src_port=7, dst_port=8))
    assert rx(mux) == []


@pytest.mark.parametrize(
    "data",
    [
        guest_packet(Op.REQUEST, src_port=1, dst_port=2, guest_cid=4),  # spoofed source CID
        guest_packet(Op.RW, src_port=1, dst_port=2)[:20],  # truncated
    ],
)
def test_bad_packets_are_dropped_silently(data: bytes) -> None:
    mux = Muxer(3)
    mux.guest_packet(data)
    assert rx(mux) == [] and not mux.links


def test_seqpacket_is_refused_with_rst() -> None:
    mux = Muxer(3)
    mux.guest_packet(guest_packet(Op.REQUEST, src_port=1, dst_port=2, type_=2))
    assert ops(rx(mux)) == [Op.RST] and not mux.links


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(list(Op)) | st.integers(0, 9),
            st.integers(1023, 1026),
            st.sampled_from([HOST_PORT, 5000]),
            st.binary(max_size=64),
            st.integers(0, 3),
            st.integers(0, 2**32 - 1),
        ),
        max_size=30,
    ),
    st.lists(st.sampled_from(["data", "eof", "sent", "fail", "tick", "connect"]), max_size=10),
)
def test_any_packet_sequence_keeps_the_muxer_consistent(
    packets: list[tuple[int, int, int, bytes, int, int]], host_events: list[str]
) -> None:
    mux = Muxer(3, limits=DEFAULT_LIMITS.replace(vsock_buf_alloc=256))
    link = connect(mux)
    for op, src, dst, payload, flags, credit in packets:
        mux.guest_packet(
            guest_packet(op, src_port=src, dst_port=dst, payload=payload, flags=flags, fwd_cnt=credit)
        )
        for event in host_events:
            for other in list(mux.links.values()):
                if event == "data" and other.read_budget() > 0:
                    mux.host_data(other, b"d" * other.read_budget(), 1.0)
                elif event == "eof":
                    mux.host_eof(other)
                elif event == "sent" and other.to_host:
                    mux.host_sent(other, len(other.to_host))
                elif event == "fail":
                    mux.host_failed(other, "test")
                elif event == "tick":
                    mux.tick(100.0)
                elif event == "connect" and other.state is State.DIALING:
                    mux.dial_done(other, ok=True)
        for header, body in rx(mux, room=100):
            assert header.len == len(body) <= 100 and header.src_cid == HOST_CID
        for other in mux.links.values():
            assert len(other.to_host) <= 256 and len(other.to_guest) <= 256
    assert link.id in mux.links or link.state is State.CLOSED
