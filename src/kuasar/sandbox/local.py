"""Sandboxes kuasarctl starts — local ones (the embedded default that needs no VM) and real kernels
under QEMU (``VmOptions``): create, inspect and stop them.

Layer contract: host side, called by ``kuasar.ctl``; synchronous (it runs before or instead of an
event loop) and never prints. It starts ``kuasar.sandbox.supervisor`` as a detached process and
waits for its start-up report (``ready``, or ``error`` with ``hint`` lines); a QEMU sandbox's
guest image is checked and built (:func:`build_image`) before that; stopping signals that process
(checked against its recorded PID and command line, never a stale PID) and removes the sandbox
directory.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kuasar._record import Record
from kuasar._text import printable
from kuasar.config import DEFAULT_LIMITS, Limits
from kuasar.errors import SandboxError, UsageError
from kuasar.procmounts import filesystem_of
from kuasar.sandbox.discovery import SandboxRef
from kuasar.sandbox.state import SandboxState, is_supervisor, read_state
from kuasar.sandbox.supervisor import LOG_FILE, SOCKET_FILE

if TYPE_CHECKING:
    from kuasar.vmm.image import GuestImage

_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
#: ``ROOT/ID/vsock/1024.sock`` must fit in sun_path (107 bytes).
_GUEST_SUFFIX = len("/vsock/1024.sock")
_MAX_SOCKET_PATH = 107
#: The longest start-up report read from a supervisor (an error with a console tail fits).
_REPORT_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class LocalOptions:
    """How to start a local sandbox (``kuasarctl sandbox run`` flags)."""

    debug_console: bool = True
    agent_api: bool = True
    namespaces: bool = True
    shell: str | None = None
    log_level: str = "info"


def new_sandbox_id() -> str:
    """A 64-hex-digit ID, the shape containerd gives real sandboxes."""
    return secrets.token_hex(32)


def validate_id(sandbox_id: str) -> str:
    if not _ID_PATTERN.fullmatch(sandbox_id):
        raise UsageError(
            f"invalid sandbox name {sandbox_id!r}",
            hints=["Use letters, digits, '.', '_' and '-' (at most 128, starting with a letter or digit)."],
        )
    return sandbox_id


def supervisor_command(
    root: str, sandbox_id: str, options: LocalOptions, vm: VmOptions | None = None
) -> list[str]:
    """The supervisor's argv; with ``vm``, QEMU and the guest image are checked (built) first.

    Raises:
        KuasarError: QEMU, busybox-static or the kernel package is missing (with the install hint).
    """
    command = [
        sys.executable,
        "-m",
        "kuasar.sandbox.supervisor",
        "--root",
        root,
        "--id",
        sandbox_id,
        "--log-level",
        options.log_level,
        "--debug-console" if options.debug_console else "--no-debug-console",
        "--agent-api" if options.agent_api else "--no-agent-api",
        "--namespaces" if options.namespaces else "--no-namespaces",
    ]
    if options.shell:
        command += ["--shell", options.shell]
    return command + (_vm_arguments(vm) if vm is not None else [])


def _first_non_directory(path: str) -> str | None:
    """The first existing component of ``path`` that is not a directory, if any."""
    current = "/"
    for part in path.strip("/").split("/"):
        current = os.path.join(current, part)
        if not os.path.lexists(current):
            return None
        if not os.path.isdir(current):
            return current
    return None


def _creation_error(path: str, exc: OSError) -> SandboxError:
    """Why ``path`` (the root or ``ROOT/ID``) could not be created, in the operator's terms."""
    shown = printable(path)
    if isinstance(exc, PermissionError):
        return SandboxError(
            f"cannot create {shown}: permission denied",
            hints=["Run as root, or choose a writable root with -d/--socket-dir."],
        )
    if isinstance(exc, (NotADirectoryError, FileExistsError)):
        blocker = _first_non_directory(path)
        if blocker is not None:
            return SandboxError(
                f"cannot create {shown}: {printable(blocker)} already exists and is not a directory",
                hints=["Point -d/--socket-dir at a directory (it is created if missing)."],
            )
    parent = os.path.dirname(path)
    if isinstance(exc, FileNotFoundError) and os.path.isdir(parent):
        fstype = filesystem_of(parent)
        on = f" (a {fstype} filesystem)" if fstype else ""
        return SandboxError(
            f"cannot create {shown}: {printable(parent)}{on} does not allow new directories",
            hints=["Choose a root on an ordinary filesystem, e.g. -d /tmp/kuasar."],
        )
    return SandboxError(f"cannot create {shown}: {exc.strerror or exc}")


