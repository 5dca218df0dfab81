"""Sans-IO hybrid vsock handshake: the OK line, the CONNECT line, the bounded line reader."""

from __future__ import annotations

import itertools

import pytest

from kuasar.errors import HandshakeError
from kuasar.transport.hvsock import HandshakeReader, format_connect, parse_connect_line, parse_ok_line


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"OK", None),
        (b"OK\n", None),
        (b"OK\r\n", None),
        (b"OK 1073741825", 1073741825),
        (b"OK 1073741825\n", 1073741825),
        (b"OK 0\n", 0),
        (b"OK 4294967295\n", 0xFFFFFFFF),
        (b"OK  1073741826 \n", 1073741826),
    ],
)
def test_ok_line_accepted(line: bytes, expected: int | None) -> None:
    assert parse_ok_line(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"\n",
        b"ok\n",
        b"Ok 5\n",
        b"OKAY\n",
        b"OK5\n",
        b"OK abc\n",
        b"OK -1\n",
        b"OK 4294967296\n",
        b"OK 1 2\n",
        b"ERR no listener\n",
        b"CONNECT 1024\n",
        b"\x00\xff\n",
    ],
)
def test_ok_line_rejected_names_what_was_received(line: bytes) -> None:
    with pytest.raises(HandshakeError) as info:
        parse_ok_line(line)
    assert "expected OK or OK <port>" in str(info.value)
    assert (repr(line) if line else "nothing") in str(info.value)


@pytest.mark.parametrize(
    ("line", "port"),
    [
        (b"CONNECT 1024", 1024),
        (b"CONNECT 1024\n", 1024),
        (b"connect 1025\n", 1025),
        (b"CONNECT  1025 \r\n", 1025),  # trimmed, as CH trims
        (b"CONNECT 0\n", 0),
        (b"CONNECT 4294967295\n", 0xFFFFFFFF),
    ],
)
def test_connect_line_accepted(line: bytes, port: int) -> None:
    assert parse_connect_line(line) == port


@pytest.mark.parametrize(
    "line",
    [
        b"Connect 1024\n",  # mixed case is rejected, as CH does
        b"CONNECT\n",
        b"CONNECT \n",
        b"CONNECT1024\n",
        b" CONNECT 1024\n",
        b"CONNECT abc\n",
        b"CONNECT -1\n",
        b"CONNECT 4294967296\n",
        b"CONNECT 1024 1025\n",
        b"GET / HTTP/1.1\n",
        b"\n",
    ],
)
def test_connect_line_rejected(line: bytes) -> None:
    with pytest.raises(HandshakeError, match="expected CONNECT <port>"):
        parse_connect_line(line)


def test_format_connect() -> None:
    assert format_connect(1025) == b"CONNECT 1025\n"
    assert parse_connect_line(format_connect(0xFFFFFFFF)) == 0xFFFFFFFF
    with pytest.raises(HandshakeError):
        format_connect(1 << 32)


def test_reader_keeps_bytes_after_the_newline() -> None:
    reader = HandshakeReader(64)
    line, rest = reader.feed(b"OK 1073741825\nguest output\n")
    assert line == b"OK 1073741825"
    assert rest == b"guest output\n"
    assert reader.line == b"OK 1073741825"


def _feed_in_pieces(data: bytes, cuts: list[int]) -> tuple[bytes | None, bytes]:
    reader = HandshakeReader(64)
    bounds = [0, *cuts, len(data)]
    for start, end in itertools.pairwise(bounds):
        line, rest = reader.feed(data[start:end])
        if line is not None:
            return line, rest + data[end:]
    return None, b""


@pytest.mark.parametrize("cut", range(1, len(b"OK 1073741825\nxyz")))
def test_reader_every_split_gives_the_same_line_and_rest(cut: int) -> None:
    assert _feed_in_pieces(b"OK 1073741825\nxyz", [cut]) == (b"OK 1073741825", b"xyz")


def test_reader_byte_by_byte() -> None:
    data = b"OK\nrest"
    reader = HandshakeReader(64)
    results = [reader.feed(data[i : i + 1]) for i in range(3)]
    assert results[:2] == [(None, b""), (None, b"")]
    assert results[2] == (b"OK", b"")


def test_reader_incomplete_line_reports_received() -> None:
    reader = HandshakeReader(64)
    assert reader.feed(b"OK 10") == (None, b"")
    assert reader.line is None
    assert reader.received == b"OK 10"


def test_reader_limit_counts_the_newline() -> None:
    exact = b"O" * 63 + b"\n"
    assert HandshakeReader(64).feed(exact) == (b"O" * 63, b"")
    with pytest.raises(HandshakeError, match="longer than 64 bytes"):
        HandshakeReader(64).feed(b"O" * 64 + b"\n")


def test_reader_oversize_without_newline_fails_before_buffering_more() -> None:
    reader = HandshakeReader(8)
    reader.feed(b"OK 12")
    with pytest.raises(HandshakeError, match="longer than 8 bytes") as info:
        reader.feed(b"3" * 10_000)
    assert len(reader.received) == 8
    assert "OK 12333" in str(info.value)


def test_reader_refuses_to_feed_past_a_complete_line() -> None:
    reader = HandshakeReader(64)
    reader.feed(b"OK\n")
    with pytest.raises(HandshakeError, match="already complete"):
        reader.feed(b"more")
