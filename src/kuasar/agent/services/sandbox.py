"""``grpc.SandboxService`` as Kuasar's vmm-task serves it, so Kuasar's vmm-sandboxer can drive us.

Layer contract: agent side; imports ``kuasar.ttrpc``, the generated ``sandbox_pb2`` stubs and the
sibling modules :mod:`~kuasar.agent.services.sandbox_setup` (plans) and
:mod:`~kuasar.agent.services.events` (the event bus); never ``kuasar.ctl`` or ``kuasar.sandbox``.

Methods (facts from kuasar ``vmm/task/src/sandbox_service.rs``):

- ``Check`` → ``Empty``.
- ``SetupSandbox``: ``config`` must be ``Any{type_url "PodSandboxConfig"}`` (anything else, or no
  config, is ``NOT_FOUND "SetUpSandbox/config/<url> is not supported"``) holding serde JSON of the
  CRI ``PodSandboxConfig`` (malformed → ``INVALID_ARGUMENT``); then hostname, DNS (resolv.conf),
  sysctls, ``interfaces`` and ``routes``.
- ``UpdateInterfaces`` / ``UpdateRoutes``: the network part alone.
- ``SyncClock``: pass 1 (``Delta == 0``) fills ``ClientArriveTime`` and ``ServerSendTime`` (ns of
  CLOCK_REALTIME); pass 2 sets the clock to now + ``Delta`` (negative deltas included).
- ``ExecVMProcess``: ``/bin/bash -c <command>`` (or ``/bin/sh``) with optional stdin; ``out`` is
  stdout on exit 0, otherwise the status message is ``cmd <command> failed with exit code N and
  error message <stderr>`` (code ``UNKNOWN``, as ttrpc-rust reports Kuasar's error).
- ``GetEvents``: a long poll for the next ``/tasks/oom`` envelope from the :class:`EventBus`.

Every change to the guest is governed by :class:`SandboxServiceConfig`: by default nothing is changed
and each change is only reported (logged and recorded in :attr:`SandboxServiceState.actions`), which
is right for a local sandbox sharing the host's kernel; :meth:`SandboxServiceConfig.vm_guest` permits
everything, for the agent as PID 1 of a VM.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from google.protobuf import empty_pb2

from kuasar import ttrpc
from kuasar._fdio import wait_fd, write_all
from kuasar._log import get_logger
from kuasar.agent.process import kill_session, kill_subprocess
from kuasar.agent.services import sandbox_setup as setup
from kuasar.agent.services.events import TASK_OOM_TOPIC, EventBus
from kuasar.config import DEFAULT_LIMITS, Limits
from kuasar.errors import RPCError
from kuasar.proto import containerd_events_ttrpc_pb2 as events_pb2
from kuasar.proto import health_pb2, sandbox_pb2
from kuasar.ttrpc.codes import Code

SERVICE = "grpc.SandboxService"
POD_SANDBOX_CONFIG_URL = "PodSandboxConfig"
#: Bytes of the message limit kept free for the response envelope and status around ``out``.
_ENVELOPE_SLACK = 64 * 1024
#: The most stderr quoted in an ExecVMProcess failure message.
_STDERR_QUOTE = 64 * 1024
_READ_CHUNK = 64 * 1024

log = get_logger("kuasar.agent.sandbox")


@dataclass(frozen=True)
class SandboxServiceConfig:
    """What the SandboxService may change in the guest, and its bounds.

    Attributes:
        resolv_conf: where SetupSandbox writes the pod's DNS config; None reports it only. Never the
            host's ``/etc/resolv.conf`` in a local sandbox.
        set_hostname: SetupSandbox may call ``sethostname``.
        apply_sysctls: SetupSandbox may write the pod's ``linux.sysctls`` under ``sysctl_root``.
        configure_network: interfaces and routes are applied with ``ip``.
        set_clock: SyncClock pass 2 may call ``clock_settime``.
        ip_binary: the ``ip`` command (iproute2 or busybox).
        sysctl_root: the root of sysctl files.
        sys_class_net: where links are looked up by hardware address.
        shells: ExecVMProcess runs the first executable one with ``-c``.
        exec_output_limit: the most bytes of ``out``; more is ``RESOURCE_EXHAUSTED``.
        history: how many actions :attr:`SandboxServiceState.actions` keeps.

    Its waits are :class:`kuasar.config.Limits`' (``exec_vm_timeout``, ``exec_vm_linger``,
    ``guest_command_timeout``, ``kill_timeout``), given to :func:`sandbox_handlers`.
    """

    resolv_conf: str | None = None
    set_hostname: bool = False
    apply_sysctls: bool = False
    configure_network: bool = False
    set_clock: bool = False
    ip_binary: str = "ip"
    sysctl_root: str = "/proc/sys"
    sys_class_net: str = "/sys/class/net"
    shells: tuple[str, ...] = ("/bin/bash", "/bin/sh")
    exec_output_limit: int = DEFAULT_LIMITS.max_message - _ENVELOPE_SLACK
    history: int = 256

    def __post_init__(self) -> None:
        if not self.shells:
            raise ValueError("SandboxServiceConfig.shells must name at least one shell")
        if self.exec_output_limit < 1 or self.history < 1:
            raise ValueError("SandboxServiceConfig.exec_output_limit and history must be at least 1")

    @classmethod
    def vm_guest(cls, **overrides: Any) -> SandboxServiceConfig:
        """Everything permitted, resolv.conf at ``/etc/resolv.conf``: the agent as PID 1 of a VM."""
        permitted = cls(
            resolv_conf="/etc/resolv.conf",
            set_hostname=True,
            apply_sysctls=True,
            configure_network=True,
            set_clock=True,
        )
        return replace(permitted, **overrides)


class SandboxServiceState:
    """The service's configuration, its event bus and the record of what it did or would do.

    Args:
        config: the policy; the default changes nothing and reports everything.
        events: the bus GetEvents drains; a new one (namespace ``k8s.io``) by default. Container code
            publishes OOM events with ``state.events.publish_oom(container_id)``.
    """

    def __init__(self, config: SandboxServiceConfig | None = None, events: EventBus | None = None) -> None:
        self.config = config or SandboxServiceConfig()
        self.events = events or EventBus()
        #: The most recent actions, oldest first; ``applied`` tells done from only reported.
        self.actions: deque[setup.Action] = deque(maxlen=self.config.history)

    def record(self, action: setup.Action) -> None:
        self.actions.append(action)
        verb = "applied" if action.applied else "would apply (not permitted)"
        command = f" [{' '.join(action.argv)}]" if action.argv else ""
        log.info("sandbox %s %s: %s%s", verb, action.kind, action.detail, command)


def _os_status(exc: OSError, what: str) -> RPCError:
    code = Code.PERMISSION_DENIED if exc.errno in (errno.EPERM, errno.EACCES, errno.EROFS) else Code.INTERNAL
    return RPCError(code, f"{what}: {exc.strerror or exc}")


class _Service:
    def __init__(self, state: SandboxServiceState, limits: Limits) -> None:
        self.state = state
        self.config = state.config
        self.limits = limits

    # --- setup -------------------------------------------------------------------------------

    async def _apply_local(self, action: setup.Action) -> None:
        config = self.config
        try:
            if action.kind == "hostname" and config.set_hostname:
                setup.set_hostname(action.detail)
            elif action.kind == "resolv.conf" and config.resolv_conf is not None:
                setup.write_file(config.resolv_conf, action.data)
            elif action.kind == "sysctl" and config.apply_sysctls:
                key, _, value = action.detail.partition("=")
                setup.write_file(setup.sysctl_path(key, config.sysctl_root), value)
            else:
                self.state.record(action)
                return
        except OSError as exc:
            raise _os_status(exc, f"{action.kind} {action.detail}") from None
        self.state.record(replace(action, applied=True))

    async def _apply_network(self, actions: Sequence[setup.Action]) -> None:
        for planned in actions:
            action = replace(planned, argv=(self.config.ip_binary, *planned.argv[1:]))
            if not self.config.configure_network:
                self.state.record(action)
                continue
            try:
                await setup.run_commands(
                    [action.argv], self.limits.guest_command_timeout, self.limits.kill_timeout
                )
            except setup.CommandFailed as exc:
                raise RPCError(Code.INTERNAL, f"failed to execute netlink request: {exc}") from None
            self.state.record(replace(action, applied=True))

    def _plan_network(
        self, interfaces: Sequence[sandbox_pb2.Interface], routes: Sequence[sandbox_pb2.Route]
    ) -> list[setup.Action]:
        try:
            links = setup.current_links(self.config.sys_class_net) if interfaces else {}
            plan = setup.interface_actions(interfaces, links, strict=self.config.configure_network)
            return plan + setup.route_actions(routes)
        except ValueError as exc:
            raise RPCError(Code.INVALID_ARGUMENT, str(exc)) from None
        except LookupError as exc:
            raise RPCError(Code.NOT_FOUND, str(exc.args[0] if exc.args else exc)) from None

    async def setup_sandbox(self, request: sandbox_pb2.SetupSandboxRequest, ctx: ttrpc.CallContext) -> object:
        url = request.config.type_url if request.HasField("config") else ""
        if url != POD_SANDBOX_CONFIG_URL:
            raise RPCError(Code.NOT_FOUND, f"SetUpSandbox/config/{url} is not supported")
        try:
            settings = setup.parse_pod_config(request.config.value)
        except ValueError as exc:
            raise RPCError(Code.INVALID_ARGUMENT, f"convert PodSandboxConfig failed: {exc}") from None
        network = self._plan_network(request.interfaces, request.routes)
        log.info("setting up sandbox %s/%s (uid %s)", settings.namespace, settings.name, settings.uid)
        for action in setup.settings_actions(settings, self.config.resolv_conf):
            await self._apply_local(action)
        await self._apply_network(network)
        return empty_pb2.Empty()

    async def update_interfaces(
        self, request: sandbox_pb2.UpdateInterfacesRequest, ctx: ttrpc.CallContext
    ) -> object:
        await self._apply_network(self._plan_network(request.interfaces, []))
        return empty_pb2.Empty()

    async def update_routes(self, request: sandbox_pb2.UpdateRoutesRequest, ctx: ttrpc.CallContext) -> object:
        await self._apply_network(self._plan_network([], request.routes))
        return empty_pb2.Empty()

    # --- vm ----------------------------------------------------------------------------------

    async def check(self, request: health_pb2.CheckRequest, ctx: ttrpc.CallContext) -> object:
        return empty_pb2.Empty()

    async def sync_clock(
        self, request: sandbox_pb2.SyncClockPacket, ctx: ttrpc.CallContext
    ) -> sandbox_pb2.SyncClockPacket:
        response = sandbox_pb2.SyncClockPacket()
        response.CopyFrom(request)
        if request.Delta == 0:
            response.ClientArriveTime = time.clock_gettime_ns(time.CLOCK_REALTIME)
            response.ServerSendTime = time.clock_gettime_ns(time.CLOCK_REALTIME)
            return response
        action = setup.Action("clock", f"{request.Delta:+d} ns")
        if not self.config.set_clock:
            self.state.record(action)
            return response
        target = time.clock_gettime_ns(time.CLOCK_REALTIME) + request.Delta
        if target <= 0:
            raise RPCError(
                Code.INVALID_ARGUMENT, f"SyncClock delta {request.Delta} ns moves the clock before 1970"
            )
        try:
            time.clock_settime_ns(time.CLOCK_REALTIME, target)
        except OSError as exc:
            raise _os_status(exc, "clock_settime") from None
        self.state.record(replace(action, applied=True))
        return response

    async def get_events(self, request: empty_pb2.Empty, ctx: ttrpc.CallContext) -> events_pb2.Envelope:
        # Answer DEADLINE_EXCEEDED a little before the caller's deadline so the status reaches it
        # before its own timer fires; without a deadline (Kuasar sends none) wait until cancelled.
        deadline = ctx.deadline
        if deadline is not None:
            remaining = deadline - asyncio.get_running_loop().time()
            deadline -= min(0.05, max(remaining, 0.0) / 10)
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    envelope = await self.state.events.next()
                    if envelope.topic == TASK_OOM_TOPIC:  # only OOM events, as Kuasar's guest
                        return envelope
                    log.debug("GetEvents: skipping event on topic %s", envelope.topic)
        except TimeoutError:
            raise RPCError(Code.DEADLINE_EXCEEDED, "GetEvents: no event before the deadline") from None

    async def exec_vm_process(
        self, request: sandbox_pb2.ExecVMProcessRequest, ctx: ttrpc.CallContext
    ) -> sandbox_pb2.ExecVMProcessResponse:
        loop = asyncio.get_running_loop()
        deadline = ctx.deadline if ctx.deadline is not None else loop.time() + self.limits.exec_vm_timeout
        out = await _ExecVM(self.config, request, self.limits).run(deadline)
        return sandbox_pb2.ExecVMProcessResponse(out=out)


class _ExecVM:
    """One ExecVMProcess: a shell in its own process group, pipes we own, bounded output."""

    def __init__(
        self, config: SandboxServiceConfig, request: sandbox_pb2.ExecVMProcessRequest, limits: Limits
    ) -> None:
        self.config = config
        self.limits = limits
        self.command = request.command
        self.stdin = request.stdin
        self.pgid = 0
        self.overflow = False

    def _shell(self) -> str:
        for shell in self.config.shells:
            if os.path.isfile(shell) and os.access(shell, os.X_OK):
                return shell
        raise RPCError(
            Code.FAILED_PRECONDITION, f"no shell to run the command: tried {', '.join(self.config.shells)}"
        )

    def _kill_group(self) -> None:
        if self.pgid > 0:
            kill_session(self.pgid)  # the agent's one kill policy: the shell's whole session

    async def _read(self, fd: int, limit: int, on_overflow: Callable[[], None] | None) -> bytes:
        data = bytearray()
        while True:
            try:
                chunk = os.read(fd, _READ_CHUNK)
            except BlockingIOError:
                await wait_fd(fd)
                continue
            if not chunk:
                return bytes(data)
            room = limit - len(data)
            data += chunk[: max(room, 0)]
            if len(chunk) > room and on_overflow is not None:
                on_overflow()
                return bytes(data)

    def _stdout_overflow(self) -> None:
        self.overflow = True
        self._kill_group()

    async def _feed(self, fds: list[int], fd: int) -> None:
        try:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await write_all(fd, self.stdin)
        finally:  # EOF for the command's stdin
            fds.remove(fd)
            os.close(fd)

    async def run(self, deadline: float) -> str:
        """Run the command; return its stdout, or raise the status Kuasar's guest would."""
        shell = self._shell()
        fds: list[int] = []
        tasks: list[asyncio.Task[Any]] = []
        process: asyncio.subprocess.Process | None = None
        try:
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            fds += [out_r, out_w, err_r, err_w]
            in_r = in_w = -1
            if self.stdin:
                in_r, in_w = os.pipe2(os.O_CLOEXEC)
                fds += [in_r, in_w]
            for fd in (out_r, err_r, in_w):
                if fd >= 0:
                    os.set_blocking(fd, False)
            try:
                process = await asyncio.create_subprocess_exec(
                    shell,
                    "-c",
                    self.command,
                    stdin=in_r if in_r >= 0 else asyncio.subprocess.DEVNULL,
                    stdout=out_w,
                    stderr=err_w,
                    start_new_session=True,
                )
            except OSError as exc:
                raise RPCError(Code.INTERNAL, f"spawn failed: {shell}: {exc.strerror or exc}") from None
            self.pgid = process.pid
            for fd in (out_w, err_w, in_r):
                if fd >= 0:
                    fds.remove(fd)
                    os.close(fd)
            loop = asyncio.get_running_loop()
            limit = self.config.exec_output_limit
            reader_out = loop.create_task(self._read(out_r, limit, self._stdout_overflow))
            reader_err = loop.create_task(self._read(err_r, _STDERR_QUOTE, None))
            tasks += [reader_out, reader_err]
            if in_w >= 0:
                tasks.append(loop.create_task(self._feed(fds, in_w)))
            try:
                async with asyncio.timeout_at(deadline):
                    code = await process.wait()
                    linger = self.limits.exec_vm_linger
                    _, pending = await asyncio.wait([reader_out, reader_err], timeout=linger)
                    if pending:  # something it started still holds the pipes: end the group
                        self._kill_group()
                        await asyncio.wait(pending, timeout=linger)
            except TimeoutError:
                raise RPCError(
                    Code.DEADLINE_EXCEEDED, f"cmd {self.command} did not finish before the call's deadline"
                ) from None
            stdout = reader_out.result() if reader_out.done() else b""
            stderr = reader_err.result() if reader_err.done() else b""
            return self._outcome(code, stdout, stderr)
        finally:
            await self._clean_up(tasks, fds, process)

    async def _clean_up(
        self, tasks: list[asyncio.Task[Any]], fds: list[int], process: asyncio.subprocess.Process | None
    ) -> None:
        """Stop the pumps (an outcome of theirs is seen, never raised; our own cancellation is), close
        the fds, and end the shell's session if it still runs (bounded)."""
        try:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
            for task in tasks:
                if not task.cancelled():
                    task.exception()
        finally:
            for fd in fds:
                os.close(fd)
            fds.clear()
            if process is not None and process.returncode is None:
                self._kill_group()
                await kill_subprocess(process, self.limits.kill_timeout)

    def _outcome(self, code: int, stdout: bytes, stderr: bytes) -> str:
        limit = self.config.exec_output_limit
        if self.overflow:
            raise RPCError(
                Code.RESOURCE_EXHAUSTED,
                f"cmd {self.command} wrote more than {limit} bytes to stdout (ExecVMProcess returns"
                " output in one message); redirect it to a file",
            )
        if code < 0:  # killed by a signal: report 128+N as a shell would
            code = 128 - code
        if code != 0:
            text = stderr.decode("utf-8", "replace")
            raise RPCError(
                Code.UNKNOWN, f"cmd {self.command} failed with exit code {code} and error message {text}"
            )
        out = stdout.decode("utf-8", "replace")
        if len(out.encode()) > limit:  # invalid bytes grow to U+FFFD (3 bytes each)
            raise RPCError(
                Code.RESOURCE_EXHAUSTED, f"cmd {self.command} output exceeds {limit} bytes as UTF-8"
            )
        return out


