"""Per-container log store: timestamped lines per stream, bounded on disk, with tail/since/follow.

Layer contract: guest side, used by :mod:`kuasar.agent.containers` (writer) and the Logs handler
(reader). Knows files and asyncio, never ttrpc or protobuf; imports only ``kuasar.errors``,
``kuasar.ttrpc.codes`` and :mod:`kuasar.logtime` (the stamp format, shared with the CLI).

On disk each container has ``DIR/<id>.log`` and, after rotation, ``DIR/<id>.log.1`` ... (at most
``max_files`` files of about ``max_size`` bytes each; the oldest is dropped). Each line is one JSON
object in docker's json-file shape::

    {"log": "hello\\n", "stream": "stdout", "time": "2026-11-22T10:00:00.123456789Z"}

Bytes that are not UTF-8 survive the round trip exactly (they are stored as ``\\udcXX`` escapes,
Python's ``surrogateescape``). A line longer than :data:`MAX_LINE` is split into several entries
without a newline, as docker does at 16 KiB.

Followers read the files through their own descriptors, so a rotation never makes them skip lines:
a follower keeps reading the renamed file to its end before it moves to the new one. Memory stays
bounded whatever the number of followers or the speed of the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from collections import deque
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass

from kuasar.errors import RPCError
from kuasar.logtime import format_time, parse_time
from kuasar.ttrpc.codes import Code

#: docker's json-file splits lines at 16 KiB; so do we.
MAX_LINE = 16 * 1024
#: Where the agent keeps container logs unless told otherwise (a tmpfs in a guest).
DEFAULT_LOG_DIR = "/run/kuasar-agent/logs"
DEFAULT_MAX_SIZE = 10 * 1024 * 1024
DEFAULT_MAX_FILES = 2
STREAMS = ("stdout", "stderr")
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
#: Longest JSON record accepted when reading back (a 16 KiB line escapes to at most ~6x).
_MAX_RECORD = MAX_LINE * 8


@dataclass(frozen=True, slots=True)
class LogLine:
    """One stored log entry.

    Attributes:
        stream: ``"stdout"`` or ``"stderr"``.
        data: the line's bytes, newline included when there was one.
        timestamp: when the agent received it, unix nanoseconds.
    """

    stream: str
    data: bytes
    timestamp: int


def encode_record(line: LogLine) -> bytes:
    text = line.data.decode("utf-8", "surrogateescape")
    record = {"log": text, "stream": line.stream, "time": format_time(line.timestamp)}
    return json.dumps(record, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"


def decode_record(raw: bytes) -> LogLine | None:
    """A stored record back to a :class:`LogLine`; ``None`` for a torn or foreign line."""
    try:
        record = json.loads(raw)
        data = record["log"].encode("utf-8", "surrogateescape")
        stream = record["stream"]
        timestamp = parse_time(record["time"])
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeError):
        return None
    if stream not in STREAMS:
        return None
    return LogLine(stream, data, timestamp)


@dataclass(frozen=True, slots=True)
class LogQuery:
    """What a reader asks for.

    Attributes:
        streams: which streams to return (empty = both).
        since: only entries at or after this unix-ns time (0 = from the start).
        until: only entries at or before this unix-ns time (0 = no end; also ends a follow).
        tail: only the last N matching stored entries (``None`` = all) before following.
        follow: keep going with new entries until the log is closed and drained.
    """

    streams: frozenset[str] = frozenset()
    since: int = 0
    until: int = 0
    tail: int | None = None
    follow: bool = False

    def matches(self, line: LogLine) -> bool:
        if self.streams and line.stream not in self.streams:
            return False
        return line.timestamp >= self.since


class _FileCursor:
    """Reads whole records from one open log file, keeping a partial trailing record."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.inode = os.fstat(fd).st_ino
        self._pending = bytearray()

    def read_available(self) -> Iterator[LogLine]:
        while True:
            chunk = os.read(self.fd, 256 * 1024)
            if not chunk:
                return
            self._pending += chunk
            start = 0
            while (end := self._pending.find(b"\n", start)) >= 0:
                line = decode_record(bytes(self._pending[start:end]))
                if line is not None:
                    yield line
                start = end + 1
            del self._pending[:start]
            if len(self._pending) > _MAX_RECORD:  # garbage without newlines: drop it
                self._pending.clear()

    def close(self) -> None:
        os.close(self.fd)


