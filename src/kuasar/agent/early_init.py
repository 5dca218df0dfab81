"""PID 1 of a VM: the first duties (mounts, environment, sysctls) and the last (power-off).

Layer contract: agent side; stdlib, libc through ctypes (``mount(2)``, ``reboot(2)``) and
:mod:`kuasar.agent.procfs`. The plans are pure data (:data:`MOUNTS`, :data:`LINKS`,
:data:`SETTINGS`) and the decisions pure functions (:func:`pending_mounts`,
:func:`vm_environment`, :func:`shutdown_step`), unit-tested without a kernel; the syscalls live in
thin functions (:func:`_mount`, :func:`reboot`) that only :func:`run` and :func:`power_off` call.
Nothing here prints: everything is logged (stderr is the VM's serial console).

What Kuasar's vmm-task does first as PID 1, and so do we when ``os.getpid() == 1`` and the agent
was not started with ``--isolate`` (a local sandbox makes its own namespaces and needs none of this):

- ``PATH=/bin:/sbin:/usr/bin:/usr/sbin`` (plus the directory of our own Python, last, so the
  venv's scripts still resolve) and ``XDG_RUNTIME_DIR=/run``;
- proc, sysfs, devtmpfs, tmpfs on ``/dev/shm``, a new devpts instance on ``/dev/pts``
  (``ptmxmode=0666``; ``/dev/ptmx`` is linked to ``pts/ptmx`` when devtmpfs has none), tmpfs on
  ``/run``, and cgroups. A filesystem of the same type already on a mountpoint is kept (the image's
  ``/init`` may have moved its ``/dev`` over), EBUSY counts as "already mounted", a missing
  mountpoint is created when the filesystem under it lets us, and any other failure is one log
  line: only ``/proc`` is fatal (without it nothing else works: not ``/proc/cmdline``, not the
  orphan reaper);
- vmm-task's settings where their files exist (``vm.overcommit_memory=1``,
  ``net.ipv4.vs.expire_nodest_conn=1``, cgroup v1's ``memory.use_hierarchy=1``); a missing file
  is skipped.

Cgroups: one cgroup2 (unified) mount on ``/sys/fs/cgroup``, not vmm-task's v1 hierarchies (one
per line of ``/proc/cgroups``). Linux 6.1 has every controller runc needs in v2 (cpuset, freezer
via ``cgroup.freeze``, devices through eBPF); Debian 12's runc 1.1 detects the unified mode by the
filesystem's magic and enables controllers in each parent's ``cgroup.subtree_control`` itself;
the agent's OOM watcher (``services/events.py``) reads v2 ``memory.events``; and a controller
bound to a v1 hierarchy is lost to v2, so mounting both (hybrid) would only take controllers away.

The last duty (:func:`power_off`), after the agent stopped serving on SIGINT (ctrl-alt-delete,
once :func:`run` has called ``reboot(CAD_OFF)``) or SIGTERM, or after a fatal error: SIGTERM to
every other process (``kill(-1)``), a bounded grace while reaping, SIGKILL to what is left,
``sync()``, ``reboot(POWER_OFF)``. PID 1 must never exit (the kernel panics), so if even that
fails, :func:`power_off` idles reaping children forever.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import errno
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import NoReturn

from kuasar.agent.procfs import processes
from kuasar.procmounts import read_mounts

log = logging.getLogger("kuasar.agent.init")

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
_SAFE = MS_NOSUID | MS_NODEV | MS_NOEXEC

LINUX_REBOOT_CMD_CAD_OFF = 0x00000000
LINUX_REBOOT_CMD_POWER_OFF = 0x4321FEDC
PF_KTHREAD = 0x00200000

SYSTEM_PATH = "/bin:/sbin:/usr/bin:/usr/sbin"
RUNTIME_DIR = "/run"
#: After SIGTERM to everyone, how long the others get to exit before SIGKILL.
TERM_GRACE = 3.0
#: After SIGKILL, how long to wait for the last ones (stuck in the kernel) before powering off.
KILL_WAIT = 2.0
_POLL = 0.05


@dataclass(frozen=True, slots=True)
class Mount:
    """One mount of the early-init plan.

    Attributes:
        source, target, fstype, flags, data: the arguments of ``mount(2)``.
        reuse: a mount of ``fstype`` already on ``target`` is kept (False: always a new one).
        required: a failure is fatal (raises :class:`EarlyInitError`).
    """

    source: str
    target: str
    fstype: str
    flags: int = 0
    data: str = ""
    reuse: bool = True
    required: bool = False


#: In order: each target lies on a filesystem mounted before it.
MOUNTS: tuple[Mount, ...] = (
    Mount("proc", "/proc", "proc", _SAFE, required=True),
    Mount("sysfs", "/sys", "sysfs", _SAFE),
    Mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755"),
    Mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"),
    # A fresh instance always: its ptmx must be 0666 for unprivileged PTYs; gid 5 is Debian's tty.
    Mount(
        "devpts",
        "/dev/pts",
        "devpts",
        MS_NOSUID | MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620,gid=5",
        reuse=False,
    ),
    Mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755"),
    Mount("cgroup2", "/sys/fs/cgroup", "cgroup2", _SAFE),
)

#: Symbolic links created when their path does not exist: (path, target).
LINKS: tuple[tuple[str, str], ...] = (
    ("/dev/ptmx", "pts/ptmx"),
    ("/dev/fd", "/proc/self/fd"),
    ("/dev/stdin", "/proc/self/fd/0"),
    ("/dev/stdout", "/proc/self/fd/1"),
    ("/dev/stderr", "/proc/self/fd/2"),
)

#: vmm-task's settings: (file, value), written only where the file exists.
SETTINGS: tuple[tuple[str, str], ...] = (
    ("/proc/sys/vm/overcommit_memory", "1"),
    ("/proc/sys/net/ipv4/vs/expire_nodest_conn", "1"),
    ("/sys/fs/cgroup/memory/memory.use_hierarchy", "1"),
)


class EarlyInitError(OSError):
    """A required step of early init failed (``/proc`` could not be mounted)."""


def is_vm_init(pid: int, *, isolate: bool) -> bool:
    """True when the agent has PID 1's duties: PID 1, and not a local sandbox's ``--isolate``."""
    return pid == 1 and not isolate


def vm_environment(own_bin: str) -> dict[str, str]:
    """The variables early init sets: vmm-task's ``PATH`` (replacing the kernel's; ``own_bin``, the
    directory of our Python, appended unless already in it) and ``XDG_RUNTIME_DIR``."""
    parts = SYSTEM_PATH.split(":")
    if own_bin and own_bin not in parts:
        parts.append(own_bin)
    return {"PATH": ":".join(parts), "XDG_RUNTIME_DIR": RUNTIME_DIR}


def pending_mounts(plan: Iterable[Mount], mounted: Mapping[str, str]) -> list[Mount]:
    """The mounts of ``plan`` still to do, given what is mounted (:func:`kuasar.procmounts.parse_mounts`)."""
    return [m for m in plan if not (m.reuse and mounted.get(m.target) == m.fstype)]


class Step(enum.Enum):
    """What the power-off sequence does next (:func:`shutdown_step`)."""

    WAIT = "wait"
    SIGKILL = "sigkill"
    POWER_OFF = "power-off"


def shutdown_step(
    remaining: int, elapsed: float, *, killed: bool, grace: float = TERM_GRACE, kill_wait: float = KILL_WAIT
) -> Step:
    """After SIGTERM to everyone ``elapsed`` seconds ago, with ``remaining`` other processes alive:
    power off once none are left; SIGKILL them once ``grace`` is over (``killed`` says whether
    that was done); power off anyway ``kill_wait`` seconds after the grace."""
    if remaining == 0:
        return Step.POWER_OFF
    if not killed:
        return Step.SIGKILL if elapsed >= grace else Step.WAIT
    return Step.POWER_OFF if elapsed >= grace + kill_wait else Step.WAIT


# -- the syscalls ---------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.reboot.argtypes = [ctypes.c_int]


def _mount(mount: Mount) -> None:
    """``mount(2)``; raises ``OSError`` with the call's errno."""
    data = mount.data.encode() if mount.data else None
    result = _libc.mount(
        mount.source.encode(), mount.target.encode(), mount.fstype.encode(), mount.flags, data
    )
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), mount.target)


