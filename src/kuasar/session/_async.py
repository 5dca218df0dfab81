"""The asyncio guest session: probe a guest once, know what it is, and reach it by the best path.

Layer contract: the asyncio driver of ``kuasar.session``; ``kuasar.transport`` (dial),
``kuasar.ttrpc`` (client), ``kuasar.guest`` (our agent API), the generated ``health_pb2`` /
``sandbox_pb2`` and the sans-IO cores beside it (probe, diagnosis, ExecVMProcess). No terminals,
no printing, no exit codes: the CLI and library users drive the paths it opens.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kuasar import transport
from kuasar.address import Address
from kuasar.config import CONSOLE_PORT, DEFAULT_LIMITS, Limits
from kuasar.errors import DeadlineExceeded, KuasarError, RPCError, TransportError
from kuasar.session import _diagnose
from kuasar.session._probe import (
    ExecPath,
    GuestKind,
    GuestProbe,
    GuestTarget,
    RawPayload,
    console_dial,
    exec_paths,
)
from kuasar.session._vm_process import METHOD as VM_METHOD
from kuasar.session._vm_process import SERVICE as VM_SERVICE
from kuasar.session._vm_process import vm_process_request, vm_process_result

if TYPE_CHECKING:
    import asyncio

    from kuasar.guest import Guest
    from kuasar.remote_process import CompletedProcess
    from kuasar.ttrpc import Client

#: ``await on_output(fd, chunk)``: fd 1 for stdout, 2 for stderr.
OutputCallback = Callable[[int, bytes], Awaitable[None]]

#: Budget of each probe step (dial + handshake, then each call).
PROBE_TIMEOUT = DEFAULT_LIMITS.probe_timeout


class Session:
    """One guest, probed once. Use ``async with await Session.open(target) as session``.

    Attributes:
        target: where the guest is.
        kind: what answered on its agent port.
        api_error: why nothing answered there (``kind`` is ``NONE``), else ``None``.
        guest: our agent API client (``kind`` is ``KUASAR_AGENT``), else ``None``.
    """

    def __init__(
        self,
        target: GuestTarget,
        kind: GuestKind,
        *,
        client: Client | None = None,
        api_error: TransportError | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.target = target
        self.kind = kind
        self.api_error = api_error
        self.limits = limits
        self._client = client
        self.guest: Guest | None = None
        if client is not None and kind is GuestKind.KUASAR_AGENT:
            from kuasar.guest import Guest

            self.guest = Guest(client, target.api or target.console, limits=limits)

    @classmethod
    async def open(
        cls, target: GuestTarget, *, probe_timeout: float = PROBE_TIMEOUT, limits: Limits = DEFAULT_LIMITS
    ) -> Session:
        """Probe ``target``'s agent port once (no retry: a guest without one answers at once)."""
        if target.api is None:
            return cls(target, GuestKind.NONE, limits=limits)
        try:
            reader, writer = await transport.dial(
                target.api, limits=limits, connect_timeout=probe_timeout, retry=False
            )
        except TransportError as exc:
            return cls(target, GuestKind.NONE, api_error=exc, limits=limits)
        from kuasar.ttrpc import Client

        client = Client(reader, writer, limits=limits)
        try:
            kind, error = await _identify(client, probe_timeout)
        except BaseException:
            client.close()
            await client.wait_closed()
            raise
        if kind is GuestKind.NONE:
            client.close()
            await client.wait_closed()
            return cls(target, kind, api_error=error, limits=limits)
        return cls(target, kind, client=client, limits=limits)

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the agent connection (the guest ends what ran over it)."""
        if self._client is not None:
            self._client.close()
            await self._client.wait_closed()

    @property
    def client(self) -> Client | None:
        """The ttrpc client of the agent port, whatever the guest kind (``None``: nothing answered
        there). For raw calls (``kuasarctl agent``); the session still owns and closes it."""
        return self._client

    # -- paths -----------------------------------------------------------------------------------

    def paths(self) -> tuple[ExecPath, ...]:
        """The exec paths this guest may offer, best first."""
        return exec_paths(self.kind)

    def require_api(self, why: str) -> Guest:
        """Our agent API, or the error saying why ``why`` cannot be done without it."""
        if self.guest is None:
            raise self._no_api(why)
        return self.guest

    def interactive_needs_console(self) -> KuasarError:
        """The error for ``exec -it`` on a guest whose only path is ExecVMProcess."""
        return _diagnose.interactive_needs_console(self.target.label)

    def _no_api(self, why: str) -> KuasarError:
        return _diagnose.needs_api(self.target.label, self.kind, why)

    async def open_console(
        self, *, connect_timeout: float | None = None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Dial the debug console. Retried within ``connect_timeout`` only while the guest may still
        be booting (nothing answered on its agent port); otherwise one try — vmm-task starts its
        console before its ttrpc server, so once the agent port answers a closed console is final.

        Raises:
            KuasarError: with the diagnosis that fits (see ``kuasar.session._diagnose``).
        """
        budget, retry = console_dial(self.kind, connect_timeout)
        try:
            return await transport.dial(
                self.target.console, limits=self.limits, connect_timeout=budget, retry=retry
            )
        except TransportError as exc:
            raise self.console_error(exc) from exc

    def console_error(self, error: TransportError) -> KuasarError:
        """The diagnosis for a console dial that failed with ``error``."""
        port = getattr(self.target.console, "port", CONSOLE_PORT)
        return _diagnose.console_error(self.target.label, self.kind, self.api_error, error, port)

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - one deadline for whichever path runs it
        env: Mapping[str, str] | None = None,
        cwd: str = "",
        connect_timeout: float | None = None,
        on_output: OutputCallback | None = None,
    ) -> tuple[ExecPath, CompletedProcess]:
        """Run ``argv`` by the best path this guest has and collect (or stream) its output.

        Args:
            argv: program and arguments.
            input: stdin bytes (``None``: ``/dev/null``).
            timeout: seconds for the whole run.
            env: variables to set.
            cwd: working directory.
            connect_timeout: the console dial's budget.
            on_output: ``await on_output(STDOUT or STDERR, chunk)`` as output arrives, instead of
                collecting it (the console path merges stderr into stdout).

        Returns:
            The path used and the outcome.

        Raises:
            DeadlineExceeded: ``timeout`` expired.
            KuasarError: no path reaches the guest (with the diagnosis), or the command could not run.
        """
        import asyncio

        try:
            async with asyncio.timeout(timeout):
                command = _Command(argv, input, env or {}, cwd)
                return await self._run(command, connect_timeout, on_output)
        except TimeoutError as exc:
            if isinstance(exc, KuasarError):
                raise
            raise DeadlineExceeded(f"timed out after {timeout:g} s") from None

    async def _run(
        self, command: _Command, connect_timeout: float | None, on_output: OutputCallback | None
    ) -> tuple[ExecPath, CompletedProcess]:
        from kuasar.remote_process import STDERR, STDOUT, CompletedProcess

        argv, input, env, cwd = command.argv, command.input, command.env, command.cwd
        out: list[bytes] = []
        sink = on_output or _collector(out)
        paths = self.paths()
        for path in paths:
            if path is ExecPath.API and self.guest is not None:
                return path, await self.guest.run(argv, input=input, env=env, cwd=cwd, on_output=on_output)
            if path is ExecPath.CONSOLE:
                try:
                    reader, writer = await self.open_console(connect_timeout=connect_timeout)
                except KuasarError:
                    if ExecPath.VM_PROCESS not in paths:
                        raise
                    continue
                status = await _console_run((reader, writer), command, sink)
                return path, CompletedProcess(_argv(argv), status, stdout=b"".join(out))
            if path is ExecPath.VM_PROCESS:
                result = await self.exec_vm_process(argv, input=input or b"", env=env, cwd=cwd)
                if on_output is not None:
                    await on_output(STDOUT, result.stdout)
                    await on_output(STDERR, result.stderr)
                return path, result
        raise AssertionError("unreachable: every guest has the console path")  # pragma: no cover

    async def exec_vm_process(
        self,
        argv: Sequence[str | bytes],
        *,
        input: bytes = b"",
        timeout: float | None = None,  # noqa: ASYNC109 - also sent as the call's deadline
        env: Mapping[str, str | bytes] | None = None,
        cwd: str | bytes = "",
    ) -> CompletedProcess:
        """Run ``argv`` through a stock vmm-task's ``grpc.SandboxService/ExecVMProcess``.

        Output arrives when the command ends; stdout only when it exits 0 (vmm-task's contract).

        Raises:
            DeadlineExceeded: ``timeout`` expired.
            KuasarError: the guest has no SandboxService, or the call failed otherwise.
        """
        from kuasar.wire import ExecVMProcessRequest, ExecVMProcessResponse

        if self._client is None:
            raise self._no_api("ExecVMProcess")
        command, request = vm_process_request(argv, input=input, env=env, cwd=cwd)
        try:
            reply = await self._client.call(
                VM_SERVICE,
                VM_METHOD,
                ExecVMProcessRequest.decode(request),
                ExecVMProcessResponse,
                timeout=timeout,
            )
        except RPCError as exc:
            return vm_process_result(argv, command, error=exc, timeout=timeout)
        except DeadlineExceeded:
            raise DeadlineExceeded(f"timed out after {timeout:g} s") from None
        return vm_process_result(argv, command, reply=reply.encode())


