"""The local sandbox's VMM stand-in: one long-running process per local sandbox.

Layer contract: host side, an entry point of its own (``python -m kuasar.sandbox.supervisor``; its
``asyncio.run`` is here). It plays Cloud Hypervisor's part: it serves the sandbox's hybrid vsock socket
(``task.socket``) with ``kuasar.transport.hvsock_server`` and forwards ``CONNECT <port>`` to the
guest-side listener ``vsock/<port>.sock``, behind which runs the guest, a ``kuasar-agent`` process —
as root in its own PID, mount, UTS and IPC namespaces where it is PID 1. Like a VMM whose guest agent
died, the supervisor keeps serving (every CONNECT is then closed without a reply) until it is told to
stop. It never prints; it reports start-up success or failure as one line on ``--ready-fd``.

Directory layout (``ROOT/ID``, mode 0700)::

    task.socket      hybrid vsock socket (0600)
    vsock/1024.sock  agent API listener (guest side)
    vsock/1025.sock  debug console listener (guest side)
    sandbox.json     state (``kuasar.sandbox.state``): PIDs, created, options, the agent's exit
    sandbox.log      supervisor and agent logs
    home/            HOME of the guest's shells and commands (0700, empty at start): the host
                     user's ``~/.bashrc`` and profile are not the guest's
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

from kuasar._subprocess import exit_within, terminate
from kuasar._text import printable
from kuasar.config import AGENT_PORT, CONSOLE_PORT, DEFAULT_LIMITS, Limits
from kuasar.errors import KuasarError, SandboxError
from kuasar.sandbox.state import STATE_FILE, SandboxState, exit_text, read_state, write_state
from kuasar.transport.hvsock_server import HvsockServer, port_directory_resolver

LOG_FILE = "sandbox.log"
SOCKET_FILE = "task.socket"
GUEST_DIR = "vsock"
HOME_DIR = "home"
#: The longest start-up report line read from the agent.
_READY_LINE_LIMIT = 1024

log = logging.getLogger("kuasar.sandbox.supervisor")

# The state record lives in kuasar.sandbox.state; its names stay importable from here for older callers.
__all__ = ["STATE_FILE", "SandboxState", "main", "read_state", "supervise", "write_state"]


def _use_namespaces(args: argparse.Namespace) -> bool:
    return bool(args.namespaces) and os.geteuid() == 0 and os.path.exists("/proc/self/ns/pid")


def _agent_command(directory: str, sandbox_id: str, args: argparse.Namespace, ready_fd: int) -> list[str]:
    guest = os.path.join(directory, GUEST_DIR)
    command = [
        sys.executable,
        "-m",
        "kuasar.agent.main",
        "--console",
        f"unix://{guest}/{CONSOLE_PORT}.sock",
        "--api",
        f"unix://{guest}/{AGENT_PORT}.sock",
        "--debug-console" if args.debug_console else "--no-debug-console",
        "--hostname",
        sandbox_id[:64],
        "--cmdline",
        os.devnull,
        "--ready-fd",
        str(ready_fd),
        "--state-dir",
        os.path.join(directory, "agent"),
        "--home",
        os.path.join(directory, HOME_DIR),
        "--exit-with-parent",
        str(os.getpid()),
        "--log-level",
        args.log_level,
    ]
    if not args.agent_api:
        command.append("--no-agent-api")
    if _use_namespaces(args):
        command.append("--isolate")
    if args.shell:
        command += ["--debug-shell", args.shell]
    return command


async def wait_agent_ready(
    read_fd: int, process: asyncio.subprocess.Process, limits: Limits = DEFAULT_LIMITS
) -> None:
    """Wait for the agent's ``ready`` line on ``read_fd`` (closed here).

    Every wait is bounded: the line by ``limits.agent_ready_timeout``; after anything else (EOF, a
    wrong or oversize line) the agent gets ``limits.agent_stop_grace`` to exit, so the error can
    say how it ended; the caller then stops it.

    Raises:
        SandboxError: the agent stayed silent, exited, or reported something else than ``ready``.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_READY_LINE_LIMIT)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
    )
    try:
        async with asyncio.timeout(limits.agent_ready_timeout):
            line = await reader.readline()
    except TimeoutError:
        raise SandboxError(
            f"the agent did not become ready within {limits.agent_ready_timeout:g} s"
        ) from None
    except ValueError:  # no newline within the limit
        line = b"a line over %d bytes" % _READY_LINE_LIMIT
    finally:
        transport.close()
    if line.strip() == b"ready":
        return
    code = await exit_within(process, limits.agent_stop_grace)
    if code is not None:
        raise SandboxError(f"the agent exited during start-up (exit status {code})")
    said = printable(line.decode("utf-8", "replace").strip()) if line else "nothing"
    raise SandboxError(f"the agent reported {said!r} instead of ready")