class ContainerLog:
    """The log of one container: written by the agent's pumps, read by any number of readers.

    Writes are synchronous and happen in the event loop's thread (each call appends whole records
    with one ``write(2)``); readers are async generators from :meth:`read`.
    """

    def __init__(self, path: str, *, max_size: int = DEFAULT_MAX_SIZE, max_files: int = DEFAULT_MAX_FILES):
        if max_size <= 0 or max_files < 1:
            raise ValueError("max_size must be positive and max_files at least 1")
        self.path = path
        self.max_size = max_size
        self.max_files = max_files
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self._size = os.fstat(self._fd).st_size
        self._partial: dict[str, bytearray] = {name: bytearray() for name in STREAMS}
        self._changed = asyncio.Event()
        self.closed = False

    # -- writing ---------------------------------------------------------------------------------

    def write(self, stream: str, data: bytes, timestamp: int | None = None) -> None:
        """Append output of ``stream``; complete lines are stored at once, a partial one is held.

        Args:
            stream: ``"stdout"`` or ``"stderr"``.
            data: raw bytes as read from the container.
            timestamp: unix ns (default: now).
        """
        if self.closed or not data:
            return
        when = time.time_ns() if timestamp is None else timestamp
        buffer = self._partial[stream]
        buffer += data
        lines: list[LogLine] = []
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0 or end - start >= MAX_LINE:
                if len(buffer) - start >= MAX_LINE:
                    lines.append(LogLine(stream, bytes(buffer[start : start + MAX_LINE]), when))
                    start += MAX_LINE
                    continue
                break
            lines.append(LogLine(stream, bytes(buffer[start : end + 1]), when))
            start = end + 1
        del buffer[:start]
        self._append(lines)

    def flush(self) -> None:
        """Store held partial lines (used at end of output)."""
        when = time.time_ns()
        lines = [LogLine(name, bytes(buf), when) for name, buf in self._partial.items() if buf]
        for buf in self._partial.values():
            buf.clear()
        self._append(lines)

    def close(self) -> None:
        """The container's output has ended: flush, stop writing, and let followers finish."""
        if self.closed:
            return
        self.flush()
        self.closed = True
        os.close(self._fd)
        self._notify()

    def _append(self, lines: list[LogLine]) -> None:
        if not lines:
            return
        payload = b"".join(encode_record(line) for line in lines)
        os.write(self._fd, payload)
        self._size += len(payload)
        if self._size >= self.max_size:
            self._rotate()
        self._notify()

    def _rotate(self) -> None:
        os.close(self._fd)
        names = self.files()
        oldest = f"{self.path}.{self.max_files - 1}" if self.max_files > 1 else self.path
        with contextlib.suppress(FileNotFoundError):
            os.unlink(oldest)
        for index in range(self.max_files - 2, -1, -1):
            source = self.path if index == 0 else f"{self.path}.{index}"
            if source in names and self.max_files > 1:
                with contextlib.suppress(FileNotFoundError):
                    os.rename(source, f"{self.path}.{index + 1}")
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self._size = 0

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def files(self) -> list[str]:
        """Existing files, oldest first."""
        names = [f"{self.path}.{index}" for index in range(self.max_files - 1, 0, -1)]
        return [name for name in [*names, self.path] if os.path.exists(name)]

    # -- reading ---------------------------------------------------------------------------------

    def _open_all(self) -> list[_FileCursor]:
        cursors = []
        for name in self.files():
            try:
                cursors.append(_FileCursor(os.open(name, os.O_RDONLY | os.O_CLOEXEC)))
            except FileNotFoundError:
                continue
        return cursors

    async def read(self, query: LogQuery) -> AsyncGenerator[LogLine, None]:
        """Stored entries matching ``query``, then (with ``follow``) new ones as they arrive.

        The generator closes its files however it ends; closing it early (the client went away)
        is always safe. With ``follow`` it ends once the log is closed and drained, or ``until``
        has passed.
        """
        waiter = self._changed
        closed = self.closed
        cursors = self._open_all()
        try:
            history: deque[LogLine] = deque(maxlen=query.tail)
            for cursor in cursors:
                for line in cursor.read_available():
                    if query.matches(line) and not (query.until and line.timestamp > query.until):
                        history.append(line)
            for line in history:
                yield line
            if not query.follow:
                return
            current = cursors[-1] if cursors else None
            while True:
                if current is not None:
                    for line in current.read_available():
                        if query.until and line.timestamp > query.until:
                            return
                        if query.matches(line):
                            yield line
                if current is None or self._rotated(current):
                    fresh = self._open_current()
                    if fresh is not None:
                        cursors.append(fresh)
                        current = fresh
                        continue
                if closed:
                    return
                timeout = None
                if query.until:
                    timeout = (query.until - time.time_ns()) / 1e9
                    if timeout <= 0:
                        return
                try:
                    async with asyncio.timeout(timeout):
                        await waiter.wait()
                except TimeoutError:
                    return
                waiter = self._changed
                closed = self.closed
        finally:
            for cursor in cursors:
                cursor.close()

    def _rotated(self, cursor: _FileCursor) -> bool:
        try:
            return os.stat(self.path).st_ino != cursor.inode
        except FileNotFoundError:
            return not self.closed

    def _open_current(self) -> _FileCursor | None:
        try:
            return _FileCursor(os.open(self.path, os.O_RDONLY | os.O_CLOEXEC))
        except FileNotFoundError:
            return None


