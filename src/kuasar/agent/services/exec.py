"""ttrpc handlers of ``kuasar.agent.v1.Agent``: ``Ping``, ``GetSystemInfo`` and the ``Exec`` stream.

Layer contract: guest side; the only place that turns ``Exec`` messages into calls on
:class:`kuasar.agent.process.Process` and back. Imports ``kuasar.ttrpc``, the generated
``agent_pb2`` and ``kuasar.agent.process``; never ``kuasar.ctl`` or ``kuasar.sandbox``.
Exec into a container goes through a :class:`ContainerExecutor` hook (the container manager,
which runs ``runc exec`` as the process and reports a command runc cannot start as a status).

Exec protocol (see ``agent.proto``): the first input must be ``start`` (its ``*_bytes`` fields,
when set, win over their string twins: arguments, environment and cwd arrive byte-exact); the
answer is ``started``, then ``stdout``/``stderr`` chunks (each at most 64 KiB and under the
message limit), then one ``exit``, then the stream ends. A command that cannot start ends the
call with ``NOT_FOUND`` (CLI 127), ``PERMISSION_DENIED`` (126) or ``INVALID_ARGUMENT``; exec into a
container on an agent without containers is ``FAILED_PRECONDITION``. An unknown container is
``FAILED_PRECONDITION`` too: ``NOT_FOUND`` is reserved for the command. When the call ends for
any reason — done, client gone, error — the process group is SIGKILLed and reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf import empty_pb2

import kuasar
from kuasar import ttrpc
from kuasar._log import get_logger
from kuasar.agent.process import STDERR, Process
from kuasar.agent.users import parse_user
from kuasar.config import DEFAULT_LIMITS, Limits
from kuasar.errors import RPCError
from kuasar.proto import agent_pb2 as pb
from kuasar.ttrpc.codes import Code

SERVICE = "kuasar.agent.v1.Agent"
#: Bytes of protobuf and ttrpc framing kept free in each output chunk.
_CHUNK_SLACK = 64
_MAX_ARGV_ITEMS = 4096

log = get_logger("kuasar.agent.exec")


class ContainerExecutor(Protocol):
    """Starts an exec inside a container (e.g. the container manager, through ``runc exec``)."""

    async def start_exec(
        self,
        container_id: str,
        argv: Sequence[str],
        *,
        tty: bool,
        rows: int,
        cols: int,
        stdin: bool,
        cwd: str,
        env: Mapping[str, str],
        user: str,
    ) -> Process:
        """Start ``argv`` in ``container_id``; the process exits with the command's status.

        Returns only once the command itself runs, so that a command that cannot start is a
        status, not output.

        Raises:
            RPCError: ``NOT_FOUND`` (no such command in the container, CLI 127),
                ``PERMISSION_DENIED`` (not executable, 126), ``FAILED_PRECONDITION`` (unknown or
                stopped container), ``INVALID_ARGUMENT`` (bad user, cwd or request).
        """
        ...


@dataclass(frozen=True, slots=True)
class ExecRequest:
    """An ``ExecStart`` checked and decoded.

    ``argv``, ``env`` and ``cwd`` come from the ``*_bytes`` fields when they are set (else from
    their string twins) and are decoded with :func:`os.fsdecode`: bytes that are not UTF-8 stay as
    surrogate escapes, which :mod:`subprocess` encodes back with :func:`os.fsencode`, so the
    command gets exactly the bytes the client sent.
    """

    argv: list[str]
    env: dict[str, str]
    cwd: str
    user: str
    tty: bool
    rows: int
    cols: int
    stdin: bool
    container_id: str


def _read(path: str, limit: int = 64 * 1024) -> str:
    try:
        with open(path, "rb") as file:
            return file.read(limit).decode(errors="replace")
    except OSError:
        return ""


def _os_release() -> tuple[str, str]:
    fields: dict[str, str] = {}
    for line in (_read("/etc/os-release") or _read("/usr/lib/os-release")).splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip('"')
    return fields.get("NAME", ""), fields.get("VERSION_ID", fields.get("VERSION", ""))


def _ip_addresses() -> list[str]:
    """IPv4 addresses (SIOCGIFADDR per interface) and IPv6 ones (/proc/net/if_inet6), no loopback."""
    import fcntl
    import ipaddress
    import socket
    import struct

    found: list[str] = []
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            with contextlib.suppress(OSError):
                packed = fcntl.ioctl(sock.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
                address = socket.inet_ntoa(packed[20:24])
                if not address.startswith("127."):
                    found.append(address)
    for line in _read("/proc/net/if_inet6").splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[5] != "lo":
            with contextlib.suppress(ValueError):
                found.append(str(ipaddress.IPv6Address(bytes.fromhex(parts[0]))))
    return found


def collect_system_info() -> dict[str, Any]:
    """The guest's kernel, OS, memory, CPUs, load, hostname, uptime and addresses (blocking reads)."""
    import platform
    import socket

    meminfo: dict[str, int] = {}
    for line in _read("/proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        with contextlib.suppress(ValueError, IndexError):
            meminfo[key] = int(rest.split()[0]) * 1024
    os_name, os_version = _os_release()
    try:
        load = list(os.getloadavg())
    except OSError:
        load = []
    try:
        uptime = int(float(_read("/proc/uptime").split()[0]))
    except (ValueError, IndexError):
        uptime = 0
    return {
        "kernel_version": platform.release(),
        "os_name": os_name,
        "os_version": os_version,
        "arch": platform.machine(),
        "total_memory": meminfo.get("MemTotal", 0),
        "available_memory": meminfo.get("MemAvailable", meminfo.get("MemFree", 0)),
        "cpu_count": len(os.sched_getaffinity(0)) or os.cpu_count() or 0,
        "load_average": load,
        "hostname": socket.gethostname(),
        "uptime": uptime,
        "ip_addresses": _ip_addresses(),
    }


def _exit_message(status: Any) -> pb.ExecOutput:
    return pb.ExecOutput(
        exit=pb.ExitStatus(exit_code=status.exit_code, signal=status.signal, core_dumped=status.core_dumped)
    )


def decode_start(start: pb.ExecStart) -> ExecRequest:
    """Check an ``ExecStart`` and decode it, preferring its byte-exact fields.

    Raises:
        RPCError: ``INVALID_ARGUMENT`` for an empty command, too many arguments, a NUL byte, or an
            environment entry that is not ``KEY=VALUE``.
    """
    argv = list(start.argv_bytes) or [os.fsencode(arg) for arg in start.argv]
    if start.env_bytes:
        entries = list(start.env_bytes)
    else:
        entries = [os.fsencode(key) + b"=" + os.fsencode(value) for key, value in start.env.items()]
    cwd = start.cwd_bytes or os.fsencode(start.cwd)
    if not argv or not argv[0]:
        raise RPCError(Code.INVALID_ARGUMENT, "empty command")
    if len(argv) > _MAX_ARGV_ITEMS or any(b"\0" in arg for arg in argv):
        raise RPCError(Code.INVALID_ARGUMENT, "invalid argv")
    env: dict[str, str] = {}
    for entry in entries:
        key, sep, value = entry.partition(b"=")
        if not key or not sep or b"\0" in entry:
            raise RPCError(Code.INVALID_ARGUMENT, f"invalid environment variable {entry[:64]!r}")
        env[os.fsdecode(key)] = os.fsdecode(value)
    if b"\0" in cwd:
        raise RPCError(Code.INVALID_ARGUMENT, "invalid working directory")
    return ExecRequest(
        argv=[os.fsdecode(arg) for arg in argv],
        env=env,
        cwd=os.fsdecode(cwd),
        user=start.user,
        tty=start.tty,
        rows=start.size.rows,
        cols=start.size.cols,
        stdin=start.stdin,
        container_id=start.container_id,
    )


async def _first_start(stream: ttrpc.ServerStream, limits: Limits) -> ExecRequest:
    try:
        async with asyncio.timeout(limits.exec_start_timeout):
            first = await stream.recv()
    except TimeoutError:
        raise RPCError(Code.INVALID_ARGUMENT, "no ExecStart received") from None
    if first is None or first.WhichOneof("kind") != "start":
        raise RPCError(Code.INVALID_ARGUMENT, "the first Exec message must be start")
    request = decode_start(first.start)
    parse_user(request.user)  # a bad spec is INVALID_ARGUMENT, in the guest and in a container
    return request


async def _spawn(
    request: ExecRequest, executor: ContainerExecutor | None, limits: Limits, home: str | None
) -> Process:
    options: dict[str, Any] = {
        "tty": request.tty,
        "rows": request.rows,
        "cols": request.cols,
        "stdin": request.stdin,
        "env": request.env,
        "cwd": request.cwd,
        "user": request.user,
    }
    if not request.container_id:
        return await Process.start(request.argv, home=home, limits=limits, **options)
    if executor is None:
        raise RPCError(Code.FAILED_PRECONDITION, "containers are not supported by this agent")
    return await executor.start_exec(request.container_id, request.argv, **options)


async def _feed_input(stream: ttrpc.ServerStream, process: Process) -> None:
    """Apply stdin, EOF, resize and signal messages until the client closes its side."""
    stdin_open = True
    while (message := await stream.recv()) is not None:
        kind = message.WhichOneof("kind")
        if kind == "stdin":
            if stdin_open:
                await process.write_stdin(message.stdin)
        elif kind == "stdin_eof":
            if stdin_open:
                stdin_open = False
                await process.close_stdin()
        elif kind == "resize":
            process.resize(message.resize.rows, message.resize.cols)
        elif kind == "signal":
            process.send_signal(message.signal)
        else:
            raise RPCError(Code.INVALID_ARGUMENT, f"unexpected Exec input {kind!r} after start")
    if stdin_open and not process.tty:
        await process.close_stdin()  # half-close without stdin_eof still means end of input


def exec_handlers(
    executor: ContainerExecutor | None = None,
    *,
    limits: Limits = DEFAULT_LIMITS,
    agent_version: str = kuasar.__version__,
    home: str | None = None,
) -> dict[tuple[str, str], ttrpc.Handler]:
    """Handlers for ``kuasar.agent.v1.Agent`` ``Ping``, ``GetSystemInfo`` and ``Exec``.

    Args:
        executor: runs exec requests that name a container (e.g. the agent's container manager);
            ``None``: such requests fail with ``FAILED_PRECONDITION``.
        limits: output chunks stay under ``limits.max_message``; ``exec_start_timeout`` bounds the
            wait for ``start``; passed on to each :class:`~kuasar.agent.process.Process`.
        agent_version: reported by ``Ping`` and ``GetSystemInfo``.
        home: HOME of a command run in the guest without a user (``None``: the agent's own, else
            ``/root``); commands in containers get their container's.
    """
    chunk = max(1024, limits.max_message - _CHUNK_SLACK)

    async def ping(request: pb.PingRequest, ctx: ttrpc.CallContext) -> pb.PingResponse:
        text = f"pong: {request.message}" if request.message else "pong"
        return pb.PingResponse(message=text, version=agent_version)

    async def system_info(request: empty_pb2.Empty, ctx: ttrpc.CallContext) -> pb.SystemInfo:
        info = await asyncio.get_running_loop().run_in_executor(None, collect_system_info)
        return pb.SystemInfo(agent_version=agent_version, **info)

    async def exec_(stream: ttrpc.ServerStream, ctx: ttrpc.CallContext) -> None:
        request = await _first_start(stream, limits)
        process = await _spawn(request, executor, limits, home)
        clog = log.child(stream=ctx.stream_id, pid=process.pid)
        clog.debug("exec %r (tty=%s, container=%r)", request.argv[0], request.tty, request.container_id)
        feeder: asyncio.Future[None] | None = None
        try:
            await stream.send(pb.ExecOutput(started=pb.ExecStarted(pid=process.pid)))

            async def sink(which: int, data: bytes) -> None:
                message = pb.ExecOutput(stderr=data) if which == STDERR else pb.ExecOutput(stdout=data)
                await stream.send(message)

            feeder = asyncio.ensure_future(_feed_input(stream, process))
            pumping = asyncio.ensure_future(process.pump_output(sink, chunk=chunk))
            try:
                while not pumping.done():
                    await asyncio.wait({pumping, feeder}, return_when=asyncio.FIRST_COMPLETED)
                    if feeder.done() and feeder.exception() is not None:
                        raise feeder.exception()  # type: ignore[misc]
                    if feeder.done() and not pumping.done():
                        await pumping
                await pumping
            finally:
                pumping.cancel()
                await asyncio.wait({pumping})
            status = await process.wait()
            clog.debug("exited: %s", status)
            await stream.send(_exit_message(status))
        finally:
            if feeder is not None:
                feeder.cancel()
                await asyncio.wait({feeder})
            await process.close()

    unary = ttrpc.Cardinality.UNARY
    return {
        (SERVICE, "Ping"): ttrpc.Handler(ping, unary, pb.PingRequest, pb.PingResponse),
        (SERVICE, "GetSystemInfo"): ttrpc.Handler(system_info, unary, empty_pb2.Empty, pb.SystemInfo),
        (SERVICE, "Exec"): ttrpc.Handler(exec_, ttrpc.Cardinality.BIDI, pb.ExecInput, pb.ExecOutput),
    }
