"""Both drivers of the console exec core over real socket pairs: a peer that never starts the
command is bounded by ``console_start_timeout``; a peer that plays the wrapper gives the status."""

from __future__ import annotations

import asyncio
import os
import socket
import threading

import pytest

from kuasar import console_session, console_sync
from kuasar.config import DEFAULT_LIMITS
from kuasar.console import ConsoleExec
from kuasar.errors import ProtocolError

SHORT = DEFAULT_LIMITS.replace(console_start_timeout=0.3)


def play_wrapper(peer: socket.socket, core: ConsoleExec) -> None:
    """Read the exec line, then answer as the wrapper would: start marker, output, exit marker."""
    received = b""
    while received.count(b"\n") < 2:
        received += peer.recv(4096)
    peer.sendall(b"prompt$ __KSR_START__:%s\nhello\n__KSR_EXIT__:%s:7\n" % ((core.token.encode(),) * 2))


def test_blocking_driver_bounds_a_console_that_never_starts() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        core = ConsoleExec(["true"])
        read_end, write_end = os.pipe()
        try:
            with pytest.raises(ProtocolError, match=r"did not start the command within 0\.3 s"):
                console_sync.run(ours, core, output_fd=write_end, limits=SHORT)
        finally:
            os.close(read_end)
            os.close(write_end)


def test_blocking_driver_runs_a_command() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        core = ConsoleExec(["echo", "hello"])
        player = threading.Thread(target=play_wrapper, args=(peer, core))
        player.start()
        read_end, write_end = os.pipe()
        try:
            result = console_sync.run(ours, core, output_fd=write_end, limits=SHORT)
            player.join()
            assert result.exit_status == 7
            assert os.read(read_end, 100) == b"hello\n"
        finally:
            os.close(read_end)
            os.close(write_end)


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
