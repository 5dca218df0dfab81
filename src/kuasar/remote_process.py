"""Host side of the agent API's ``Exec`` stream: a remote process with stdin, stdout, stderr, exit.

Layer contract: middle layer; ``kuasar.ttrpc`` (a connected :class:`~kuasar.ttrpc.Client`) and the
generated ``agent_pb2``; never dials (``kuasar.guest`` does) and never touches terminals or fds
(``kuasar.ctl`` does). Outcomes are records with status and signal kept apart
(:class:`CompletedProcess`); the mapping to a CLI exit code lives in ``kuasar.ctl.main``.

Use::

    async with RemoteProcess(client, ["sh", "-c", "cat; exit 3"], stdin=True) as proc:
        await proc.write(b"hello")
        await proc.close_stdin()
        while (chunk := await proc.read()) is not None:
            fd, data = chunk           # fd is 1 (stdout) or 2 (stderr)
        status = await proc.wait()     # CompletedProcess(exit_status=3, signal=0, ...)

or ``await run(client, argv, input=b"...")`` to collect everything. Leaving the ``async with``
block before the process has exited sends it SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal as signals
import types
from collections.abc import Awaitable, Callable, Mapping, Sequence

from kuasar import wire
from kuasar.config import DEFAULT_LIMITS, Limits
from kuasar.errors import (
    DeadlineExceeded,
    KuasarError,
    ProtocolError,
    RPCError,
)
from kuasar.remote_exec import (
    SERVICE,
    STDERR,
    STDOUT,
    CompletedProcess,
    ProcessError,
    exec_start,
    start_error,
)
from kuasar.ttrpc import Client, Stream

__all__ = [
    "SERVICE",
    "STDERR",
    "STDOUT",
    "CompletedProcess",
    "ProcessError",
    "RemoteProcess",
    "exec_start",
    "run",
]

#: Bytes of protobuf and ttrpc framing kept free in each stdin chunk.
_CHUNK_SLACK = 64


class RemoteProcess:
    """One ``Exec`` call on an agent connection; an async context manager.

    Args:
        client: a connected ttrpc client to a kuasar agent.
        argv: program and arguments; bytes that are not UTF-8 as surrogate escapes (as
            ``sys.argv`` holds them) arrive exactly (see :func:`exec_start`).
        tty: run on a PTY (stderr merged into stdout; ``resize`` applies).
        size: initial ``(rows, cols)`` of the PTY.
        stdin: keep the process's stdin open for :meth:`write` (else it reads ``/dev/null``).
        env: variables added to the guest's default environment.
        cwd: working directory in the guest (empty: ``/``).
        user: ``name``, ``uid`` or ``uid:gid`` in the guest.
        container_id: run inside this container instead of the guest itself.
        limits: stdin chunks stay under ``limits.max_message``.

    Raises (on entering):
        CommandNotFound: the program does not exist (CLI exit 127).
        CommandNotExecutable: it cannot be executed (126).
        RPCError: any other refusal (``UNIMPLEMENTED`` from an agent without this API,
            ``INVALID_ARGUMENT``, ``FAILED_PRECONDITION``).
        ConnectionClosed, ProtocolError: the connection or the agent misbehaved.
    """

    def __init__(
        self,
        client: Client,
        argv: Sequence[str],
        *,
        tty: bool = False,
        size: tuple[int, int] | None = None,
        stdin: bool = False,
        env: Mapping[str, str] | None = None,
        cwd: str = "",
        user: str = "",
        container_id: str = "",
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.argv = tuple(argv)
        self.tty = tty
        self.pid = 0
        self._chunk = max(1024, limits.max_message - _CHUNK_SLACK)
        self._limits = limits
        self._start = exec_start(
            self.argv, env or {}, cwd, user=user, tty=tty, container_id=container_id, stdin=stdin, size=size
        )
        self._stream: Stream[wire.ExecOutput] = client.stream(
            SERVICE, "Exec", wire.ExecOutput, client_streaming=True, server_streaming=True
        )
        self._exit: wire.ExitStatus | None = None
        self._ended = False
        self._send_closed = False

    async def __aenter__(self) -> RemoteProcess:
        await self._stream.__aenter__()
        try:
            await self._stream.send(wire.ExecInput(start=self._start))
            self.pid = await self._started()
        except BaseException as exc:
            await self._stream.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def _started(self) -> int:
        try:
            first = await self._stream.recv()
        except RPCError as exc:
            raise start_error(exc, self.argv) from None
        if first is None or first.started is None:
            raise ProtocolError("agent: Exec did not answer with started")
        return first.started.pid

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        if not self._ended and self.pid:
            # Leaving early (an error, a timeout, a break): the process must not outlive us.
            with contextlib.suppress(KuasarError, TimeoutError):
                async with asyncio.timeout(self._limits.signal_send_timeout):
                    await self.send_signal(signals.SIGKILL)
        await self._stream.__aexit__(exc_type, exc, tb)

    @property
    def exited(self) -> bool:
        """The exit status has arrived."""
        return self._exit is not None

    # -- input -----------------------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        """Send ``data`` to the process's stdin (split to fit the message limit).

        Raises:
            KuasarError: stdin was closed, or the connection is gone.
        """
        view = memoryview(data)
        for offset in range(0, len(view), self._chunk):
            await self._send(wire.ExecInput(stdin=bytes(view[offset : offset + self._chunk])))

    async def close_stdin(self) -> None:
        """Send end-of-file on stdin (on a PTY: the EOF character)."""
        await self._send(wire.ExecInput(stdin_eof=True))

    async def resize(self, rows: int, cols: int) -> None:
        """Set the remote PTY's size (ignored without ``tty``)."""
        await self._send(wire.ExecInput(resize=wire.TerminalSize(rows=rows, cols=cols)))

    async def send_signal(self, signum: int) -> None:
        """Deliver ``signum`` to the remote process (its process group on a PTY)."""
        await self._send(wire.ExecInput(signal=int(signum)))

    async def _send(self, message: wire.ExecInput) -> None:
        if self._ended or self._send_closed:
            return
        await self._stream.send(message)

    async def close_input(self) -> None:
        """Half-close the call: no more input of any kind (stdin gets EOF if still open)."""
        if not self._send_closed:
            self._send_closed = True
            await self._stream.close_send()

    # -- output ----------------------------------------------------------------------------------

    async def read(self) -> tuple[int, bytes] | None:
        """The next output chunk as ``(STDOUT|STDERR, data)``; ``None`` once the process has exited
        and all its output has been read.

        Raises:
            ProtocolError: the stream ended without an exit status.
            RPCError, ConnectionClosed: the call or the connection failed.
        """
        while not self._ended:
            message = await self._stream.recv()
            if message is None:
                self._ended = True
                if self._exit is None:
                    raise ProtocolError("agent: Exec ended without an exit status")
                return None
            if message.stdout is not None:
                return STDOUT, message.stdout
            if message.stderr is not None:
                return STDERR, message.stderr
            if message.exit is not None:
                self._exit = message.exit
        return None

    async def wait(self) -> CompletedProcess:
        """Read to the end and return the outcome, with whatever output was still unread."""
        out: list[bytes] = []
        err: list[bytes] = []
        while (chunk := await self.read()) is not None:
            (err if chunk[0] == STDERR else out).append(chunk[1])
        return self.result(b"".join(out), b"".join(err))

    def result(self, stdout: bytes = b"", stderr: bytes = b"") -> CompletedProcess:
        """The outcome once :meth:`read` returned ``None``.

        Raises:
            ProtocolError: no exit status has arrived yet.
        """
        if self._exit is None:
            raise ProtocolError("agent: no exit status yet")
        signal = self._exit.signal
        return CompletedProcess(
            self.argv,
            None if signal else self._exit.exit_code,
            signal,
            self._exit.core_dumped,
            stdout,
            stderr,
        )