def reboot(command: int) -> None:
    """``reboot(2)`` (glibc adds the magic numbers); raises ``OSError`` with its errno. POWER_OFF
    does not return when it works (in a child PID namespace it kills the namespace's init)."""
    if _libc.reboot(command) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _do_mount(mount: Mount) -> bool:
    """Mount, creating a missing mountpoint; True when mounted now, False when it was already there
    (EBUSY: the same filesystem is on that mountpoint).

    Raises:
        OSError: the mount failed (``EarlyInitError`` for a required one).
    """
    try:
        try:
            _mount(mount)
        except FileNotFoundError:
            os.makedirs(mount.target, mode=0o755, exist_ok=True)
            _mount(mount)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            return False
        if mount.required:
            what = f"cannot mount {mount.fstype} on {mount.target}: {exc.strerror}"
            raise EarlyInitError(exc.errno, what) from exc
        raise
    return True


def _link(path: str, target: str) -> None:
    if os.path.lexists(path):
        return
    try:
        os.symlink(target, path)
    except OSError as exc:
        log.warning("cannot link %s to %s: %s", path, target, exc.strerror)


def _write_setting(path: str, value: str) -> None:
    try:
        with open(path, "w", encoding="ascii") as file:
            file.write(value)
    except FileNotFoundError:
        log.debug("no %s: skipped", path)
    except OSError as exc:
        log.warning("cannot set %s to %s: %s", path, value, exc.strerror)