def prepare_directory(root: str, sandbox_id: str) -> str:
    """Create ``ROOT/ID`` (0700); refuse an existing one or a path too long for its sockets.

    Raises:
        UsageError: an empty root, a bad ID, or ``ROOT/ID`` too long for its UNIX sockets.
        SandboxError: the sandbox exists already, or the directory cannot be created (the message
            names the real cause: permission, a file in the way, a filesystem like /proc).
    """
    validate_id(sandbox_id)
    if not root:
        raise UsageError("empty sandbox root", hints=["Pass -d DIR with a directory name."])
    root = os.path.abspath(root)
    directory = os.path.join(root, sandbox_id)
    if len(os.fsencode(directory)) + _GUEST_SUFFIX > _MAX_SOCKET_PATH:
        raise UsageError(
            f"sandbox directory {printable(directory)} is too long for its UNIX sockets "
            f"(at most {_MAX_SOCKET_PATH - _GUEST_SUFFIX} bytes)",
            hints=["Use a shorter -d/--socket-dir or --name."],
        )
    if os.path.lexists(root) and not os.path.isdir(root):
        raise SandboxError(
            f"{printable(root)} already exists and is not a directory",
            hints=["Point -d/--socket-dir at a directory (it is created if missing)."],
        )
    try:
        os.makedirs(root, mode=0o755, exist_ok=True)
    except OSError as exc:
        raise _creation_error(exc.filename or root, exc) from None
    try:
        os.mkdir(directory, mode=0o700)
    except FileExistsError:
        raise SandboxError(
            f"sandbox {sandbox_id} already exists in {printable(root)}",
            hints=[f"Stop it first: kuasarctl sandbox stop -d {printable(root)} {sandbox_id}"],
        ) from None
    except OSError as exc:
        raise _creation_error(directory, exc) from None
    return directory


def _log_tail(directory: str, lines: int = 5) -> list[str]:
    try:
        with open(os.path.join(directory, LOG_FILE), encoding="utf-8", errors="replace") as file:
            return [f"  {printable(line.rstrip())}" for line in file.readlines()[-lines:]]
    except OSError:
        return []


def _read_report(read_fd: int, timeout: float, pids: list[int]) -> tuple[str, list[str]]:
    """The supervisor's start-up report: its PID (``pid N``, appended to ``pids`` as it comes, so an
    interrupted caller knows it too), then ``ready``, or ``error MESSAGE`` followed by ``hint TEXT``
    lines until it closes the pipe."""
    deadline = time.monotonic() + timeout
    data = b""
    report: str | None = None
    hints: list[str] = []
    while len(data) < _REPORT_LIMIT:
        while b"\n" in data:
            line, data = data.split(b"\n", 1)
            text = line.decode(errors="replace").strip()
            if report is None and text.startswith("pid ") and text[4:].isdecimal():
                pids.append(int(text[4:]))
            elif report is None:
                report = text
                if text == "ready":
                    return report, hints
            elif text.startswith("hint "):
                hints.append(printable(text[5:]))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return report or "error the sandbox did not report ready in time", hints
        ready, _, _ = select.select([read_fd], [], [], remaining)
        if ready:
            chunk = os.read(read_fd, 4096)
            if not chunk:
                break
            data += chunk
    return report or "error the sandbox supervisor exited during start-up", hints


class VmOptions(Record):
    """How to boot a QEMU sandbox (``kuasarctl sandbox run --vmm qemu`` flags)."""

    memory_mib: int = 512
    cpus: int = 1
    accel: str = "auto"
    boot_timeout: float = DEFAULT_LIMITS.vm_boot_timeout


def build_image() -> GuestImage:
    """QEMU is installed and the guest image is built (cached: rebuilt only when an input changed).

    Raises:
        KuasarError: QEMU, busybox-static or the kernel package is missing (with the install hint).
    """
    from kuasar.vmm import image, qemu

    qemu.qemu_binary()
    return image.build()


def _vm_arguments(vm: VmOptions) -> list[str]:
    """The supervisor's QEMU flags; QEMU and the guest image are checked (built on first use) here,
    so a missing package is one clear error before anything starts."""
    guest = build_image()
    return [
        *("--vmm", "qemu", "--kernel", str(guest.kernel), "--initrd", str(guest.initrd)),
        *("--kernel-release", guest.release, "--memory", str(vm.memory_mib), "--cpus", str(vm.cpus)),
        *("--accel", vm.accel, "--boot-timeout", f"{vm.boot_timeout:g}"),
    ]