async def run(
    client: Client,
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    check: bool = False,
    timeout: float | None = None,  # noqa: ASYNC109 - a deadline with the partial output attached
    env: Mapping[str, str] | None = None,
    cwd: str = "",
    user: str = "",
    container_id: str = "",
    limits: Limits = DEFAULT_LIMITS,
    on_output: Callable[[int, bytes], Awaitable[None]] | None = None,
) -> CompletedProcess:
    """Run ``argv`` in the guest and collect its output, like :func:`subprocess.run`.

    Args:
        client: a connected ttrpc client to a kuasar agent.
        argv: program and arguments.
        input: bytes for stdin (``None``: stdin is ``/dev/null``).
        check: raise :class:`ProcessError` when the command fails.
        timeout: seconds; on expiry the process is killed.
        env: added to the guest's default environment.
        cwd: working directory in the guest.
        user: user (and group) to run as.
        container_id: run inside this container.
        limits: message limit for stdin chunks.
        on_output: ``await on_output(STDOUT or STDERR, chunk)`` as output arrives, instead of
            collecting it (the result's ``stdout``/``stderr`` are then empty).

    Raises:
        DeadlineExceeded: ``timeout`` expired (``stdout``/``stderr`` hold the partial output).
        ProcessError: ``check`` and the command exited non-zero or was killed.
        CommandNotFound, CommandNotExecutable, RPCError: the command could not start.
    """
    out: list[bytes] = []
    err: list[bytes] = []
    process = RemoteProcess(
        client,
        argv,
        stdin=input is not None,
        env=env,
        cwd=cwd,
        user=user,
        container_id=container_id,
        limits=limits,
    )
    try:
        async with asyncio.timeout(timeout):
            async with process:
                if input is not None:
                    await process.write(input)
                    await process.close_stdin()
                while (chunk := await process.read()) is not None:
                    if on_output is not None:
                        await on_output(*chunk)
                    else:
                        (err if chunk[0] == STDERR else out).append(chunk[1])
                result = process.result(b"".join(out), b"".join(err))
    except TimeoutError as exc:
        if isinstance(exc, KuasarError):
            raise
        raise DeadlineExceeded(
            f"remote command timed out after {timeout:g} s", stdout=b"".join(out), stderr=b"".join(err)
        ) from None
    if check and (result.signal or result.exit_status):
        raise ProcessError(result)
    return result
