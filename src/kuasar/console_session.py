"""Host side of a debug-console session over a connected stream: one command, or a live relay.

Layer contract: middle layer; asyncio plus the sans-IO ``kuasar.console`` (wrapper line, marker
stripper). No protobuf (this is ``kuasarctl exec``'s fast path), no terminal handling and no fds: the
caller hands in an async iterator of input chunks and an async output sink, so tests drive it with
plain bytes.

The console is a PTY in canonical mode, so piped stdin is line-based text: at EOF we send ``^D``
(twice when the last line has no newline, to flush it first). Exact binary stdin and separate stderr
need the agent API.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from kuasar.console import EXEC_HEADER, MarkerStripper, build_exec_line, new_token
from kuasar.errors import ConnectionClosed

READ_CHUNK = 64 * 1024
EOF_KEY = b"\x04"

OutputSink = Callable[[bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SessionResult:
    """How a console session ended.

    Attributes:
        exit_status: the remote command's status from the exit marker, or None (plain shell, detach).
        detached: the user pressed the escape key.
    """

    exit_status: int | None
    detached: bool = False


def tty_argv(argv: Sequence[str]) -> list[str]:
    """Wrap ``argv`` so it runs on a sane (echoing, cooked-output) terminal: the exec wrapper turns
    echo and output processing off for byte-exact pipes, an interactive program wants them back."""
    return ["sh", "-c", 'stty sane 2>/dev/null; exec "$@"', "sh", *argv]


async def _forward_input(
    writer: asyncio.StreamWriter,
    source: AsyncIterator[bytes],
    *,
    escape: int | None,
    detached: asyncio.Event,
    send_eof: bool,
    go: asyncio.Event,
) -> None:
    await go.wait()
    last = b"\n"
    async for received in source:
        chunk = received
        if escape is not None and escape in chunk:
            chunk = chunk[: chunk.index(escape)]
            detached.set()
        if chunk:
            writer.write(chunk)
            await writer.drain()
            last = chunk[-1:]
        if detached.is_set():
            return
    if send_eof:
        writer.write(EOF_KEY if last == b"\n" else EOF_KEY * 2)
        await writer.drain()


async def relay(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    output: OutputSink,
    *,
    source: AsyncIterator[bytes] | None = None,
    stripper: MarkerStripper | None = None,
    escape: int | None = None,
    send_eof: bool = True,
) -> SessionResult:
    """Pump bytes both ways until the remote side closes, the marker arrives, or the user detaches."""
    detached = asyncio.Event()
    detach_wait = asyncio.ensure_future(detached.wait())
    # Input waits for the command's start marker: until then the console's shell may still be
    # reading its command line (readline in raw mode would swallow ^D and type-ahead).
    started = asyncio.Event()
    if stripper is None:
        started.set()
    forward: asyncio.Future[None] | None = None
    if source is not None:
        forward = asyncio.ensure_future(
            _forward_input(writer, source, escape=escape, detached=detached, send_eof=send_eof, go=started)
        )
    try:
        while stripper is None or stripper.exit_status is None:
            read = asyncio.ensure_future(reader.read(READ_CHUNK))
            done, _ = await asyncio.wait({read, detach_wait}, return_when=asyncio.FIRST_COMPLETED)
            if read not in done:
                read.cancel()
                return SessionResult(None, detached=True)
            data = read.result()
            if not data:
                break
            out = stripper.feed(data) if stripper is not None else data
            if stripper is not None and stripper.started:
                started.set()
            if out:
                await output(out)
            if forward is not None and forward.done() and not forward.cancelled() and forward.exception():
                raise forward.exception()  # type: ignore[misc]
        if stripper is not None:
            tail = stripper.finish()
            if tail:
                await output(tail)
            return SessionResult(stripper.exit_status)
        return SessionResult(None)
    finally:
        detach_wait.cancel()
        if forward is not None:
            forward.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, ConnectionClosed):
                await forward


async def run_command(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    argv: Sequence[str],
    output: OutputSink,
    *,
    source: AsyncIterator[bytes] | None = None,
    escape: int | None = None,
) -> SessionResult:
    """Run ``argv`` through the console in exec mode and return its exit status.

    Raises:
        ConnectionClosed: the console closed before the exit marker arrived.
    """
    token = new_token()
    writer.write(EXEC_HEADER + build_exec_line(argv, token, stdin=source is not None))
    await writer.drain()
    result = await relay(reader, writer, output, source=source, stripper=MarkerStripper(token), escape=escape)
    if result.exit_status is None and not result.detached:
        raise ConnectionClosed(
            "the debug console closed before the command finished (no exit status received)",
            hints=["The guest shell may have been killed, or the console does not run sh-compatible shells."],
        )
    return result
