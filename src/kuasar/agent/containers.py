"""Containers on real ``runc``, from OCI bundles in the guest.

Layer contract: guest side, below the ttrpc handlers (:mod:`kuasar.agent.services.containers`).
Knows runc's command line, processes, pipes and PTYs; never ttrpc framing or protobuf. Failures
are ``kuasar.errors.RPCError`` with the status the API returns (the agent is the remote side).

Lifecycle, each step one ``runc --root ROOT`` call (``ROOT`` is the agent's own, default
:data:`DEFAULT_RUNC_ROOT`, so it never sees containers of another runtime):

- create: ``runc create --bundle B --pid-file P ID`` with stdout/stderr on pipes the agent reads
  into the log store (or, when ``process.terminal`` is set in ``config.json``, with
  ``--console-socket`` and the PTY master read as stdout). runc exits after create; the container
  init is then the agent's child because the agent is a child subreaper (``prctl``), so the agent
  reaps it and keeps its exit status apart from its signal.
- start: ``runc start ID``.
- stop: ``runc kill ID SIG``, wait up to the grace period, then ``runc kill ID KILL``. Stopping a
  container that has already stopped is ``FAILED_PRECONDITION`` (not idempotent: the caller learns
  that nothing was stopped).
- remove: ``runc delete [--force] ID``; a live container without ``force`` is ``FAILED_PRECONDITION``.
  The container's logs go with it.
- list: status from ``runc state`` for live containers (``created``, ``running``, ``paused``),
  ``stopped`` once the agent has reaped the init.

The agent process must not reap children it does not own with ``waitpid(-1)``: that would steal
the containers' exit statuses (see :meth:`ContainerManager.owns_pid`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal as signals
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kuasar.agent._runc import (
    create_command,
    create_with_console,
    create_with_pipes,
    exec_command,
    read_bundle,
    read_pid,
    resolve_user,
    runc_message,
    set_child_subreaper,
    start_exec,
)
from kuasar.agent.logs import ContainerLog, LogStore
from kuasar.agent.process import ExitStatus, Process, kill_subprocess, shown
from kuasar.config import DEFAULT_LIMITS, Limits
from kuasar.errors import RPCError
from kuasar.ttrpc.codes import Code

DEFAULT_RUNC_ROOT = "/run/kuasar-agent/runc"
DEFAULT_STATE_DIR = "/run/kuasar-agent/containers"
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """A snapshot of one container (times are unix ns; 0 = not yet)."""

    id: str
    bundle: str
    status: str
    pid: int
    created_at: int
    started_at: int
    finished_at: int
    exit: ExitStatus | None
    labels: Mapping[str, str]


@dataclass(eq=False)
class _Container:
    id: str
    bundle: str
    rootfs: str
    labels: dict[str, str]
    state_dir: str
    log: ContainerLog
    pid: int = 0
    pidfd: int = -1
    created_at: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit: ExitStatus | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    output_fds: list[int] = field(default_factory=list)
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    finisher: asyncio.Task[None] | None = None


class ContainerManager:
    """Every container this agent runs.

    Args:
        logs: where container output goes.
        runc: the runc binary (name or path).
        root: runc's state root (``runc --root``), the agent's own.
        state_dir: per-container scratch files (pid file, console socket, runc log).
        subreaper: make this process a child subreaper so container inits are reaped here.
        limits: runc's, the output drain's, SIGKILL's and a default stop's bounds (passed on).
    """

    def __init__(
        self,
        logs: LogStore,
        *,
        runc: str = "runc",
        root: str = DEFAULT_RUNC_ROOT,
        state_dir: str = DEFAULT_STATE_DIR,
        subreaper: bool = True,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.logs = logs
        self.limits = limits
        self.runc = runc
        self.root = root
        self.state_dir = state_dir
        self._containers: dict[str, _Container] = {}
        self._lock = asyncio.Lock()
        if subreaper:
            set_child_subreaper()

    # -- runc ------------------------------------------------------------------------------------

    def _runc_path(self) -> str:
        path = shutil.which(self.runc)
        if path is None:
            raise RPCError(Code.FAILED_PRECONDITION, f"runc not found ({self.runc!r} is not on PATH)")
        return path

    async def _run(self, *args: str) -> tuple[int, bytes, bytes]:
        process = await asyncio.create_subprocess_exec(
            self._runc_path(),
            "--root",
            self.root,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        limit = self.limits.runc_timeout
        try:
            async with asyncio.timeout(limit):
                out, err = await process.communicate()
        except TimeoutError:
            raise RPCError(Code.DEADLINE_EXCEEDED, f"runc {args[0]} did not finish in {limit:g} s") from None
        finally:
            await kill_subprocess(process, self.limits.kill_timeout)
        assert process.returncode is not None
        return process.returncode, out, err

    async def _check(self, *args: str) -> bytes:
        code, out, err = await self._run(*args)
        if code != 0:
            raise RPCError(Code.INTERNAL, f"runc {args[0]} failed: {runc_message(err)}")
        return out

    async def _runc_status(self, container_id: str) -> str:
        code, out, _ = await self._run("state", container_id)
        if code != 0:
            return "unknown"
        try:
            return str(json.loads(out)["status"])
        except (ValueError, KeyError, TypeError):
            return "unknown"

    # -- lookup ----------------------------------------------------------------------------------

    def _get(self, container_id: str) -> _Container:
        container = self._containers.get(container_id)
        if container is None:
            raise RPCError(Code.NOT_FOUND, f"no such container: {container_id!r}")
        return container

    def owns_pid(self, pid: int) -> bool:
        """True when ``pid`` is a container init this manager reaps itself."""
        return any(c.pid == pid and not c.exited.is_set() for c in self._containers.values())

    def rootfs(self, container_id: str) -> str:
        """The directory that is ``/`` for the container (its mount namespace view while it runs).

        Raises:
            RPCError: ``NOT_FOUND`` for an unknown container.
        """
        container = self._get(container_id)
        if container.pid and not container.exited.is_set():
            return f"/proc/{container.pid}/root"
        return container.rootfs

    async def info(self, container_id: str) -> ContainerInfo:
        container = self._get(container_id)
        status = "stopped" if container.exited.is_set() else await self._runc_status(container.id)
        if status == "stopped" and not container.exited.is_set():
            status = "running"  # runc saw it die before we reaped it: a moment from now
        return ContainerInfo(
            id=container.id,
            bundle=container.bundle,
            status=status,
            pid=container.pid,
            created_at=container.created_at,
            started_at=container.started_at,
            finished_at=container.finished_at,
            exit=container.exit,
            labels=dict(container.labels),
        )

    async def list_containers(self, include_stopped: bool = False) -> list[ContainerInfo]:
        """Containers sorted by creation time; stopped ones only with ``include_stopped``."""
        ordered = sorted(self._containers.values(), key=lambda c: (c.created_at, c.id))
        infos = await asyncio.gather(*(self.info(c.id) for c in ordered))
        return [info for info in infos if include_stopped or info.status != "stopped"]

    # -- create ----------------------------------------------------------------------------------

    async def create(
        self, container_id: str, bundle: str, labels: Mapping[str, str] | None = None
    ) -> ContainerInfo:
        """Create a container from an OCI bundle (``runc create``); it is not started.

        Raises:
            RPCError: ``INVALID_ARGUMENT`` (bad ID or bundle, or runc refused it),
                ``ALREADY_EXISTS``, ``FAILED_PRECONDITION`` (no runc).
        """
        if not _ID_PATTERN.fullmatch(container_id):
            raise RPCError(
                Code.INVALID_ARGUMENT,
                f"invalid container id {container_id!r} (letters, digits, '.', '_', '-'; at most 128)",
            )
        async with self._lock:
            if container_id in self._containers:
                raise RPCError(Code.ALREADY_EXISTS, f"container {container_id!r} already exists")
            rootfs, terminal = read_bundle(bundle)
            self._runc_path()
            state = os.path.join(self.state_dir, container_id)
            shutil.rmtree(state, ignore_errors=True)
            os.makedirs(state, mode=0o700)
            os.makedirs(self.root, mode=0o700, exist_ok=True)
            container = _Container(
                container_id, bundle, rootfs, dict(labels or {}), state, self.logs.open(container_id)
            )
            try:
                command = create_command(self._runc_path(), self.root, state, bundle, container_id)
                if terminal:
                    container.output_fds.append(
                        await create_with_console(command, self.state_dir, self.limits)
                    )
                else:
                    await create_with_pipes(command, container.output_fds, self.limits)
                container.pid = read_pid(os.path.join(state, "init.pid"))
                container.pidfd = os.pidfd_open(container.pid)
            except BaseException:
                for fd in container.output_fds:
                    os.close(fd)
                container.output_fds.clear()
                with contextlib.suppress(RPCError):
                    await self._run("delete", "--force", container_id)
                self.logs.remove(container_id)
                shutil.rmtree(state, ignore_errors=True)
                raise
            container.created_at = time.time_ns()
            self._containers[container_id] = container
            self._watch(container)
        return await self.info(container_id)

    # -- output and exit -------------------------------------------------------------------------

    def _watch(self, container: _Container) -> None:
        loop = asyncio.get_running_loop()
        streams = ["stdout", "stderr"]
        open_fds = set(container.output_fds)

        def on_output(fd: int, stream: str) -> None:
            try:
                data = os.read(fd, 64 * 1024)
            except BlockingIOError:
                return
            except OSError:  # EIO: the PTY's last slave closed
                data = b""
            if data:
                container.log.write(stream, data)
                return
            loop.remove_reader(fd)
            os.close(fd)
            open_fds.discard(fd)
            container.output_fds.remove(fd)
            if not open_fds:
                container.drained.set()

        for fd, stream in zip(container.output_fds, streams, strict=False):
            os.set_blocking(fd, False)
            loop.add_reader(fd, on_output, fd, stream)
        if not open_fds:
            container.drained.set()

        def on_exit() -> None:
            loop.remove_reader(container.pidfd)
            try:
                reaped, status = os.waitpid(container.pid, os.WNOHANG)
            except ChildProcessError:  # not our child: we are neither parent nor subreaper
                reaped, status = 0, 0
            container.exit = ExitStatus.from_wait_status(status) if reaped else None
            container.finished_at = time.time_ns()
            container.exited.set()
            container.finisher = asyncio.ensure_future(self._finish_output(container))

        loop.add_reader(container.pidfd, on_exit)

    async def _finish_output(self, container: _Container) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.limits.output_drain):
                await container.drained.wait()
        self._close_output(container)
        container.log.close()

    def _close_output(self, container: _Container) -> None:
        loop = asyncio.get_running_loop()
        for fd in container.output_fds:
            loop.remove_reader(fd)
            os.close(fd)
        container.output_fds.clear()
        container.drained.set()

    # -- start, stop, remove ---------------------------------------------------------------------

    async def start(self, container_id: str) -> ContainerInfo:
        """Start a created container's process (``runc start``).

        Raises:
            RPCError: ``NOT_FOUND``; ``FAILED_PRECONDITION`` when it is not in ``created`` state.
        """
        container = self._get(container_id)
        status = "stopped" if container.exited.is_set() else await self._runc_status(container_id)
        if status != "created":
            raise RPCError(
                Code.FAILED_PRECONDITION, f"container {container_id!r} cannot start: it is {status}"
            )
        container.started_at = time.time_ns()  # before: a short-lived process may exit during the call
        code, _, err = await self._run("start", container_id)
        if code != 0:
            container.started_at = 0
            raise RPCError(Code.FAILED_PRECONDITION, f"runc start failed: {runc_message(err)}")
        return await self.info(container_id)

    async def stop(self, container_id: str, signal: int = 0, grace: float | None = None) -> ContainerInfo:
        """Send ``signal`` (0 = SIGTERM), wait up to ``grace`` s (``None``:
        ``limits.container_stop_grace``), then SIGKILL.

        Raises:
            RPCError: ``NOT_FOUND``; ``FAILED_PRECONDITION`` when it has already stopped;
                ``INVALID_ARGUMENT`` for a bad signal number.
        """
        container = self._get(container_id)
        if container.exited.is_set():
            raise RPCError(Code.FAILED_PRECONDITION, f"container {container_id!r} is not running (stopped)")
        number = signal or signals.SIGTERM
        if not 0 < number < signals.NSIG:
            raise RPCError(Code.INVALID_ARGUMENT, f"bad signal number {signal}")
        await self._kill(container, number)
        try:
            async with asyncio.timeout(self.limits.container_stop_grace if grace is None else grace):
                await container.exited.wait()
        except TimeoutError:
            await self._kill(container, signals.SIGKILL)
            await self._wait_exit(container)
        return await self.info(container_id)

    async def _kill(self, container: _Container, number: int) -> None:
        code, _, err = await self._run("kill", container.id, str(int(number)))
        if code != 0 and not container.exited.is_set():
            status = await self._runc_status(container.id)
            if status not in ("stopped", "unknown"):
                raise RPCError(Code.INTERNAL, f"runc kill failed: {runc_message(err)}")

    async def _wait_exit(self, container: _Container) -> None:
        try:
            async with asyncio.timeout(self.limits.kill_timeout):
                await container.exited.wait()
        except TimeoutError:
            raise RPCError(
                Code.INTERNAL,
                f"container {container.id!r} did not exit {self.limits.kill_timeout:g} s after SIGKILL",
            ) from None

    async def remove(self, container_id: str, force: bool = False) -> None:
        """Delete a container and its logs (``runc delete``).

        Raises:
            RPCError: ``NOT_FOUND``; ``FAILED_PRECONDITION`` when it is not stopped and not ``force``.
        """
        container = self._get(container_id)
        if not container.exited.is_set():
            if not force:
                raise RPCError(
                    Code.FAILED_PRECONDITION,
                    f"container {container_id!r} is not stopped: stop it first, or remove with force",
                )
            await self._run("delete", "--force", container_id)
            await self._wait_exit(container)
        else:
            code, _, err = await self._run("delete", container_id)
            if code != 0 and await self._runc_status(container_id) != "unknown":
                raise RPCError(Code.INTERNAL, f"runc delete failed: {runc_message(err)}")
        await self._forget(container)

    async def _forget(self, container: _Container) -> None:
        if container.finisher is not None:
            await container.finisher
        self._close_output(container)
        if container.pidfd >= 0:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_reader(container.pidfd)
            os.close(container.pidfd)
            container.pidfd = -1
        self._containers.pop(container.id, None)
        self.logs.remove(container.id)
        shutil.rmtree(container.state_dir, ignore_errors=True)

    async def close(self) -> None:
        """Kill and delete every container (agent shutdown)."""
        for container in list(self._containers.values()):
            with contextlib.suppress(RPCError):
                await self.remove(container.id, force=True)
            if container.id in self._containers:
                await self._forget(container)

    # -- exec ------------------------------------------------------------------------------------

    def exec_argv(  # noqa: PLR0917 - tests and helpers call it positionally
        self,
        container_id: str,
        argv: Sequence[str],
        tty: bool = False,
        cwd: str = "",
        env: Mapping[str, str] | None = None,
        user: str = "",
        *,
        pid_file: str = "",
        log_file: str = "",
    ) -> list[str]:
        """The ``runc exec`` command line that runs ``argv`` inside a running container.

        runc stays in the foreground: its exit status is the process's, signals sent to it are
        forwarded, and with ``tty`` it expects its own stdio to be a terminal.

        Raises:
            RPCError: ``NOT_FOUND``; ``FAILED_PRECONDITION`` when the container has stopped;
                ``INVALID_ARGUMENT`` for an empty argv or a user the container does not know.
        """
        container = self._get(container_id)
        if container.exited.is_set():
            raise RPCError(Code.FAILED_PRECONDITION, f"container {container_id!r} is not running")
        if not argv:
            raise RPCError(Code.INVALID_ARGUMENT, "empty command")
        ids = resolve_user(self.rootfs(container_id), user)
        runc = self._runc_path()
        return exec_command(runc, self.root, container_id, argv, tty, cwd, env or {}, ids, pid_file, log_file)

    async def start_exec(
        self,
        container_id: str,
        argv: Sequence[str],
        *,
        tty: bool = False,
        rows: int = 0,
        cols: int = 0,
        stdin: bool = False,
        cwd: str = "",
        env: Mapping[str, str] | None = None,
        user: str = "",
    ) -> Process:
        """Run ``argv`` in a running container (``runc exec``); return once the command runs.

        Raises:
            RPCError: ``NOT_FOUND`` (the container has no such command), ``PERMISSION_DENIED`` (it
                cannot execute it), ``FAILED_PRECONDITION`` (unknown or stopped container),
                ``INVALID_ARGUMENT`` (bad user or cwd).
        """
        container = self._containers.get(container_id)
        if container is None:  # NOT_FOUND would mean "command not found" to Exec
            raise RPCError(Code.FAILED_PRECONDITION, f"no such container: {container_id!r}")
        files = os.path.join(container.state_dir, f"exec-{secrets.token_hex(6)}")
        pid_file, log_file = files + ".pid", files + ".log"
        command = self.exec_argv(
            container_id, argv, tty, cwd, env, user, pid_file=pid_file, log_file=log_file
        )
        return await start_exec(
            command,
            pid_file,
            log_file,
            shown(argv[0]),
            container_id,
            tty=tty,
            rows=rows,
            cols=cols,
            stdin=stdin,
            limits=self.limits,
        )


__all__ = ["ContainerInfo", "ContainerManager", "ExitStatus"]