@dataclass(frozen=True, slots=True)
class _Command:
    argv: Sequence[str]
    input: bytes | None
    env: Mapping[str, str]
    cwd: str


def _collector(out: list[bytes]) -> OutputCallback:
    async def collect(_fd: int, chunk: bytes) -> None:
        out.append(chunk)

    return collect


async def _console_run(
    streams: tuple[asyncio.StreamReader, asyncio.StreamWriter], command: _Command, sink: OutputCallback
) -> int | None:
    from kuasar import console_session
    from kuasar.commandline import command_argv
    from kuasar.console import ConsoleExec, StdinMode
    from kuasar.remote_process import STDOUT

    reader, writer = streams
    input = command.input
    stdin = StdinMode.NONE if input is None else StdinMode.DATA
    core = ConsoleExec(command_argv(list(command.argv)), stdin=stdin, env=command.env, cwd=command.cwd)

    async def output(chunk: bytes) -> None:
        await sink(STDOUT, chunk)

    async def source() -> AsyncIterator[bytes]:
        if input:
            yield input

    try:
        result = await console_session.run(
            reader, writer, core, output, source=source() if input is not None else None
        )
    finally:
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()
    return result.exit_status


def _argv(argv: Sequence[str | bytes]) -> tuple[str, ...]:
    return tuple(arg if isinstance(arg, str) else arg.decode(errors="surrogateescape") for arg in argv)


async def _identify(client: Client, timeout: float) -> tuple[GuestKind, TransportError | None]:  # noqa: ASYNC109
    """Drive :class:`GuestProbe` over ``client``."""
    probe = GuestProbe()
    while (call := probe.next_call()) is not None:
        try:
            reply = await client.call(call.service, call.method, RawPayload(), RawPayload, timeout=timeout)
        except KuasarError as exc:
            probe.receive_error(exc)
            continue
        probe.receive_reply(reply.data)
    assert probe.kind is not None
    return probe.kind, probe.error


async def identify(
    address: Address,
    *,
    timeout: float = PROBE_TIMEOUT,  # noqa: ASYNC109 - the probe's own budget per step
) -> tuple[GuestKind, TransportError | None]:
    """What answers on ``address`` (an agent port), and if nothing does, the transport error."""
    async with await Session.open(GuestTarget.agent_only(address), probe_timeout=timeout) as session:
        return session.kind, session.api_error