def run(own_bin: str) -> None:
    """Early init: environment, mounts, links, settings, and ctrl-alt-delete as SIGINT.

    Args:
        own_bin: the directory of the Python running the agent (kept on ``PATH``).

    Raises:
        EarlyInitError: ``/proc`` cannot be mounted.
    """
    os.environ.update(vm_environment(own_bin))
    done: list[str] = []
    kept: list[str] = []
    for mount in MOUNTS:
        # /proc first (the others are checked against its mount table), then one read per mount:
        # a mount may land on a mountpoint that an earlier one just made.
        if not pending_mounts([mount], read_mounts()):
            kept.append(mount.target)
            continue
        try:
            (done if _do_mount(mount) else kept).append(mount.target)
        except EarlyInitError:
            raise
        except OSError as exc:
            log.warning("cannot mount %s on %s: %s", mount.fstype, mount.target, exc.strerror)
    for path, target in LINKS:
        _link(path, target)
    for path, value in SETTINGS:
        _write_setting(path, value)
    try:
        reboot(LINUX_REBOOT_CMD_CAD_OFF)  # ctrl-alt-delete now sends us SIGINT
    except OSError as exc:  # EINVAL in a child PID namespace, where CAD is not ours to take
        log.info("ctrl-alt-delete stays the kernel's: reboot(CAD_OFF): %s", exc.strerror)
    log.info("early init done: mounted %s; already there: %s", " ".join(done) or "-", " ".join(kept) or "-")


# -- the last duty --------------------------------------------------------------------------------


def other_processes(me: int) -> set[int]:
    """Live user processes other than ``me`` (kernel threads and zombies do not count)."""
    return {
        proc.pid
        for proc in processes()
        if proc.pid != me and proc.state != "Z" and not proc.flags & PF_KTHREAD
    }


def _signal_all(signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # ESRCH: nobody else is left
        os.kill(-1, signum)


def _reap_all() -> int:
    """Reap every child that has exited; returns how many."""
    count = 0
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return count
        if pid == 0:
            return count
        count += 1


def terminate_all(
    *, grace: float = TERM_GRACE, kill_wait: float = KILL_WAIT, clock: Callable[[], float] = time.monotonic
) -> int:
    """SIGTERM every other process, reap while waiting up to ``grace``, SIGKILL the rest, wait up
    to ``kill_wait`` more. Returns how many were still alive at the end (0 normally)."""
    start = clock()
    _signal_all(signal.SIGTERM)
    killed = False
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    while True:
        _reap_all()
        try:
            remaining = other_processes(os.getpid())
        except OSError:  # no /proc: assume someone is left, so the grace and SIGKILL still apply
            remaining = {-1}
        step = shutdown_step(len(remaining), clock() - start, killed=killed, grace=grace, kill_wait=kill_wait)
        if step is Step.POWER_OFF:
            if remaining:
                log.warning("%d processes still alive after SIGKILL: %s", len(remaining), sorted(remaining))
            return len(remaining)
        if step is Step.SIGKILL:
            log.info("SIGKILL to %d processes still alive %g s after SIGTERM", len(remaining), grace)
            _signal_all(signal.SIGKILL)
            killed = True
            continue
        signal.sigtimedwait({signal.SIGCHLD}, _POLL)  # a child's exit, or the next look


def power_off() -> NoReturn:
    """The end of PID 1 in a VM: terminate everyone, ``sync()``, ``reboot(POWER_OFF)``. Never
    returns: should the reboot fail, it logs why and reaps children forever."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)  # a second ctrl-alt-delete must not interrupt this
    try:
        terminate_all()
    except Exception:  # whatever went wrong, the machine still goes down
        log.exception("terminating processes failed")
    os.sync()
    log.info("powering off")
    try:
        reboot(LINUX_REBOOT_CMD_POWER_OFF)
    except OSError as exc:
        log.critical("reboot(POWER_OFF) failed: %s; idling as PID 1", exc.strerror)
    while True:  # PID 1 must not exit
        try:
            os.wait()
        except ChildProcessError:
            signal.sigtimedwait({signal.SIGCHLD}, 60.0)
        except InterruptedError:
            continue
