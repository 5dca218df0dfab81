"""One ``kuasar.agent.v1.Agent/Exec`` stream on a blocking agent connection, for a selector loop:
the blocking twin of :class:`kuasar.remote_process.RemoteProcess`.

Layer contract: guest layer; the connection of a :class:`~kuasar.session._blocking.BlockingSession`
(``kuasar.ttrpc.blocking`` and its sans-IO core), the Exec stream's rules (``kuasar.remote_exec``) and
``kuasar.wire``. No asyncio, no protobuf. The caller's loop registers the process itself (it has a
``fileno()``), asks :meth:`wants_write`, calls :meth:`on_ready` and writes the chunks it returns;
bytes queued for the agent are sent as the socket takes them, never blocking the loop.
"""

from __future__ import annotations

import os
import time

from kuasar import _signals, wire
from kuasar._tracing import Span, trace, tracing
from kuasar.errors import ConnectionClosed, KuasarError, ProtocolError, RPCError
from kuasar.remote_exec import SERVICE, STDERR, STDOUT, start_error
from kuasar.ttrpc._client_core import Event, Finished
from kuasar.ttrpc.blocking import BlockingClient

READ_CHUNK = 256 * 1024
#: Bytes of protobuf and ttrpc framing kept free in each stdin message.
_CHUNK_SLACK = 64


class BlockingProcess:
    """A remote process started with ``start`` on ``client``'s connection.

    Attributes:
        pid: the process's pid in the guest, once it started (0 before).
        exit: its exit status, once it arrived.
        ended: the stream is over (the exit status arrived and the agent closed the call).
    """

    def __init__(self, client: BlockingClient, start: wire.ExecStart) -> None:
        self.client = client
        self._core = client.core
        self._sock = client.sock
        self._outbox = bytearray()
        self.argv = tuple(start.argv) or tuple(os.fsdecode(arg) for arg in start.argv_bytes)
        self.pid = 0
        self.exit: wire.ExitStatus | None = None
        self.ended = False
        self._chunk = max(1024, client.limits.max_message - _CHUNK_SLACK)
        self._span = Span(f"ttrpc /{SERVICE}/Exec", messages=True) if tracing() else None
        self._stream_id = self._core.open(SERVICE, "Exec", b"", client_streaming=True, server_streaming=True)
        if self._span is not None:
            self._span.name += f" stream {self._stream_id}"
            trace("%s open (bidi)", self._span.name)
        self._send(wire.ExecInput(start=start))

    def attach(self) -> list[tuple[int, bytes]]:
        """Start driving the stream (the socket becomes non-blocking): the output that already
        arrived, e.g. while the session's probe was read on the same connection.

        Raises:
            CommandNotFound, CommandNotExecutable, RPCError: the agent refused to start it.
        """
        self._sock.setblocking(False)
        return self._on_events(self.client.take_early(self._stream_id))

    def abandon(self) -> None:
        """Give the stream up before it was driven (the guest turned out not to be our agent):
        later frames for it are dropped."""
        if self._span is not None:
            self._span.end("not used (the guest has no agent API)")
        self._core.abandon(self._stream_id)
        self.client.take_early(self._stream_id)

    def fileno(self) -> int:
        return self._sock.fileno()

    # -- input -----------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue stdin bytes (split to fit the message limit)."""
        for offset in range(0, len(data), self._chunk):
            self._send(wire.ExecInput(stdin=data[offset : offset + self._chunk]))

    def close_stdin(self) -> None:
        self._send(wire.ExecInput(stdin_eof=True))

    def resize(self, rows: int, cols: int) -> None:
        self._send(wire.ExecInput(resize=wire.TerminalSize(rows=rows, cols=cols)))

    def send_signal(self, signum: int) -> None:
        self._send(wire.ExecInput(signal=int(signum)))

    @property
    def backlog(self) -> int:
        """Bytes queued for the agent and not yet taken by the socket."""
        return len(self._outbox)

    def wants_write(self) -> bool:
        self._outbox += self._core.data_to_send()
        return bool(self._outbox)

    # -- the socket ------------------------------------------------------------------------------

    def on_ready(self, *, readable: bool, writable: bool) -> list[tuple[int, bytes]]:
        """The socket is ready: send what it takes, read what came; the output chunks, as
        ``(STDOUT or STDERR, data)``, to write out in order.

        Raises:
            CommandNotFound, CommandNotExecutable, RPCError: the agent refused to start it.
            ConnectionClosed, ProtocolError: the connection failed or the agent misbehaved.
        """
        try:
            if writable and self.wants_write():
                del self._outbox[: self._sock.send(self._outbox)]
            data = self._sock.recv(READ_CHUNK) if readable else None
        except BlockingIOError:
            return []
        except OSError as exc:
            raise ConnectionClosed(f"ttrpc: connection lost: {exc.strerror or exc}") from None
        if data is None:
            return []
        if not data:
            raise ConnectionClosed("the agent closed the connection before the command finished")
        chunks = self._on_events(self._core.receive_data(data))
        if self._core.error is not None:
            raise self._core.error
        return chunks

    def _on_events(self, events: list[Event]) -> list[tuple[int, bytes]]:
        chunks: list[tuple[int, bytes]] = []
        for event in events:
            if event.stream_id != self._stream_id:
                continue
            if isinstance(event, Finished):
                self._finished(event)
                continue
            payload = event.payload
            if self._span is not None:
                self._span.received(len(payload))
            output = wire.ExecOutput.decode(payload)
            if output.started is not None:
                self.pid = output.started.pid
            elif output.stdout is not None:
                chunks.append((STDOUT, output.stdout))
            elif output.stderr is not None:
                chunks.append((STDERR, output.stderr))
            elif output.exit is not None:
                self.exit = output.exit
        return chunks

    def _finished(self, event: Finished) -> None:
        self.ended = True
        if self._span is not None:
            from kuasar.ttrpc._trace import outcome

            self._span.end(outcome(event.error) if event.error is not None else "OK")
        if isinstance(event.error, RPCError) and not self.pid:
            raise start_error(event.error, self.argv) from None
        if event.error is not None:
            raise event.error
        if self.exit is None:
            raise ProtocolError("agent: Exec ended without an exit status")

    def _send(self, message: wire.ExecInput) -> None:
        if not self.ended:
            data = message.encode()
            self._core.send(self._stream_id, data)
            if self._span is not None:
                self._span.sent(len(data))

    def kill(self) -> None:
        """Leaving before the end: SIGKILL the process, bounded (the socket may be stuck)."""
        if self._span is not None and not self.ended:
            self._span.end("closed by the client before the end")
        if self.ended or not self.pid:
            return
        self.send_signal(_signals.SIGKILL)
        self._core.unsend(bytes(self._outbox))  # a half-written frame goes first, whole
        self._outbox.clear()
        self._sock.setblocking(True)
        try:  # noqa: SIM105 - contextlib is not on the start-up path
            self.client.flush(time.monotonic() + self.client.limits.signal_send_timeout)
        except KuasarError:
            pass
