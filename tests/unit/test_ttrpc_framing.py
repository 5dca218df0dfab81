"""Sans-IO tests of the ttrpc frame decoder and encoder."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kuasar.errors import ProtocolError
from kuasar.ttrpc.framing import (
    HEADER_SIZE,
    KNOWN_TYPES,
    Flags,
    Frame,
    FrameDecoder,
    FrameType,
    OversizedFrame,
    encode_frame,
    encode_header,
)

VALID_FRAMES = [
    Frame(1, FrameType.REQUEST, 0, b"\x0a\x03svc\x12\x01m"),
    Frame(1, FrameType.RESPONSE, 0, b"\x12\x03\x08\xbc\x7e"),
    Frame(3, FrameType.REQUEST, Flags.REMOTE_OPEN | Flags.NO_DATA, b""),
    Frame(3, FrameType.DATA, 0, b"x" * 300),
    Frame(3, FrameType.DATA, Flags.REMOTE_CLOSED | Flags.NO_DATA, b""),
    Frame(5, 9, 0xFF, b"future"),  # unknown type: still decoded, the caller ignores it
    Frame(0xFFFFFFFF, FrameType.DATA, 0, b""),
]
STREAM = b"".join(encode_frame(f) for f in VALID_FRAMES)


def feed_chunks(decoder: FrameDecoder, chunks: list[bytes]) -> list[Frame]:
    out: list[Frame] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    return out


def test_header_is_big_endian_ten_bytes() -> None:
    raw = encode_frame(Frame(7, FrameType.DATA, Flags.REMOTE_CLOSED | Flags.NO_DATA, b""))
    assert raw == bytes.fromhex("00000000 00000007 03 05")
    assert HEADER_SIZE == 10


def test_spec_unary_example_bytes() -> None:
    data = bytes.fromhex("0a17") + b"containerd.task.v2.Task" + bytes.fromhex("1207") + b"Connect"
    data += bytes.fromhex("1a060a04") + b"demo"
    raw = encode_frame(Frame(1, FrameType.REQUEST, 0, data))
    assert raw[:10] == bytes.fromhex("0000002a 00000001 01 00")
    assert FrameDecoder().feed(raw) == [Frame(1, FrameType.REQUEST, 0, data)]


@pytest.mark.parametrize("ftype", [FrameType.REQUEST, FrameType.RESPONSE, FrameType.DATA, 0, 4, 9, 255])
@pytest.mark.parametrize("flags", [0, 1, 2, 4, 5, 6, 7, 0xFF])
def test_round_trip_every_type_and_flag(ftype: int, flags: int) -> None:
    frame = Frame(41, ftype, flags, b"payload")
    (decoded,) = FrameDecoder().feed(encode_frame(frame))
    assert decoded == frame
    assert decoded.type == ftype


def test_every_single_split_point() -> None:
    for cut in range(len(STREAM) + 1):
        decoder = FrameDecoder()
        assert feed_chunks(decoder, [STREAM[:cut], STREAM[cut:]]) == VALID_FRAMES, cut
        assert decoder.at_boundary


def test_every_pair_of_split_points() -> None:
    stream = b"".join(encode_frame(f) for f in VALID_FRAMES[:5] if len(f.data) < 50)
    for a in range(len(stream) + 1):
        for b in range(a, len(stream) + 1):
            decoder = FrameDecoder()
            got = feed_chunks(decoder, [stream[:a], stream[a:b], stream[b:]])
            assert got == [f for f in VALID_FRAMES[:5] if len(f.data) < 50]


def test_byte_at_a_time() -> None:
    decoder = FrameDecoder()
    assert feed_chunks(decoder, [bytes([b]) for b in STREAM]) == VALID_FRAMES


@settings(max_examples=200)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_hypothesis_random_splits(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    assert feed_chunks(FrameDecoder(), chunks) == VALID_FRAMES


@settings(max_examples=500)
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_hypothesis_garbage_never_crashes_and_stays_bounded(garbage: bytes, cuts: list[int]) -> None:
    limit = 64
    decoder = FrameDecoder(limit)
    points = sorted({c for c in cuts if c <= len(garbage)})
    chunks = [garbage[a:b] for a, b in zip([0, *points], [*points, len(garbage)], strict=True)]
    try:
        for chunk in chunks:
            for frame in decoder.feed(chunk):
                assert len(frame.data) <= limit
                if isinstance(frame, OversizedFrame):
                    assert frame.length > limit
                    assert frame.type in KNOWN_TYPES
            assert decoder.buffered <= HEADER_SIZE + limit + len(chunk)
    except ProtocolError:
        with pytest.raises(ProtocolError):  # sticky: the decoder stays failed
            decoder.feed(b"")


def test_exact_limit_accepted_one_more_rejected() -> None:
    decoder = FrameDecoder(100)
    frame = Frame(1, FrameType.REQUEST, 0, b"a" * 100)
    assert decoder.feed(encode_frame(frame)) == [frame]
    (over,) = decoder.feed(encode_frame(Frame(3, FrameType.REQUEST, 0, b"b" * 101)))
    assert isinstance(over, OversizedFrame)
    assert (over.stream_id, over.type, over.length, over.data) == (3, FrameType.REQUEST, 101, b"")
    assert over.message == "message length 101 exceed maximum message size of 100"


def test_default_limit_is_4mib_with_go_text() -> None:
    (over,) = FrameDecoder().feed(encode_header(4194305, 1, FrameType.REQUEST, 0))
    assert isinstance(over, OversizedFrame)
    assert over.message == "message length 4194305 exceed maximum message size of 4194304"


def test_oversize_body_discarded_without_buffering_then_in_sync() -> None:
    decoder = FrameDecoder(1024)
    length = 3_000_000
    got = decoder.feed(encode_header(length, 1, FrameType.REQUEST, 0))
    assert [type(f) for f in got] == [OversizedFrame]
    sent = 0
    chunk = b"\0" * 65536
    while sent + len(chunk) < length:
        assert decoder.feed(chunk) == []
        assert decoder.buffered == 0  # nothing of the body is kept
        sent += len(chunk)
    nxt = Frame(3, FrameType.REQUEST, 0, b"ok")
    # the tail of the oversized body and the next frame arrive in one chunk
    assert decoder.feed(b"\0" * (length - sent) + encode_frame(nxt)) == [nxt]
    assert decoder.at_boundary


def test_oversize_in_middle_of_one_chunk() -> None:
    decoder = FrameDecoder(8)
    a = Frame(1, FrameType.REQUEST, 0, b"a")
    c = Frame(5, FrameType.DATA, 0, b"c")
    raw = encode_frame(a) + encode_header(20, 3, FrameType.DATA, 0) + b"z" * 20 + encode_frame(c)
    for cut in range(len(raw) + 1):
        frames = feed_chunks(FrameDecoder(8), [raw[:cut], raw[cut:]])
        assert frames[0] == a and frames[2] == c, cut
        assert isinstance(frames[1], OversizedFrame) and frames[1].length == 20
    assert len(decoder.feed(raw)) == 3


def test_garbage_header_is_protocol_error() -> None:
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError, match="garbage"):
        decoder.feed(b"\xff" * HEADER_SIZE)
    with pytest.raises(ProtocolError):
        decoder.feed(encode_frame(Frame(1, FrameType.REQUEST)))


def test_unknown_type_within_limit_is_decoded() -> None:
    raw = struct.pack(">IIBB", 3, 1, 9, 0) + b"abc"
    assert FrameDecoder().feed(raw) == [Frame(1, 9, 0, b"abc")]


def test_encode_header_range_checked() -> None:
    with pytest.raises(ValueError):
        encode_header(1 << 32, 1, 1, 0)
    with pytest.raises(ValueError):
        encode_header(0, 1, 256, 0)


def test_frames_before_a_garbage_header_are_still_delivered() -> None:
    from kuasar.errors import ProtocolError
    from kuasar.ttrpc.framing import Frame, FrameDecoder, encode_frame

    decoder = FrameDecoder()
    good = Frame(1, 1, 0, b"abc")
    frames = decoder.feed(encode_frame(good) + b"\xff" * 10)
    assert [(f.stream_id, f.data) for f in frames] == [(1, b"abc")]
    with pytest.raises(ProtocolError, match="garbage"):
        decoder.check()
    with pytest.raises(ProtocolError, match="garbage"):
        decoder.feed(b"")