async def _start_agent(
    directory: str, sandbox_id: str, args: argparse.Namespace, log_file: int, limits: Limits
) -> asyncio.subprocess.Process:
    os.makedirs(os.path.join(directory, GUEST_DIR), mode=0o700, exist_ok=True)
    home = os.path.join(directory, HOME_DIR)
    os.makedirs(home, mode=0o700, exist_ok=True)
    os.chmod(home, 0o700)
    read_fd, write_fd = os.pipe()
    try:
        process = await asyncio.create_subprocess_exec(
            *_agent_command(directory, sandbox_id, args, write_fd),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            pass_fds=(write_fd,),
            start_new_session=True,
        )
    finally:
        os.close(write_fd)
    try:
        await wait_agent_ready(read_fd, process, limits)
    except BaseException:
        await _stop_agent(process, limits)
        raise
    return process


async def _stop_agent(process: asyncio.subprocess.Process, limits: Limits) -> None:
    """SIGTERM, ``limits.agent_stop_grace`` to exit, then SIGKILL and ``limits.kill_timeout``."""
    if not await terminate(process, limits.agent_stop_grace, limits.kill_timeout):
        log.error("the agent (pid %d) did not exit %g s after SIGKILL", process.pid, limits.kill_timeout)


def _record_agent_exit(directory: str, state: SandboxState, returncode: int) -> None:
    """Log the agent's death and record it in ``sandbox.json`` (``kuasarctl ps`` shows why)."""
    status, signal_number = (None, -returncode) if returncode < 0 else (returncode, None)
    died = replace(state, agent_exit_status=status, agent_exit_signal=signal_number, agent_exited=time.time())
    log.error("sandbox %s: %s", state.id, exit_text(status, signal_number, state.kind))
    try:
        write_state(directory, died)
    except OSError as exc:
        log.error("sandbox %s: cannot record the agent's exit: %s", state.id, exc)


def _report(ready_fd: int | None, line: str) -> None:
    if ready_fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(ready_fd, line.encode() + b"\n")
        os.close(ready_fd)


class _LocalGuest:
    """The local sandbox's guest: our hybrid vsock server in front of a ``kuasar-agent`` process."""

    def __init__(self, directory: str, args: argparse.Namespace, log_fd: int, limits: Limits) -> None:
        self.directory, self.args, self.log_fd, self.limits = directory, args, log_fd, limits
        self.hvsock = HvsockServer(
            os.path.join(directory, SOCKET_FILE),
            port_directory_resolver(os.path.join(directory, GUEST_DIR)),
            limits=limits,
        )
        self.agent: asyncio.subprocess.Process | None = None

    async def start(self) -> SandboxState:
        await self.hvsock.start()
        self.agent = await _start_agent(self.directory, self.args.id, self.args, self.log_fd, self.limits)
        return sandbox_record(self.args, self.agent.pid, namespaces=_use_namespaces(self.args))

    async def wait(self) -> int:
        assert self.agent is not None
        return await self.agent.wait()

    async def stop(self) -> None:
        if self.agent is not None:
            await _stop_agent(self.agent, self.limits)
        self.hvsock.close()
        await self.hvsock.wait_closed()


class _Guest(Protocol):
    async def start(self) -> SandboxState: ...
    async def wait(self) -> int: ...
    async def stop(self) -> None: ...


def _guest(directory: str, args: argparse.Namespace, log_fd: int, limits: Limits) -> _Guest:
    if args.vmm == "qemu":
        from kuasar.sandbox.vm_supervisor import VmGuest

        return VmGuest(directory, args, log_fd, limits)
    return _LocalGuest(directory, args, log_fd, limits)


def sandbox_record(
    args: argparse.Namespace, guest_pid: int, *, namespaces: bool = False, **fields: Any
) -> SandboxState:
    """This supervisor's state record: its flags (``--vmm`` is the kind), its PID, now, and the
    guest's host process."""
    return SandboxState(
        id=args.id,
        kind=args.vmm,
        supervisor_pid=os.getpid(),
        agent_pid=guest_pid,
        created=time.time(),
        debug_console=args.debug_console,
        agent_api=args.agent_api,
        namespaces=namespaces,
        **fields,
    )


