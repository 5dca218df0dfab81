"""FrameWriter's coalescing: frames of one loop iteration leave together, BATCH at most per write
(all of them at once under hold()).

Unbounded batches made a Python client and server trade all 64 calls in flight as one block,
each side idle while the other worked; these pin the bound and that no byte is reordered.
"""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from kuasar.ttrpc._conn import BATCH, FrameWriter


class _Transport:
    """Records every ``write``; never pauses, never closes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


class _Writer:
    def __init__(self) -> None:
        self.transport = _Transport()


def _writer() -> tuple[FrameWriter, _Transport]:
    fake = _Writer()
    return FrameWriter(cast(asyncio.StreamWriter, fake), 4 << 20), fake.transport


def _frame(i: int) -> bytes:
    return i.to_bytes(4, "big") * 3


async def _next_iteration() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_one_iteration_leaves_in_batches() -> None:
    writer, transport = _writer()
    frames = [_frame(i) for i in range(2 * BATCH + 8)]
    for frame in frames:
        writer.send(frame)
    # the first goes at once; the rest wait for the iteration's end, a full batch does not
    assert transport.writes == [
        frames[0],
        b"".join(frames[1 : BATCH + 1]),
        b"".join(frames[BATCH + 1 : 2 * BATCH + 1]),
    ]
    await _next_iteration()
    assert transport.writes[3:] == [b"".join(frames[2 * BATCH + 1 :])]
    assert b"".join(transport.writes) == b"".join(frames)


@pytest.mark.asyncio
async def test_hold_joins_everything_until_release() -> None:
    # the server's answers to one read: one write, whatever their number (a Go client never
    # batches its Requests, so more writes would only cost it wake-ups)
    writer, transport = _writer()
    frames = [_frame(i) for i in range(2 * BATCH + 3)]
    writer.hold()
    for frame in frames:
        writer.send(frame)
    assert transport.writes == []
    writer.release()
    assert transport.writes == [b"".join(frames)]


@pytest.mark.asyncio
async def test_large_frame_keeps_its_place() -> None:
    writer, transport = _writer()
    writer.hold()
    writer.send(b"a" * 10)
    writer.send_frame(1, 2, 0, b"b" * (128 * 1024))
    writer.send(b"c" * 10)
    writer.release()
    joined = b"".join(transport.writes)
    assert joined.startswith(b"a" * 10)
    assert joined.endswith(b"b" * (128 * 1024) + b"c" * 10)
    assert len(joined) == 10 + 10 + 128 * 1024 + 10
