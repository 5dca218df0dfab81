"""The asyncio driver of a debug-console exec: moves bytes between a connected stream, an input
source and an output sink; every protocol rule is in the sans-IO :class:`kuasar.console.ConsoleExec`.

Layer contract: middle layer; asyncio plus ``kuasar.console``. No protobuf (this is ``kuasarctl
exec``'s fast path), no terminal handling and no fds: the caller hands in an async iterator of input
chunks and an async output sink, so tests drive it with plain bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from kuasar.config import DEFAULT_LIMITS, Limits
from kuasar.console import ConsoleExec, SessionResult
from kuasar.errors import ConnectionClosed

READ_CHUNK = 64 * 1024

OutputSink = Callable[[bytes], Awaitable[None]]

__all__ = ["OutputSink", "SessionResult", "run"]


async def _forward_input(
    writer: asyncio.StreamWriter,
    core: ConsoleExec,
    source: AsyncIterator[bytes],
    *,
    escape: int | None,
    detached: asyncio.Event,
    started: asyncio.Event,
) -> None:
    await started.wait()
    async for received in source:
        chunk = received
        if escape is not None and escape in chunk:
            chunk = chunk[: chunk.index(escape)]
            detached.set()
        if chunk:
            core.send_input(chunk)
            writer.write(core.data_to_send())
            await writer.drain()
        if detached.is_set():
            return
    core.send_eof()
    writer.write(core.data_to_send())
    await writer.drain()


async def run(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    core: ConsoleExec,
    output: OutputSink,
    *,
    source: AsyncIterator[bytes] | None = None,
    escape: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> SessionResult:
    """Run ``core``'s command: send its line, relay input and output, return its exit status.

    Args:
        reader: the console connection's input.
        writer: the console connection's output (not closed here).
        core: the command, not yet initiated.
        output: where the command's output goes.
        source: stdin chunks (only read once the command has started).
        escape: the detach byte in ``source`` (interactive sessions).
        limits: ``console_start_timeout`` bounds the wait for the start marker.

    Raises:
        ConnectionClosed: the console closed before the exit marker arrived.
        ProtocolError: no start marker within ``limits.console_start_timeout``.
    """
    writer.write(core.initiate())
    await writer.drain()
    detached, started = asyncio.Event(), asyncio.Event()
    detach_wait = asyncio.ensure_future(detached.wait())
    forward: asyncio.Future[None] | None = None
    if source is not None:
        forward = asyncio.ensure_future(
            _forward_input(writer, core, source, escape=escape, detached=detached, started=started)
        )
    loop = asyncio.get_running_loop()
    start_by = loop.time() + limits.console_start_timeout
    try:
        while not core.finished:
            read = asyncio.ensure_future(reader.read(READ_CHUNK))
            timeout = None if core.started else max(start_by - loop.time(), 0)
            done, _ = await asyncio.wait(
                {read, detach_wait}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                read.cancel()
                raise core.start_timeout_error(limits.console_start_timeout)
            if read not in done:
                read.cancel()
                return SessionResult(None, detached=True)
            data = read.result()
            out = core.receive_data(data) if data else core.receive_eof()
            if core.started:
                started.set()
            if out:
                await output(out)
            if forward is not None and forward.done() and not forward.cancelled() and forward.exception():
                raise forward.exception()  # type: ignore[misc]
    finally:
        detach_wait.cancel()
        if forward is not None:
            forward.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, ConnectionClosed):
                await forward
    if core.exit_status is None:
        raise core.closed_error()
    return SessionResult(core.exit_status)
