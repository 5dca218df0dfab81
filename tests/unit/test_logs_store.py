"""The container log store: records, tail/since/until, stream filter, rotation, follow."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from kuasar.agent.logs import (
    MAX_LINE,
    ContainerLog,
    LogLine,
    LogQuery,
    LogStore,
    decode_record,
    encode_record,
)
from kuasar.errors import RPCError
from kuasar.logtime import format_time, parse_time
from kuasar.ttrpc.codes import Code


async def collect(log: ContainerLog, query: LogQuery) -> list[LogLine]:
    return [line async for line in log.read(query)]


def test_record_round_trip_keeps_non_utf8_bytes_and_nanoseconds() -> None:
    line = LogLine("stderr", b"caf\xc3\xa9 \xff\xfe raw\n", 1_790_000_000_123_456_789)
    raw = encode_record(line)
    record = json.loads(raw)
    assert record["stream"] == "stderr"
    assert record["time"] == "2026-09-21T14:13:20.123456789Z"
    assert decode_record(raw.rstrip(b"\n")) == line


def test_time_format_parses_back_and_accepts_short_fractions() -> None:
    assert parse_time(format_time(5_000_000_007)) == 5_000_000_007
    assert parse_time("1970-01-01T00:00:01.5Z") == 1_500_000_000
    assert parse_time("1970-01-01T00:00:02Z") == 2_000_000_000


def test_torn_or_foreign_records_are_skipped() -> None:
    assert decode_record(b'{"log": "x", "stream": "stdout"') is None
    assert decode_record(b'{"log": "x", "stream": "other", "time": "1970-01-01T00:00:00Z"}') is None


@pytest.mark.asyncio
async def test_lines_split_on_newline_and_partial_lines_wait_for_flush(tmp_path: object) -> None:
    log = ContainerLog(os.path.join(str(tmp_path), "c.log"))
    log.write("stdout", b"one\ntw")
    log.write("stderr", b"err\n")
    log.write("stdout", b"o\nthree")
    assert [line.data for line in await collect(log, LogQuery())] == [b"one\n", b"err\n", b"two\n"]
    log.close()
    lines = await collect(log, LogQuery())
    assert [(line.stream, line.data) for line in lines][-1] == ("stdout", b"three")


@pytest.mark.asyncio
async def test_long_line_is_split_at_16k(tmp_path: object) -> None:
    log = ContainerLog(os.path.join(str(tmp_path), "c.log"))
    log.write("stdout", b"x" * (MAX_LINE * 2 + 10) + b"\n")
    log.close()
    sizes = [len(line.data) for line in await collect(log, LogQuery())]
    assert sizes == [MAX_LINE, MAX_LINE, 11]


@pytest.mark.asyncio
async def test_tail_since_until_and_stream_filter(tmp_path: object) -> None:
    log = ContainerLog(os.path.join(str(tmp_path), "c.log"))
    for index in range(10):
        log.write("stdout" if index % 2 == 0 else "stderr", f"l{index}\n".encode(), timestamp=1000 + index)
    log.close()
    assert [line.data for line in await collect(log, LogQuery(tail=3))] == [b"l7\n", b"l8\n", b"l9\n"]
    assert await collect(log, LogQuery(tail=0)) == []
    since = await collect(log, LogQuery(since=1005, until=1007))
    assert [line.data for line in since] == [b"l5\n", b"l6\n", b"l7\n"]
    errs = await collect(log, LogQuery(streams=frozenset({"stderr"}), tail=2))
    assert [(line.stream, line.data) for line in errs] == [("stderr", b"l7\n"), ("stderr", b"l9\n")]


@pytest.mark.asyncio
async def test_rotation_keeps_the_newest_lines_within_the_cap(tmp_path: object) -> None:
    cap = 4096
    log = ContainerLog(os.path.join(str(tmp_path), "c.log"), max_size=cap, max_files=2)
    for index in range(2000):
        log.write("stdout", f"line {index:05d}\n".encode())
    log.close()
    files = log.files()
    assert len(files) == 2
    record_size = len(encode_record(LogLine("stdout", b"line 00000\n", 0)))
    assert all(os.path.getsize(name) < cap + record_size for name in files)
    lines = [line.data for line in await collect(log, LogQuery())]
    assert lines[-1] == b"line 01999\n"
    assert b"line 00000\n" not in lines
    numbers = [int(line.split()[1]) for line in lines]
    assert numbers == list(range(numbers[0], 2000))  # contiguous: nothing lost inside the window


@pytest.mark.asyncio
async def test_follow_sees_new_lines_and_ends_when_log_closes(tmp_path: object) -> None:
    log = ContainerLog(os.path.join(str(tmp_path), "c.log"))
    log.write("stdout", b"before\n")
    seen: list[bytes] = []
    caught_up = asyncio.Event()

    async def follow() -> None:
        async for line in log.read(LogQuery(follow=True)):
            seen.append(line.data)
            caught_up.set()

    task = asyncio.create_task(follow())
    await asyncio.wait_for(caught_up.wait(), 5)  # the follower has read what was there
    log.write("stdout", b"after 1\n")
    log.write("stderr", b"after 2\n")
    log.close()
    async with asyncio.timeout(5):
        await task
    assert seen == [b"before\n", b"after 1\n", b"after 2\n"]


@pytest.mark.asyncio
async def test_follower_loses_nothing_across_rotations(tmp_path: object) -> None:
    log = ContainerLog(os.path.join(str(tmp_path), "c.log"), max_size=2048, max_files=2)
    seen: list[bytes] = []
    following = asyncio.Event()

    async def follow() -> None:
        async for line in log.read(LogQuery(follow=True)):
            seen.append(line.data)
            following.set()

    task = asyncio.create_task(follow())
    log.write("stdout", b"n0\n")
    await asyncio.wait_for(following.wait(), 5)  # the follower is reading before any rotation
    for index in range(1, 500):
        log.write("stdout", f"n{index}\n".encode())
        await asyncio.sleep(0)
    log.close()
    async with asyncio.timeout(5):
        await task
    assert seen == [f"n{index}\n".encode() for index in range(500)]


@pytest.mark.asyncio
async def test_follow_with_until_ends_at_the_deadline(tmp_path: object) -> None:
    import time

    log = ContainerLog(os.path.join(str(tmp_path), "c.log"))
    log.write("stdout", b"x\n")
    deadline = time.time_ns() + 200_000_000
    async with asyncio.timeout(10):
        lines = await collect(log, LogQuery(follow=True, until=deadline))
    assert [line.data for line in lines] == [b"x\n"]
    log.close()


@pytest.mark.asyncio
async def test_follower_closed_early_releases_its_files(tmp_path: object) -> None:
    log = ContainerLog(os.path.join(str(tmp_path), "c.log"))
    log.write("stdout", b"x\n")
    before = len(os.listdir("/proc/self/fd"))
    reader = log.read(LogQuery(follow=True))
    assert (await reader.__anext__()).data == b"x\n"
    await reader.aclose()
    assert len(os.listdir("/proc/self/fd")) == before
    log.close()


def test_store_open_get_remove(tmp_path: object) -> None:
    store = LogStore(os.path.join(str(tmp_path), "logs"))
    log = store.open("c1")
    log.write("stdout", b"x\n")
    assert store.get("c1") is log
    with pytest.raises(RPCError) as info:
        store.get("nope")
    assert info.value.code == Code.NOT_FOUND
    with pytest.raises(RPCError) as bad:
        store.open("../evil")
    assert bad.value.code == Code.INVALID_ARGUMENT
    store.remove("c1")
    assert os.listdir(store.directory) == []
    store.close()