def sandbox_handlers(
    state: SandboxServiceState | None = None, *, limits: Limits = DEFAULT_LIMITS
) -> dict[tuple[str, str], ttrpc.Handler]:
    """Handlers for every ``grpc.SandboxService`` method.

    Args:
        state: configuration, event bus and action record; a report-only default when None (keep
            a reference to it to publish events or read the actions).
        limits: ``exec_vm_timeout`` (an ExecVMProcess call without a deadline), ``exec_vm_linger``,
            ``guest_command_timeout`` (each ``ip`` command) and ``kill_timeout``.
    """
    service = _Service(state or SandboxServiceState(), limits)
    unary = ttrpc.Cardinality.UNARY
    table: list[tuple[str, Callable[..., Awaitable[Any]], Any, Any]] = [
        ("Check", service.check, health_pb2.CheckRequest, empty_pb2.Empty),
        ("SetupSandbox", service.setup_sandbox, sandbox_pb2.SetupSandboxRequest, empty_pb2.Empty),
        ("UpdateInterfaces", service.update_interfaces, sandbox_pb2.UpdateInterfacesRequest, empty_pb2.Empty),
        ("UpdateRoutes", service.update_routes, sandbox_pb2.UpdateRoutesRequest, empty_pb2.Empty),
        ("SyncClock", service.sync_clock, sandbox_pb2.SyncClockPacket, sandbox_pb2.SyncClockPacket),
        (
            "ExecVMProcess",
            service.exec_vm_process,
            sandbox_pb2.ExecVMProcessRequest,
            sandbox_pb2.ExecVMProcessResponse,
        ),
        ("GetEvents", service.get_events, empty_pb2.Empty, events_pb2.Envelope),
    ]
    return {(SERVICE, name): ttrpc.Handler(func, unary, req, resp) for name, func, req, resp in table}
