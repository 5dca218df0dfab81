"""Both drivers of the console exec core over real socket pairs: a peer that never starts the
command is bounded by ``console_start_timeout``; a peer that plays the wrapper gives the status."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from kuasar import console_session, console_sync
from kuasar.config import DEFAULT_LIMITS
from kuasar.console import ConsoleExec
from kuasar.errors import ConnectionClosed, DeadlineExceeded, ProtocolError

SHORT = DEFAULT_LIMITS.replace(console_start_timeout=0.3)


@pytest.fixture
def output() -> Iterator[tuple[int, int]]:
    """A pipe for the driver's output: ``(read_end, write_end)``, both closed afterwards."""
    read_end, write_end = os.pipe()
    yield read_end, write_end
    os.close(read_end)
    os.close(write_end)


def play_wrapper(peer: socket.socket, core: ConsoleExec) -> None:
    """Read the exec line, then answer as the wrapper would: start marker, output, exit marker."""
    received = b""
    while received.count(b"\n") < 2:
        received += peer.recv(4096)
    peer.sendall(b"prompt$ __KSR_START__:%s\nhello\n__KSR_EXIT__:%s:7\n" % ((core.token.encode(),) * 2))


def test_blocking_driver_bounds_a_console_that_never_starts(output: tuple[int, int]) -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        core = ConsoleExec(["true"])
        with pytest.raises(ProtocolError, match=r"did not start the command within 0\.3 s"):
            console_sync.run(ours, core, output_fd=output[1], limits=SHORT)


def test_blocking_driver_runs_a_command(output: tuple[int, int]) -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        core = ConsoleExec(["echo", "hello"])
        player = threading.Thread(target=play_wrapper, args=(peer, core))
        player.start()
        result = console_sync.run(ours, core, output_fd=output[1], limits=SHORT)
        player.join()
        assert result.exit_status == 7
        assert os.read(output[0], 100) == b"hello\n"


def read_exec_line(peer: socket.socket) -> None:
    received = b""
    while received.count(b"\n") < 2:
        received += peer.recv(4096)


def drain(fd: int) -> bytes:
    """What a pipe holds now (its writer may still be open)."""
    os.set_blocking(fd, False)
    data = bytearray()
    try:
        while chunk := os.read(fd, 1 << 20):
            data += chunk
    except BlockingIOError:
        pass
    return bytes(data)


def test_blocking_driver_relays_output_byte_exact_across_chunks_and_a_split_exit_marker() -> None:
    """Output only (no stdin): the blocking reads keep every byte, in order, whatever the chunking."""
    payload = bytes(range(256)) * 4096 + b"__KSR_EXIT__ lookalike\r\n"  # 1 MiB and a bit
    ours, peer = socket.socketpair()
    with ours, peer:
        core = ConsoleExec(["cat", "big"])

        def play() -> None:
            read_exec_line(peer)
            peer.sendall(b"\x1b[?2004l\r\n__KSR_START__:%s\n" % core.token.encode())
            for start in range(0, len(payload), 4095):
                peer.sendall(payload[start : start + 4095])
            exit_line = b"__KSR_EXIT__:%s:3\n" % core.token.encode()
            peer.sendall(exit_line[:9])
            peer.sendall(exit_line[9:] + b"dropped after the marker")

        read_end, write_end = os.pipe()
        collected = bytearray()

        def collect() -> None:
            while chunk := os.read(read_end, 1 << 20):
                collected.extend(chunk)

        threads = [threading.Thread(target=play), threading.Thread(target=collect)]
        for thread in threads:
            thread.start()
        try:
            result = console_sync.run(ours, core, output_fd=write_end, limits=SHORT)
        finally:
            os.close(write_end)
            for thread in threads:
                thread.join()
            os.close(read_end)
        assert result.exit_status == 3
        assert bytes(collected) == payload


def test_blocking_driver_deadline_bounds_a_started_command_that_prints_nothing(
    output: tuple[int, int],
) -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        core = ConsoleExec(["sleep", "10"])
        player = threading.Thread(
            target=lambda: (read_exec_line(peer), peer.sendall(b"__KSR_START__:%s\n" % core.token.encode()))
        )
        player.start()
        with pytest.raises(DeadlineExceeded):
            console_sync.run(ours, core, output_fd=output[1], deadline=time.monotonic() + 0.3, limits=SHORT)
        player.join()
        assert core.started


def test_blocking_driver_reports_a_console_closed_after_the_start(output: tuple[int, int]) -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        core = ConsoleExec(["cat"])
        peer.sendall(b"__KSR_START__:%s\npartial" % core.token.encode())
        peer.shutdown(socket.SHUT_WR)  # the console ends; the exec line still fits in the buffer
        with pytest.raises(ConnectionClosed, match="before the command finished"):
            console_sync.run(ours, core, output_fd=output[1], limits=SHORT)
        assert drain(output[0]) == b"partial"


@pytest.mark.asyncio
async def test_asyncio_driver_bounds_a_console_that_never_starts() -> None:
    ours, peer = socket.socketpair()
    with peer:
        reader, writer = await asyncio.open_connection(sock=ours)
        output = bytearray()

        async def sink(chunk: bytes) -> None:
            output.extend(chunk)

        try:
            with pytest.raises(ProtocolError, match=r"did not start the command within 0\.3 s"):
                await console_session.run(reader, writer, ConsoleExec(["true"]), sink, limits=SHORT)
        finally:
            writer.close()
            await writer.wait_closed()
        assert output == b""