class LogStore:
    """Every container's log under one directory.

    Args:
        directory: where ``<id>.log`` files live (created, mode 0700).
        max_size: bytes per file before it rotates.
        max_files: files kept per container (the current one included).
    """

    def __init__(
        self, directory: str, *, max_size: int = DEFAULT_MAX_SIZE, max_files: int = DEFAULT_MAX_FILES
    ) -> None:
        self.directory = directory
        self.max_size = max_size
        self.max_files = max_files
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._logs: dict[str, ContainerLog] = {}

    def open(self, container_id: str) -> ContainerLog:
        """A fresh log for ``container_id`` (old files of the same ID are removed first)."""
        if not _ID_PATTERN.fullmatch(container_id):
            raise RPCError(Code.INVALID_ARGUMENT, f"invalid container id {container_id!r}")
        self.remove(container_id)
        log = ContainerLog(
            os.path.join(self.directory, f"{container_id}.log"),
            max_size=self.max_size,
            max_files=self.max_files,
        )
        self._logs[container_id] = log
        return log

    def get(self, container_id: str) -> ContainerLog:
        """The log of ``container_id``.

        Raises:
            RPCError: ``NOT_FOUND`` when there is none.
        """
        log = self._logs.get(container_id)
        if log is None:
            raise RPCError(Code.NOT_FOUND, f"no logs for container {container_id!r}")
        return log

    def remove(self, container_id: str) -> None:
        """Close and delete the log of ``container_id`` (no error when there is none)."""
        log = self._logs.pop(container_id, None)
        if log is not None:
            log.close()
        base = os.path.join(self.directory, f"{container_id}.log")
        for name in [base, *(f"{base}.{index}" for index in range(1, self.max_files + 1))]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)

    def close(self) -> None:
        """Close every log (files stay on disk)."""
        for log in self._logs.values():
            log.close()