def start_sandbox(
    root: str,
    sandbox_id: str,
    options: LocalOptions,
    limits: Limits = DEFAULT_LIMITS,
    vm: VmOptions | None = None,
) -> str:
    """Start a detached sandbox — a local one, or a QEMU guest when ``vm`` is given — and wait until
    its agent is serving (at most ``limits.sandbox_start_timeout``, or the VM's boot timeout).

    Returns:
        The sandbox directory.

    Raises:
        SandboxError: it could not be created or did not start (hints carry the log's last lines,
            or the guest console's).
    """
    timeout = limits.sandbox_start_timeout + (vm.boot_timeout + 2 * limits.kvm_probe_timeout if vm else 0)
    command = [*supervisor_command(os.path.abspath(root), sandbox_id, options, vm), "--daemonize"]
    directory = prepare_directory(root, sandbox_id)
    read_fd, write_fd = os.pipe()
    pids: list[int] = []
    try:
        with open(os.path.join(directory, LOG_FILE), "ab") as log_file:
            # The supervisor double-forks: this child exits at once and the daemon is re-parented.
            subprocess.run(
                [*command, "--ready-fd", str(write_fd)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                pass_fds=(write_fd,),
                start_new_session=True,
                check=False,
                timeout=limits.sandbox_start_timeout,
            )
        os.close(write_fd)
        write_fd = -1
        report, hints = _read_report(read_fd, timeout, pids)
    except subprocess.TimeoutExpired:
        report, hints = "error the sandbox supervisor did not start", []
    except KeyboardInterrupt:  # Ctrl-C while it boots: no half-made sandbox is left behind
        _kill_supervisors(pids)
        shutil.rmtree(directory, ignore_errors=True)
        raise
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
    if report == "ready":
        return directory
    _kill_supervisors(pids)
    hints = hints or _log_tail(directory)
    shutil.rmtree(directory, ignore_errors=True)
    kind = "QEMU" if vm is not None else "local"
    raise SandboxError(
        f"{kind} sandbox {sandbox_id} failed to start: {report.removeprefix('error ')}", hints=hints
    )


def log_path(ref: SandboxRef, *, supervisor: bool = False) -> str:
    """The sandbox's own log: a QEMU guest's serial console (``supervisor``: its sandbox.log), a
    local sandbox's sandbox.log.

    Raises:
        SandboxError: ``ref`` has no such log (not started by kuasarctl).
    """
    state = read_state(ref.directory)
    if state is None:
        raise SandboxError(
            f"{ref.id} was not started by kuasarctl (no sandbox.json in {printable(ref.directory)})",
            hints=["Kuasar VM sandboxes log through containerd and their VMM's own files."],
        )
    if state.kind == "qemu" and not supervisor:
        from kuasar.vmm.qemu import CONSOLE_LOG

        return os.path.join(ref.directory, CONSOLE_LOG)
    return os.path.join(ref.directory, LOG_FILE)


def _kill_supervisors(pids: list[int]) -> None:
    """Kill the process group of each PID that is still a supervisor (never a stale PID)."""
    for pid in pids:
        if is_supervisor(pid):
            _kill_group(pid)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def supervisor_alive(state: SandboxState | None) -> bool:
    """True when ``state`` names a supervisor that still runs."""
    return state is not None and is_supervisor(state.supervisor_pid)


def stop_sandbox(ref: SandboxRef, timeout: float | None = None, limits: Limits = DEFAULT_LIMITS) -> bool:
    """Stop a local sandbox (or clean up a crashed one) and remove its directory.

    The supervisor gets ``timeout`` seconds (``None``: ``limits.sandbox_stop_timeout``) after
    SIGTERM, then its process group is SIGKILLed.

    Returns:
        True when a running supervisor was stopped, False when only leftovers were removed.

    Raises:
        SandboxError: ``ref`` is not a local sandbox (e.g. a Kuasar VM under /run/kuasar-vmm).
    """
    state = read_state(ref.directory)
    if state is None and os.path.basename(ref.socket) != SOCKET_FILE:
        raise SandboxError(
            f"{ref.id} is not a local sandbox (no sandbox.json in {ref.directory})",
            hints=["Stop Kuasar VM sandboxes through containerd (crictl stopp / rmp)."],
        )
    was_running = supervisor_alive(state)
    if state is not None and was_running:
        if timeout is None:  # a VM's supervisor first gives its guest the power-off grace
            timeout = limits.sandbox_stop_timeout + (limits.vm_poweroff_grace if state.kind == "qemu" else 0)
        if not _ended_after_sigterm(state.supervisor_pid, timeout) and is_supervisor(state.supervisor_pid):
            _kill_group(state.supervisor_pid)
    shutil.rmtree(ref.directory, ignore_errors=True)
    return was_running


def _ended_after_sigterm(pid: int, timeout: float) -> bool:
    """SIGTERM the supervisor ``pid`` and wait up to ``timeout`` for its process to end.

    It is not our child, so it is watched through a pidfd, which becomes readable once the process
    has exited (its command line goes blank a moment earlier, while its mm is released, so
    :func:`is_supervisor` alone could report it gone before it is); without pidfds, the command line
    is polled.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError:  # no pidfd_open (a kernel before 5.3)
        pidfd = None
    try:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if pidfd is not None:
            return bool(select.select([pidfd], [], [], timeout)[0])
        deadline = time.monotonic() + timeout
        while is_supervisor(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        return not is_supervisor(pid)
    finally:
        if pidfd is not None:
            os.close(pidfd)