def _starting(args: argparse.Namespace) -> SandboxState:
    """The record written before the guest is up: it names this process for ``sandbox stop``."""
    return sandbox_record(args, 0, starting=True)


async def _start_unless_stopped(guest: _Guest, stop_wait: asyncio.Future[Any]) -> SandboxState:
    """``guest.start()``, abandoned (cancelled: it cleans up after itself) when the supervisor is told
    to stop first — a VM's boot takes long enough for a ``sandbox stop`` to come in between."""
    start = asyncio.ensure_future(guest.start())
    await asyncio.wait({start, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    if not start.done():
        start.cancel()
        with contextlib.suppress(asyncio.CancelledError, KuasarError, OSError):
            await start
        raise SandboxError("stopped during start-up")
    return start.result()


async def supervise(args: argparse.Namespace, limits: Limits = DEFAULT_LIMITS) -> int:
    """Run one sandbox until SIGTERM/SIGINT; returns the exit status.

    ``limits`` bounds the hybrid vsock server and every wait for the guest.
    """
    directory = os.path.join(args.root, args.id)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, stop.set)
    log_fd = os.open(os.path.join(directory, LOG_FILE), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    guest = _guest(directory, args, log_fd, limits)
    stop_wait = asyncio.ensure_future(stop.wait())
    try:
        write_state(directory, _starting(args))
        state = await _start_unless_stopped(guest, stop_wait)
        write_state(directory, state)
        _report(args.ready_fd, "ready")
        guest_exit = asyncio.ensure_future(guest.wait())
        await asyncio.wait({guest_exit, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if guest_exit.done():
            _record_agent_exit(directory, state, guest_exit.result())
            await stop_wait  # a VMM keeps running when its guest agent dies; wait to be stopped
        else:
            guest_exit.cancel()
        return 0
    except (KuasarError, OSError) as exc:
        log.error("sandbox %s: %s", args.id, exc)
        hints = [line.replace("\n", " ") for line in getattr(exc, "hints", ())]
        for hint in hints:
            log.error("sandbox %s:   %s", args.id, hint)
        _report(args.ready_fd, "\n".join([f"error {exc}".replace("\n", " "), *(f"hint {h}" for h in hints)]))
        return 1
    finally:
        stop_wait.cancel()
        await guest.stop()
        os.close(log_fd)
        if stop.is_set() or args.remove_on_exit:
            shutil.rmtree(directory, ignore_errors=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kuasar-sandbox-supervisor", description=__doc__)
    parser.add_argument("--root", required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--ready-fd", type=int)
    parser.add_argument("--debug-console", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--agent-api", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--namespaces", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--shell")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--remove-on-exit", action="store_true")
    parser.add_argument("--daemonize", action="store_true", help="detach (double fork) before starting")
    parser.add_argument("--vmm", choices=("local", "qemu"), default="local", help="the guest's kind")
    vm = parser.add_argument_group("--vmm qemu")
    vm.add_argument("--kernel", help="guest kernel (kuasar.vmm.image)")
    vm.add_argument("--initrd", help="guest initramfs")
    vm.add_argument("--kernel-release", default="", help="the kernel's release (KVM verdict cache key)")
    vm.add_argument("--memory", type=int, default=512, help="guest RAM in MiB")
    vm.add_argument("--cpus", type=int, default=1)
    vm.add_argument("--accel", choices=("auto", "tcg", "kvm"), default="auto")
    vm.add_argument("--boot-timeout", type=float, default=DEFAULT_LIMITS.vm_boot_timeout)
    return parser.parse_args(argv)


def _daemonize(ready_fd: int | None) -> None:
    """Fork: the parent exits at once (so whoever started us reaps it), the child leads a new session
    and reports its PID first on ``ready_fd``."""
    if os.fork() != 0:
        os._exit(0)
    os.setsid()
    if ready_fd is not None:
        os.write(ready_fd, f"pid {os.getpid()}\n".encode())


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.daemonize:
        _daemonize(args.ready_fd)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        format="%(asctime)s supervisor %(levelname)s %(message)s",
    )
    return asyncio.run(supervise(args))


if __name__ == "__main__":
    sys.exit(main())
